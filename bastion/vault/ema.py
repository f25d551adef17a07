"""Bastion as an Enterprise-Managed Authorization client towards one upstream MCP server whose
authorization server accepts ID-JAGs (MCP EMA §4.2 steps 2-4; requirements digest §4.5).

For each user, and only when a call reaches the upstream:

1. where to get a token: :class:`~bastion.vault.discovery.Discovery` (PRM, then AS metadata);
2. an ID-JAG for the user from the configured :class:`~bastion.core.credentials.IdJagSource`
   (the enterprise IdP, or Bastion's own bridge), addressed to that server's issuer, for the
   upstream's resource identifier and scopes;
3. the ID-JAG is redeemed at the token endpoint (RFC 7523 §2.1 jwt-bearer grant, with Bastion's
   client authentication there: ``client_secret_basic`` with the RFC 6749 §2.3.1 encoding,
   ``client_secret_post``, or an RFC 7523 §2.2 ``private_key_jwt`` assertion);
4. the Bearer token is cached per user until ``refresh_margin`` seconds before it expires; a
   refresh token, if one comes, is ignored (EMA: the server SHOULD NOT issue one; a new ID-JAG
   is cheaper than keeping it). Concurrent calls of one user share one ID-JAG and one token
   request; different users never wait for each other.

A call without a signed-in user (an unauthenticated principal, or a ``client_credentials``
client acting for itself) gets no token. Every failure is
:class:`~bastion.core.errors.UpstreamCredentialsUnavailable` with a message for the user and a
``detail`` for the log; neither ever holds a token, an ID-JAG or a secret.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import httpx2
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from bastion.config.upstream_auth import EmaUpstreamAuth
from bastion.core.credentials import IdJag, IdJagRequest, IdJagSource, IdJagUnavailable
from bastion.core.errors import ConnectionRequired, UpstreamCredentialsUnavailable
from bastion.core.records import Principal, UpstreamCredential
from bastion.vault.discovery import (
    JWT_BEARER,
    Discovery,
    ResponseTooLarge,
    UpstreamAuthorization,
    json_object,
    read_capped,
)

log = logging.getLogger("bastion.vault")

CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
CLIENT_ASSERTION_TTL_S = 60
DEFAULT_EXPIRES_IN = 300  # when the token response has no expires_in
MAX_TOKEN_RESPONSE_BYTES = 64 * 1024
NO_USER = "this upstream acts for a signed-in user; a client acting for itself has no user here"
SWEEP_AT = 1024  # cached tokens: expired ones are dropped when the cache reaches this size
_ERROR_CODE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_ACCESS_TOKEN = re.compile(r"[\x21-\x7e]{1,16384}")  # visible ASCII: it goes into a header
_UNPRINTABLE = re.compile(r"[^\x20-\x7e]")
_JWT_LIKE = re.compile(r"[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*")


@dataclass(frozen=True, slots=True)
class _Token:
    credential: UpstreamCredential = field(repr=False)
    expires_at: float


class EmaUpstreamCredentials:
    """The vault's :class:`~bastion.vault.stage.CredentialSource` for an ``auth: {type: ema}``
    upstream."""

    def __init__(
        self,
        upstream: str,
        url: str,
        auth: EmaUpstreamAuth,
        source: IdJagSource,
        http: httpx2.AsyncClient | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._upstream = upstream
        self._auth = auth
        self._source = source
        self._own_http = http is None
        self._http = http or httpx2.AsyncClient(timeout=10, follow_redirects=False)
        self._clock = clock
        self._discovery = Discovery(upstream, url, auth, self._http, clock=clock)
        self._tokens: dict[str, _Token] = {}
        self._pending: dict[str, asyncio.Task[_Token]] = {}
        self._sweep_at = SWEEP_AT

    async def credential(self, principal: Principal) -> UpstreamCredential:
        user = self._user(principal)
        cached = self._tokens.get(user)
        if cached is not None and self._clock() < cached.expires_at - self._auth.refresh_margin:
            return cached.credential
        task = self._pending.get(user)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._obtain(user))
            self._pending[user] = task
            task.add_done_callback(lambda done: self._settled(user, done))
        # shielded: a caller that gives up does not cancel the request the others wait for
        return (await asyncio.shield(task)).credential

    async def more_scopes(self, principal: Principal, scopes: tuple[str, ...]) -> ConnectionRequired | None:
        return None  # the authorization server decides the scopes of an ID-JAG redemption

    def forget(self, principal: Principal) -> None:
        """The upstream refused the token (401): the next call gets a new one."""
        self._tokens.pop(principal.subject, None)

    async def aclose(self) -> None:
        for task in list(self._pending.values()):
            task.cancel()
        self._pending.clear()
        self._tokens.clear()
        if self._own_http:
            await self._http.aclose()

    # -- the steps ---------------------------------------------------------------------------

    def _user(self, principal: Principal) -> str:
        if not principal.authenticated or principal.subject == principal.client_id:
            raise UpstreamCredentialsUnavailable(
                self._upstream, NO_USER, detail=f"principal {principal.subject!r} is not a user"
            )
        return principal.subject

    def _settled(self, user: str, task: asyncio.Task[_Token]) -> None:
        if self._pending.get(user) is task:
            del self._pending[user]
        if not task.cancelled():
            task.exception()  # retrieved: a failure nobody waits for any more is not reported twice

    async def _obtain(self, user: str) -> _Token:
        target = await self._discovery.authorization()
        jag = await self._id_jag(user, target)
        asked_at = self._clock()  # the lifetime counts from the request: the cache errs early
        token, expires_in = await self._redeem(target, jag)
        cached = _Token(
            UpstreamCredential(
                headers=(("authorization", f"Bearer {token}"),), mode="ema", process_scope=user
            ),
            asked_at + expires_in,
        )
        self._remember(user, cached)
        return cached

    def _remember(self, user: str, token: _Token) -> None:
        self._tokens[user] = token
        if len(self._tokens) >= self._sweep_at:
            now = self._clock()
            for name in [n for n, t in self._tokens.items() if t.expires_at <= now]:
                del self._tokens[name]
            self._sweep_at = max(SWEEP_AT, 2 * len(self._tokens))

    async def _id_jag(self, user: str, target: UpstreamAuthorization) -> IdJag:
        request = IdJagRequest(
            user_id=user,
            audience=target.issuer,
            resource=target.resource,
            scopes=target.scopes,
            client_id=self._auth.client_id,
        )
        try:
            return await self._source.id_jag(request)
        except IdJagUnavailable as exc:
            message = exc.message
            if exc.sign_in and "sign in" not in message.lower():
                message = f"{message}; sign in to Bastion again"
            raise UpstreamCredentialsUnavailable(
                self._upstream, message, detail=f"id-jag for {user}: {exc.detail}"
            ) from None

    async def _redeem(self, target: UpstreamAuthorization, jag: IdJag) -> tuple[str, float]:
        """RFC 7523 §2.1 at the token endpoint: the access token and its lifetime in seconds."""
        form = {"grant_type": JWT_BEARER, "assertion": jag.assertion, "resource": target.resource}
        scopes = target.scopes
        if jag.scopes is not None and scopes:  # never ask for more than the ID-JAG grants
            scopes = tuple(s for s in scopes if s in jag.scopes)
        if scopes:
            form["scope"] = " ".join(scopes)
        headers = {"accept": "application/json"}
        headers |= self._client_authentication(form, target)
        endpoint = target.token_endpoint
        try:
            async with self._http.stream("POST", endpoint, data=form, headers=headers) as response:
                status = response.status_code
                body = json_object(await read_capped(response, MAX_TOKEN_RESPONSE_BYTES))
        except ResponseTooLarge as exc:
            raise self._unavailable("its authorization server sent an unusable answer", str(exc)) from None
        except httpx2.TimeoutException:
            raise self._unavailable(
                "its authorization server did not answer in time; try again later", f"{endpoint}: timeout"
            ) from None
        except (httpx2.HTTPError, httpx2.InvalidURL) as exc:
            raise self._unavailable(
                "its authorization server cannot be reached; try again later", f"{endpoint}: {exc!r}"
            ) from None
        if status != 200:
            raise self._refused(status, body, jag)
        if body is None:
            raise self._unavailable("its authorization server sent an unusable answer", "not a JSON object")
        return self._access_token(body)

    def _client_authentication(self, form: dict[str, str], target: UpstreamAuthorization) -> dict[str, str]:
        """Adds the client's credentials to ``form``; returns the headers they need."""
        auth = self._auth
        method = auth.token_endpoint_auth_method
        if method == "client_secret_basic":
            # RFC 6749 §2.3.1: both are form-urlencoded before they are joined and encoded
            pair = f"{quote_plus(auth.client_id, safe='')}:{quote_plus(auth.client_secret or '', safe='')}"
            return {"authorization": "Basic " + base64.b64encode(pair.encode()).decode("ascii")}
        if method == "client_secret_post":
            form |= {"client_id": auth.client_id, "client_secret": auth.client_secret or ""}
            return {}
        form |= {
            "client_id": auth.client_id,
            "client_assertion_type": CLIENT_ASSERTION_TYPE,
            "client_assertion": self._client_assertion(target.token_endpoint),
        }
        return {}

    def _client_assertion(self, audience: str) -> str:
        """RFC 7523 §2.2 / §3: iss = sub = client_id, aud = the token endpoint, short-lived."""
        auth = self._auth
        assert auth.private_key_file is not None  # the config requires it for private_key_jwt
        unusable = "Bastion's key for its authorization server is unusable; an administrator must fix it"
        try:
            loaded = serialization.load_pem_private_key(
                Path(auth.private_key_file).read_bytes(), password=None
            )
        except (OSError, ValueError, TypeError) as exc:
            raise self._unavailable(unusable, f"private_key_file: {type(exc).__name__}") from None
        signing = _signing_key(loaded)
        if signing is None:
            raise self._unavailable(unusable, f"private_key_file: {type(loaded).__name__} is not supported")
        key, alg = signing
        now = int(time.time())  # wall-clock time, whatever clock the cache runs on
        claims = {
            "iss": auth.client_id,
            "sub": auth.client_id,
            "aud": audience,
            "iat": now,
            "nbf": now,
            "exp": now + CLIENT_ASSERTION_TTL_S,
            "jti": secrets.token_urlsafe(16),
        }
        headers = {"kid": auth.private_key_id} if auth.private_key_id else None
        return jwt.encode(claims, key, algorithm=alg, headers=headers)

    def _access_token(self, body: dict[str, Any]) -> tuple[str, float]:
        unusable = "its authorization server sent an unusable answer"
        token_type = body.get("token_type")
        if isinstance(token_type, str) and token_type.lower() == "dpop":
            raise self._unavailable(
                "its authorization server issued a DPoP-bound token, which Bastion does not support yet",
                "token_type DPoP",
            )
        if not isinstance(token_type, str) or token_type.lower() != "bearer":
            raise self._unavailable(unusable, f"token_type {str(token_type)[:40]!r}")
        token = body.get("access_token")
        if not isinstance(token, str) or not _ACCESS_TOKEN.fullmatch(token):
            raise self._unavailable(unusable, "access_token missing or not a visible-ASCII string")
        expires_in = body.get("expires_in", DEFAULT_EXPIRES_IN)
        if isinstance(expires_in, str) and expires_in.isdigit():
            expires_in = int(expires_in)
        if isinstance(expires_in, bool) or not isinstance(expires_in, int | float) or expires_in <= 0:
            raise self._unavailable(unusable, f"expires_in {str(expires_in)[:40]!r}")
        return token, float(expires_in)

    def _refused(
        self, status: int, body: dict[str, Any] | None, jag: IdJag
    ) -> UpstreamCredentialsUnavailable:
        """The token endpoint's RFC 6749 §5.2 error, as a message for the user. Its description
        goes to the log only, truncated, and without anything an echo could have put there."""
        error = (body or {}).get("error")
        code = error if isinstance(error, str) and _ERROR_CODE.fullmatch(error) else None
        described = (body or {}).get("error_description")
        why = ""
        if isinstance(described, str):
            for secret in (jag.assertion, self._auth.client_secret):
                described = described.replace(secret, "[redacted]") if secret else described
            why = _JWT_LIKE.sub("[jwt]", _UNPRINTABLE.sub("?", described))[:200]
        detail = f"token endpoint HTTP {status} error={code or 'unknown'} {why}".rstrip()
        log.warning("upstream %s: its authorization server refused a token: %s", self._upstream, detail)
        if code == "invalid_grant":
            message = "its authorization server did not accept your identity assertion (ID-JAG)"
        elif code == "invalid_client":
            message = (
                "its authorization server does not accept Bastion's client credentials; an "
                "administrator must fix them"
            )
        elif code is not None:
            message = f"its authorization server refused access ({code})"
        else:
            message = f"its authorization server answered with an error (HTTP {status})"
        return self._unavailable(message, detail)

    def _unavailable(self, message: str, detail: str) -> UpstreamCredentialsUnavailable:
        return UpstreamCredentialsUnavailable(self._upstream, message, detail=detail)


SigningKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


def _signing_key(key: object) -> tuple[SigningKey, str] | None:
    """The key and its JWS algorithm, for the key types an authorization server accepts."""
    if isinstance(key, rsa.RSAPrivateKey):
        return key, "RS256"
    if isinstance(key, ec.EllipticCurvePrivateKey):
        alg = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}.get(key.curve.name)
        return (key, alg) if alg else None
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key, "EdDSA"
    return None


__all__ = ["EmaUpstreamCredentials"]
