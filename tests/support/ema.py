"""Enterprise-Managed Authorization test helpers: a throwaway IdP signing key, ID-JAGs minted
with it, and RFC 9449 DPoP proofs."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import parse_qsl, urlencode

import httpx2
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from bastion.config.upstream_auth import EmaUpstreamAuth
from bastion.core.credentials import IdJag, IdJagRequest
from bastion.vault.ema import EmaUpstreamCredentials
from tests.support.recording import read_request
from tests.support.tls import serve_asgi

IDP = "https://idp.example.test"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def public_jwk(key: ec.EllipticCurvePrivateKey) -> dict[str, Any]:
    return dict(json.loads(ECAlgorithm.to_jwk(key.public_key())))


def jwks(key: ec.EllipticCurvePrivateKey, kid: str = "idp-1") -> dict[str, Any]:
    return {"keys": [{**public_jwk(key), "kid": kid, "alg": "ES256", "use": "sig"}]}


def trusted_issuer(key: ec.EllipticCurvePrivateKey, issuer: str = IDP) -> dict[str, Any]:
    return {"issuer": issuer, "jwks": jwks(key), "algorithms": ["ES256"]}


def thumbprint(key: ec.EllipticCurvePrivateKey) -> str:
    """RFC 7638 thumbprint of an EC public key (required members, lexicographic, no spaces)."""
    jwk = public_jwk(key)
    canonical = json.dumps({k: jwk[k] for k in ("crv", "kty", "x", "y")}, separators=(",", ":"))
    digest = hashlib.sha256(canonical.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def id_jag(
    key: ec.EllipticCurvePrivateKey,
    *,
    aud: str,
    resource: str | None,
    client_id: str = "agent",
    issuer: str = IDP,
    **claims: Any,
) -> str:
    now = int(time.time())
    body: dict[str, Any] = {
        "iss": issuer,
        "sub": "user-42",
        "aud": aud,
        "client_id": client_id,
        "jti": secrets.token_urlsafe(12),
        "iat": now,
        "exp": now + 300,
        "resource": resource,
        "scope": "mcp",
        "email": "carol@example.test",
        **claims,
    }
    body = {k: v for k, v in body.items() if v is not None}
    return jwt.encode(body, key, algorithm="ES256", headers={"typ": "oauth-id-jag+jwt", "kid": "idp-1"})


def dpop_proof(
    key: ec.EllipticCurvePrivateKey,
    *,
    htu: str,
    htm: str = "POST",
    jwk: dict[str, Any] | None = None,
    jti: str | None = None,
) -> str:
    claims = {"jti": jti or secrets.token_urlsafe(16), "htm": htm, "htu": htu, "iat": int(time.time())}
    header = {"typ": "dpop+jwt", "jwk": jwk if jwk is not None else public_jwk(key)}
    return jwt.encode(claims, key, algorithm="ES256", headers=header)


async def redeem(
    base: str, assertion: str, *, client: str, secret: str, dpop: str | None = None, **form: str
) -> httpx2.Response:
    headers = {"DPoP": dpop} if dpop is not None else {}
    async with httpx2.AsyncClient(timeout=30) as http:
        return await http.post(
            f"{base}/token",
            data={"grant_type": JWT_BEARER, "assertion": assertion, **form},
            auth=(client, secret),
            headers=headers,
        )


# -- Role 2: Bastion's ID-JAG bridge (RFC 8693 token exchange) --------------------------------

TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ID_JAG_TYPE = "urn:ietf:params:oauth:token-type:id-jag"
REFRESH_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:refresh_token"
ID_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:id_token"


async def exchange(
    base: str,
    subject_token: str | None,
    *,
    client: str,
    secret: str | None,
    audience: str | None,
    subject_token_type: str | None = REFRESH_TOKEN_TYPE,
    requested_token_type: str | None = ID_JAG_TYPE,
    dpop: str | None = None,
    extra: list[tuple[str, str]] | None = None,
    **form: str,
) -> httpx2.Response:
    """A token exchange for an ID-JAG at ``base``/token; None leaves a parameter out, ``extra``
    adds (possibly repeated) parameters. ``secret`` None: a public client (client_id only)."""
    fields: list[tuple[str, str]] = [("grant_type", TOKEN_EXCHANGE)]
    for name, value in (
        ("requested_token_type", requested_token_type),
        ("audience", audience),
        ("subject_token", subject_token),
        ("subject_token_type", subject_token_type),
        *form.items(),
    ):
        if value is not None:
            fields.append((name, value))
    fields += extra or []
    if secret is None:
        fields.append(("client_id", client))
    headers = {"content-type": "application/x-www-form-urlencoded"}
    if dpop is not None:
        headers["DPoP"] = dpop
    async with httpx2.AsyncClient(timeout=30) as http:
        return await http.post(
            f"{base}/token",
            content=urlencode(fields),
            auth=(client, secret) if secret is not None else None,
            headers=headers,
        )


# -- Role 3: Bastion as the EMA client towards an upstream -------------------------------------


class MintingIdJagSource:
    """An ``IdJagSource`` played by the throwaway test IdP: mints ID-JAGs with ``key`` for what
    it is asked, and keeps every request and assertion. ``fail`` makes it refuse; a user with an
    unset ``gates`` event waits until it is set."""

    def __init__(self, key: ec.EllipticCurvePrivateKey) -> None:
        self.key = key
        self.requests: list[IdJagRequest] = []
        self.assertions: list[str] = []
        self.fail: Exception | None = None
        self.gates: dict[str, asyncio.Event] = {}

    async def id_jag(self, request: IdJagRequest) -> IdJag:
        self.requests.append(request)
        if self.fail is not None:
            raise self.fail
        gate = self.gates.get(request.user_id)
        if gate is not None:
            await gate.wait()
        await asyncio.sleep(0.01)  # an IdP round trip: lets concurrent callers pile up
        assertion = id_jag(
            self.key,
            aud=request.audience,
            resource=request.resource,
            client_id=request.client_id,
            sub=request.user_id,
            email=f"{request.user_id}@example.test",
            scope=" ".join(request.scopes) or None,
        )
        self.assertions.append(assertion)
        return IdJag(assertion=assertion, expires_at=time.time() + 300, scopes=request.scopes or None)


class FakeAuthorizationServer:
    """The far side only: an authorization server (RFC 8414 metadata + token endpoint) that
    answers with ``token_response`` whatever it is sent (``{name}`` in it: the form's ``name``
    parameter), and keeps each token request's form and Authorization header. For answers a
    correct server (Bastion) never gives."""

    def __init__(self) -> None:
        self.base = ""
        self.metadata_extra: dict[str, Any] = {}
        self.prm: dict[str, Any] | None = None  # served for the resource <base>/mcp, when set
        self.token_response: tuple[int, Any] = (200, {})
        self.forms: list[dict[str, str]] = []
        self.authorizations: list[str | None] = []

    def reset(self) -> None:
        self.metadata_extra, self.prm, self.token_response = {}, None, (200, {})
        self.forms.clear()
        self.authorizations.clear()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        headers, body = await read_request(scope, receive)
        status: int
        answer: Any
        if scope["path"] == "/.well-known/oauth-authorization-server":
            status, answer = 200, {"issuer": self.base, "token_endpoint": f"{self.base}/token"}
            answer |= self.metadata_extra
        elif scope["path"] == "/.well-known/oauth-protected-resource/mcp" and self.prm is not None:
            status, answer = 200, self.prm
        elif scope["path"] == "/token" and scope["method"] == "POST":
            self.forms.append(dict(parse_qsl(body.decode())))
            self.authorizations.append(headers.get("authorization"))
            status, answer = self.token_response
        else:
            status, answer = 404, {"error": "not_found"}
        raw = answer if isinstance(answer, bytes) else json.dumps(answer).encode()
        for name, value in (self.forms[-1] if scope["path"] == "/token" else {}).items():
            raw = raw.replace(b"{%s}" % name.encode(), value.encode())  # echoes what it was sent
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": raw})


class EmaClient:
    """An ``EmaUpstreamCredentials`` under test, its IdJagSource and every HTTP request it sent."""

    def __init__(
        self, creds: EmaUpstreamCredentials, idp: MintingIdJagSource, sent: list[httpx2.Request]
    ) -> None:
        self.creds, self.idp, self.sent = creds, idp, sent

    def paths(self, method: str = "GET") -> list[str]:
        return [r.url.path for r in self.sent if r.method == method]


@contextlib.asynccontextmanager
async def ema_client(
    url: str, auth: EmaUpstreamAuth, idp: MintingIdJagSource, **kwargs: Any
) -> AsyncIterator[EmaClient]:
    """``EmaUpstreamCredentials`` for upstream ``a`` at ``url``, on an HTTP client that keeps
    the requests it sends."""
    sent: list[httpx2.Request] = []

    async def record(request: httpx2.Request) -> None:
        sent.append(request)

    http = httpx2.AsyncClient(timeout=10, follow_redirects=False, event_hooks={"request": [record]})
    creds = EmaUpstreamCredentials("a", url, auth, idp, http, **kwargs)
    try:
        yield EmaClient(creds, idp, sent)
    finally:
        await creds.aclose()
        await http.aclose()


def private_key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@contextlib.contextmanager
def fake_authorization_server() -> Iterator[FakeAuthorizationServer]:
    server = FakeAuthorizationServer()
    with serve_asgi(server) as port:
        server.base = f"http://127.0.0.1:{port}"
        yield server
