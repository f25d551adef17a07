"""The authorization endpoint's request (RFC 6749 §4.1.1 as profiled by OAuth 2.1 and MCP).

Validation order matters (RFC 6749 §4.1.2.1): until the client and its redirect URI are
known-good, an error is shown to the user and never redirected (an attacker's redirect URI
must not receive anything). Every later error goes back to the client's redirect URI with
``error``, ``error_description``, ``state`` and the RFC 9207 ``iss``.

Rules: ``response_type=code`` only, ``response_mode`` query only, PKCE S256 required, exactly
one RFC 8707 ``resource`` that is one of Bastion's endpoints, scopes the client may have.
The successful response carries ``code``, ``state`` (echoed verbatim) and ``iss``.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from bastion.oauth import rfc7636
from bastion.oauth.errors import InvalidRequest, OAuthError, UnauthorizedClient, UnsupportedResponseType
from bastion.oauth.registry import ClientRegistry, KnownClient
from bastion.oauth.rfc8707 import requested_resource, require_single
from bastion.oauth.scopes import grant_scopes, parse_scope

MAX_STATE_CHARS = 1024
PROMPTS = frozenset({"none", "login", "consent", "select_account"})


class NotRedirectable(Exception):
    """The client or redirect URI is not trusted: show ``error`` on a page, never redirect."""

    def __init__(self, error: OAuthError) -> None:
        super().__init__(error.description)
        self.error = error


class Redirectable(Exception):
    """An error for a trusted redirect URI: send it back there (``location``)."""

    def __init__(self, error: OAuthError, location: str, client_id: str) -> None:
        super().__init__(error.description)
        self.error = error
        self.location = location
        self.client_id = client_id


@dataclass(frozen=True, slots=True)
class AuthorizationRequest:
    client_id: str
    redirect_uri: str
    state: str | None
    code_challenge: str
    resource: str
    scopes: tuple[str, ...]
    prompt: tuple[str, ...] = ()  # OIDC prompt values Bastion honours: login, consent, none
    login_hint: str | None = None  # OIDC: who is signing in (routes to an IdP by e-mail domain)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> AuthorizationRequest:
        return cls(
            client_id=str(data["client_id"]),
            redirect_uri=str(data["redirect_uri"]),
            state=None if data.get("state") is None else str(data["state"]),
            code_challenge=str(data["code_challenge"]),
            resource=str(data["resource"]),
            scopes=tuple(str(s) for s in data.get("scopes", ())),
            prompt=tuple(str(p) for p in data.get("prompt", ())),
            login_hint=str(data["login_hint"]) if data.get("login_hint") else None,
        )


def with_query(uri: str, params: Mapping[str, str | None]) -> str:
    """``uri`` with ``params`` appended to any query it already has (RFC 6749 §3.1.2)."""
    parts = urlsplit(uri)
    extra = urlencode({k: v for k, v in params.items() if v is not None})
    query = f"{parts.query}&{extra}" if parts.query else extra
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))


def error_location(redirect_uri: str, error: OAuthError, *, state: str | None, issuer: str) -> str:
    return with_query(
        redirect_uri,
        {"error": error.error, "error_description": error.description, "state": state, "iss": issuer},
    )


def success_location(redirect_uri: str, code: str, *, state: str | None, issuer: str) -> str:
    return with_query(redirect_uri, {"code": code, "state": state, "iss": issuer})


def _client_redirect(client: KnownClient, values: Sequence[str]) -> str:
    if len(values) > 1:
        raise NotRedirectable(InvalidRequest("redirect_uri must not be repeated"))
    if not values:
        # OAuth 2.1 §4.1.1: optional only when exactly one URI is registered
        if len(client.record.redirect_uris) == 1:
            return client.record.redirect_uris[0]
        raise NotRedirectable(InvalidRequest("redirect_uri is required"))
    if not client.redirect_allowed(values[0]):
        raise NotRedirectable(InvalidRequest("redirect_uri is not registered for this client"))
    return values[0]


async def parse_authorization_request(
    query: Mapping[str, Sequence[str]],
    *,
    registry: ClientRegistry,
    issuer: str,
    resources: Collection[str],
    scopes: Collection[str],
) -> tuple[KnownClient, AuthorizationRequest]:
    try:
        client_id = require_single(query.get("client_id", ()), "client_id")
    except OAuthError as exc:
        raise NotRedirectable(exc) from None
    if not client_id:
        raise NotRedirectable(InvalidRequest("client_id is required"))
    try:
        client = await registry.find(client_id)
    except OAuthError as exc:
        raise NotRedirectable(exc) from None
    redirect_uri = _client_redirect(client, query.get("redirect_uri", ()))

    state: str | None = None
    try:
        state = require_single(query.get("state", ()), "state")
        if state is not None and (len(state) > MAX_STATE_CHARS or not state.isprintable()):
            state = None
            raise InvalidRequest("state is too long or not printable")
        response_type = require_single(query.get("response_type", ()), "response_type")
        if response_type != "code":
            raise UnsupportedResponseType("response_type must be code")
        if require_single(query.get("response_mode", ()), "response_mode") not in (None, "query"):
            raise InvalidRequest("response_mode must be query")
        if not client.allows_grant("authorization_code"):
            raise UnauthorizedClient("this client may not use the authorization code grant")
        challenge = rfc7636.check_challenge(
            require_single(query.get("code_challenge", ()), "code_challenge"),
            require_single(query.get("code_challenge_method", ()), "code_challenge_method"),
        )
        resource = requested_resource(query.get("resource", ()), resources)
        requested = parse_scope(require_single(query.get("scope", ()), "scope"))
        granted = grant_scopes(requested, known=scopes, client_scope=client.record.scope)
        prompt = tuple((require_single(query.get("prompt", ()), "prompt") or "").split())
        login_hint = require_single(query.get("login_hint", ()), "login_hint")
        if login_hint is not None and (len(login_hint) > 256 or not login_hint.isprintable()):
            raise InvalidRequest("login_hint is too long or not printable")
        if not set(prompt) <= PROMPTS or ("none" in prompt and len(prompt) > 1):
            raise InvalidRequest("prompt must be none, login, consent or login consent")
    except OAuthError as exc:
        location = error_location(redirect_uri, exc, state=state, issuer=issuer)
        raise Redirectable(exc, location, client.client_id) from None
    return client, AuthorizationRequest(
        client_id=client.client_id,
        redirect_uri=redirect_uri,
        state=state,
        code_challenge=challenge,
        resource=resource,
        scopes=granted,
        prompt=prompt,
        login_hint=login_hint or None,
    )
