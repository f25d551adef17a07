"""Token exchange towards an upstream (``upstreams[].auth: {type: token_exchange}``): for each
user, Bastion presents a token of their sign-in to Bastion through an enterprise identity
provider at an authorization server and sends the upstream what it gets back — never Bastion's
own token, never the MCP client's.

Two wire styles:

- ``rfc8693`` (RFC 8693 §2.1; Keycloak, Okta, Auth0…): ``grant_type``
  urn:ietf:params:oauth:grant-type:token-exchange, ``subject_token`` (the sign-in's ID token, or
  an IdP access token for ``subject_scopes``) with its ``subject_token_type``,
  ``requested_token_type`` (default the access-token type), ``audience``, ``resource``, ``scope``;
- ``entra_obo`` (Microsoft identity platform on-behalf-of): ``grant_type``
  urn:ietf:params:oauth:grant-type:jwt-bearer, ``assertion`` = the user's access token for
  Bastion's own API (``subject_scopes``, e.g. ``api://<bastion-app-id>/.default``),
  ``requested_token_use=on_behalf_of``, ``scope``.

The subject token comes from a :class:`~bastion.core.credentials.SubjectTokenSource` (the IdP
sessions live in ``bastion/idp``); the request goes to ``token_endpoint`` (default the identity
provider's own) with Bastion's client authentication (default its client at the identity
provider; ``client_auth.py``). The token is cached per user until ``refresh_margin`` seconds
before it expires; concurrent calls of one user share one exchange, different users never wait
for each other; ``forget`` (the upstream answered 401) drops it.

A call without a signed-in user (an unauthenticated principal, or a client acting for itself)
gets no token. Every failure is :class:`~bastion.core.errors.UpstreamCredentialsUnavailable`:
no sign-in at the identity provider → sign in again through it; the server refusing → its
OAuth error code (its description, sanitised, only in the log); the server unreachable → try
again later. No token, assertion or secret is ever logged or put into a message.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx2
import jwt

from bastion.config.idp import IdentityProvider
from bastion.config.upstream_auth import ACCESS_TOKEN_TYPE, TokenExchangeAuth
from bastion.core.credentials import (
    SIGN_IN_ERRORS,
    SubjectToken,
    SubjectTokenSource,
    SubjectTokenUnavailable,
)
from bastion.core.errors import ConnectionRequired, UpstreamCredentialsUnavailable
from bastion.core.records import Principal, UpstreamCredential
from bastion.vault.client_auth import ClientAuth, ClientKeyUnusable
from bastion.vault.discovery import JWT_BEARER, ResponseTooLarge, json_object, read_capped
from bastion.vault.sources import Presenter

log = logging.getLogger("bastion.vault")

TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"  # noqa: S105 - a URN
DEFAULT_EXPIRES_IN = 300  # neither expires_in nor a readable exp
MAX_TOKEN_RESPONSE_BYTES = 64 * 1024
NO_USER = "this upstream acts for a signed-in user; a client acting for itself has no user here"
SWEEP_AT = 1024  # cached tokens: expired ones are dropped when the cache reaches this size
_ERROR_CODE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_TOKEN = re.compile(r"[\x21-\x7e]{1,16384}")  # visible ASCII: it goes into a header
_UNPRINTABLE = re.compile(r"[^\x20-\x7e]")
_JWT_LIKE = re.compile(r"[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*")


def exchange_client(auth: TokenExchangeAuth, idp: IdentityProvider) -> ClientAuth:
    """Who Bastion is at the token endpoint: the client ``auth`` names, else its own client at
    the identity provider (with that client's certificate, for Entra)."""
    if auth.client_id is not None:
        return ClientAuth(
            auth.client_id,
            auth.token_endpoint_auth_method or "client_secret_basic",
            secret=auth.client_secret,
            private_key_file=auth.private_key_file,
            private_key_id=auth.private_key_id,
        )
    return ClientAuth(
        idp.client_id,
        idp.token_endpoint_auth_method,
        secret=idp.client_secret,
        private_key_file=idp.private_key_file,
        certificate_file=idp.certificate_file,
    )


@dataclass(frozen=True, slots=True)
class _Token:
    credential: UpstreamCredential = field(repr=False)
    expires_at: float


class TokenExchangeCredentials:
    """The vault's :class:`~bastion.vault.stage.CredentialSource` for an ``auth: {type:
    token_exchange}`` upstream."""

    def __init__(
        self,
        upstream: str,
        auth: TokenExchangeAuth,
        subjects: SubjectTokenSource,
        client: ClientAuth,
        http: httpx2.AsyncClient | None = None,
        *,
        stdio: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._upstream = upstream
        self._auth = auth
        self._subjects = subjects
        self._client = client
        self._presenter = Presenter(auth, stdio=stdio)
        self._own_http = http is None
        self._http = http or httpx2.AsyncClient(timeout=10, follow_redirects=False)
        self._clock = clock
        self._tokens: dict[str, _Token] = {}
        self._pending: dict[str, asyncio.Task[_Token]] = {}
        self._sweep_at = SWEEP_AT
        # who answers at the token endpoint, in messages to the user
        self._server = subjects.label if auth.token_endpoint is None else "its authorization server"

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
        # shielded: a caller that gives up does not cancel the exchange the others wait for
        return (await asyncio.shield(task)).credential

    async def more_scopes(self, principal: Principal, scopes: tuple[str, ...]) -> ConnectionRequired | None:
        return None  # the exchange asks for the configured scopes; a user cannot grant more

    def forget(self, principal: Principal) -> None:
        """The upstream refused the token (401): the next call exchanges again."""
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
            raise self._unavailable(NO_USER, f"principal {principal.subject!r} is not a user")
        return principal.subject

    def _settled(self, user: str, task: asyncio.Task[_Token]) -> None:
        if self._pending.get(user) is task:
            del self._pending[user]
        if not task.cancelled():
            task.exception()  # retrieved: a failure nobody waits for any more is not reported twice

    async def _obtain(self, user: str) -> _Token:
        try:
            endpoint = self._auth.token_endpoint or await self._subjects.token_endpoint()
            subject = await self._subjects.subject_token(
                user, kind=self._auth.presented, scopes=tuple(self._auth.subject_scopes)
            )
        except SubjectTokenUnavailable as exc:
            raise self._unavailable(exc.message, f"subject token for {user}: {exc.detail}") from None
        asked_at = self._clock()  # the lifetime counts from the request: the cache errs early
        token, expires_in = await self._exchange(endpoint, subject)
        cached = _Token(self._presenter.present(token, user), asked_at + expires_in)
        self._remember(user, cached)
        return cached

    def _remember(self, user: str, token: _Token) -> None:
        self._tokens[user] = token
        if len(self._tokens) >= self._sweep_at:
            now = self._clock()
            for name in [n for n, t in self._tokens.items() if t.expires_at <= now]:
                del self._tokens[name]
            self._sweep_at = max(SWEEP_AT, 2 * len(self._tokens))

    def _form(self, subject: SubjectToken) -> dict[str, str]:
        auth = self._auth
        if auth.style == "entra_obo":
            form = {
                "grant_type": JWT_BEARER,
                "assertion": subject.token,
                "requested_token_use": "on_behalf_of",
            }
        else:
            form = {
                "grant_type": TOKEN_EXCHANGE,
                "subject_token": subject.token,
                "subject_token_type": subject.token_type,
                "requested_token_type": auth.requested_token_type or ACCESS_TOKEN_TYPE,
            }
            if auth.audience:
                form["audience"] = auth.audience
            if auth.resource:
                form["resource"] = auth.resource
        if auth.scopes:
            form["scope"] = " ".join(auth.scopes)
        return form

    async def _exchange(self, endpoint: str, subject: SubjectToken) -> tuple[str, float]:
        """The exchange at ``endpoint``: the token and its lifetime in seconds."""
        form = self._form(subject)
        try:
            headers = {"accept": "application/json"} | self._client.apply(form, endpoint)
        except ClientKeyUnusable as exc:
            raise self._unavailable(
                "Bastion's key for the token exchange is unusable; an administrator must fix it", str(exc)
            ) from None
        server = self._server
        try:
            async with self._http.stream("POST", endpoint, data=form, headers=headers) as response:
                status = response.status_code
                body = json_object(await read_capped(response, MAX_TOKEN_RESPONSE_BYTES))
        except ResponseTooLarge as exc:
            raise self._unavailable(f"{server} sent an unusable answer", str(exc)) from None
        except httpx2.TimeoutException:
            raise self._unavailable(
                f"{server} did not answer in time; try again later", f"{endpoint}: timeout"
            ) from None
        except (httpx2.HTTPError, httpx2.InvalidURL) as exc:
            raise self._unavailable(
                f"{server} cannot be reached; try again later", f"{endpoint}: {type(exc).__name__}"
            ) from None
        if status != 200:
            raise self._refused(status, body, subject)
        if body is None:
            raise self._unavailable(f"{server} sent an unusable answer", "not a JSON object")
        return self._issued(body)

    def _issued(self, body: dict[str, Any]) -> tuple[str, float]:
        """The token of a successful answer (RFC 8693 §2.2.1 / RFC 6749 §5.1) and its lifetime."""
        unusable = f"{self._server} sent an unusable answer"
        token_type = body.get("token_type")
        kind = token_type.lower() if isinstance(token_type, str) else None
        if kind == "dpop":
            raise self._unavailable(
                f"{self._server} issued a DPoP-bound token, which Bastion does not support yet",
                "token_type DPoP",
            )
        # N_A: RFC 8693 §2.2.1, a token that is not an OAuth access token (e.g. a JWT)
        if kind not in ("bearer", "n_a"):
            raise self._unavailable(unusable, f"token_type {str(token_type)[:40]!r}")
        token = body.get("access_token")
        if not isinstance(token, str) or not _TOKEN.fullmatch(token):
            raise self._unavailable(unusable, "access_token missing or not a visible-ASCII string")
        expires_in = body.get("expires_in")
        if isinstance(expires_in, str) and expires_in.isdigit():  # Entra's v1 endpoint
            expires_in = int(expires_in)
        if expires_in is None:
            lifetime = _lifetime(token, self._clock())
            if lifetime is None:
                raise self._unavailable(unusable, "the issued token has expired")
            return token, lifetime
        if isinstance(expires_in, bool) or not isinstance(expires_in, int | float) or expires_in <= 0:
            raise self._unavailable(unusable, f"expires_in {str(expires_in)[:40]!r}")
        return token, float(expires_in)

    def _refused(
        self, status: int, body: dict[str, Any] | None, subject: SubjectToken
    ) -> UpstreamCredentialsUnavailable:
        """The token endpoint's RFC 6749 §5.2 error, as a message for the user. Its description
        goes to the log only, truncated, and without anything an echo could have put there."""
        code = _code((body or {}).get("error"))
        suberror = _code((body or {}).get("suberror"))  # Entra: consent_required, basic_action...
        described = (body or {}).get("error_description")
        why = ""
        if isinstance(described, str):
            for secret in (subject.token, self._client.secret):
                described = described.replace(secret, "[redacted]") if secret else described
            why = _JWT_LIKE.sub("[jwt]", _UNPRINTABLE.sub("?", described))[:200]
        detail = f"token endpoint HTTP {status} error={code or 'unknown'} {why}".rstrip()
        log.warning("upstream %s: the token exchange was refused: %s", self._upstream, detail)
        server = self._server
        if code == "invalid_client":
            message = (
                f"{server} does not accept Bastion's client credentials for the token exchange; an "
                "administrator must fix them"
            )
        elif code is not None:
            named = f"{code}, {suberror}" if suberror and suberror != code else code
            message = f"{server} refused the token exchange for this server ({named})"
            if code in SIGN_IN_ERRORS or suberror in SIGN_IN_ERRORS:
                message += f"; sign in to Bastion again through {self._subjects.label}"
        elif status == 429 or status >= 500:
            message = f"{server} is unavailable (HTTP {status}); try again later"
        else:
            message = f"{server} answered the token exchange with an error (HTTP {status})"
        return self._unavailable(message, detail)

    def _unavailable(self, message: str, detail: str) -> UpstreamCredentialsUnavailable:
        return UpstreamCredentialsUnavailable(self._upstream, message, detail=detail)


def _code(value: object) -> str | None:
    return value if isinstance(value, str) and _ERROR_CODE.fullmatch(value) else None


def _lifetime(token: str, now: float) -> float | None:
    """Without expires_in: until the token's own ``exp`` when it is a JWT (read, not verified:
    it only decides when to ask again; None when it has passed), else ``DEFAULT_EXPIRES_IN``."""
    try:
        exp = jwt.decode(token, options={"verify_signature": False, "verify_exp": False}).get("exp")
    except jwt.PyJWTError:
        return DEFAULT_EXPIRES_IN
    if not isinstance(exp, int | float) or isinstance(exp, bool):
        return DEFAULT_EXPIRES_IN
    return min(float(exp) - now, 86400.0) if exp > now else None


__all__ = ["TokenExchangeCredentials", "exchange_client"]
