"""The seams of per-user upstream credentials.

The vault stage binds a principal to a :class:`Credentials` object; the upstream stage asks it
for the credential of each upstream it actually talks to (one for ``/mcp/<name>``, several on
the aggregate ``/mcp``), so nothing is fetched for upstreams a call never reaches.

Enterprise-Managed Authorization towards an upstream needs an ID-JAG for the user. Who mints it
is a deployment choice (the enterprise IdP by token exchange, or Bastion's own bridge); both
implement :class:`IdJagSource`, which the vault uses without knowing which one it has.

A token exchange towards an upstream (RFC 8693, or Entra's on-behalf-of flow) presents a token
of the user's sign-in at an enterprise IdP: :class:`SubjectTokenSource` hands it out, and the
vault never learns how IdP sessions keep it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol

from bastion.core.errors import ConnectionRequired
from bastion.core.records import UpstreamCredential


class Credentials(Protocol):
    """A principal's credentials, resolved per upstream on first use."""

    async def for_upstream(self, name: str) -> UpstreamCredential: ...

    def refused(self, name: str) -> None:
        """The upstream answered 401 to the credential: the next call gets a fresh one."""
        ...

    async def more_scopes(self, name: str, scopes: tuple[str, ...]) -> ConnectionRequired | None:
        """The upstream answered 403 ``insufficient_scope`` naming ``scopes``: the connect request
        that would get them (the user reconnects), or None when none would."""
        ...


@dataclass(frozen=True, slots=True)
class IdJagRequest:
    """An ID-JAG wanted for ``user_id``, to present at the authorization server ``audience``."""

    user_id: str
    audience: str  # the target authorization server's issuer identifier
    resource: str  # the target MCP server's RFC 9728 resource identifier
    scopes: tuple[str, ...]  # empty: whatever the issuer's policy grants
    client_id: str  # Bastion's client id at the target authorization server


@dataclass(frozen=True, slots=True)
class IdJag:
    assertion: str = field(repr=False)  # the signed ID-JAG (a secret: never logged)
    expires_at: float
    scopes: tuple[str, ...] | None = None  # as granted, when the issuer said


class IdJagUnavailable(Exception):
    """No ID-JAG for this user now. ``sign_in`` is true when signing in again would help
    (no IdP session, or it ended); the message is safe to show the user."""

    def __init__(self, message: str, *, sign_in: bool = False, detail: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.sign_in = sign_in
        self.detail = detail


class IdJagSource(Protocol):
    async def id_jag(self, request: IdJagRequest) -> IdJag: ...


# OAuth error codes of a token endpoint that a new (or stronger) sign-in at the IdP can cure
SIGN_IN_ERRORS = frozenset(
    {"insufficient_user_authentication", "login_required", "interaction_required", "consent_required"}
)

SubjectTokenKind = Literal["id_token", "access_token"]
ID_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:id_token"  # noqa: S105 - RFC 8693 §3 URNs
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"  # noqa: S105


@dataclass(frozen=True, slots=True)
class SubjectToken:
    """A token of the user's sign-in at an identity provider, to present in a token exchange
    (RFC 8693 ``subject_token``, or the ``assertion`` of Entra's on-behalf-of flow)."""

    token: str = field(repr=False)  # a secret: never logged
    token_type: str  # its RFC 8693 token type URN (ID_TOKEN_TYPE or ACCESS_TOKEN_TYPE)
    expires_at: float


class SubjectTokenUnavailable(Exception):
    """No subject token for this user now. ``sign_in`` is true when signing in to Bastion again
    through the identity provider would help; the message is safe to show the user."""

    def __init__(self, message: str, *, sign_in: bool = False, detail: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.sign_in = sign_in
        self.detail = detail


class SubjectTokenSource(Protocol):
    """The user's tokens from their sign-in at one identity provider (``identity_providers:``),
    for a token exchange on their behalf (``upstreams[].auth: {type: token_exchange}``)."""

    @property
    def label(self) -> str:
        """The identity provider's name for people ("Microsoft", "Keycloak")."""
        ...

    async def token_endpoint(self) -> str:
        """The identity provider's own token endpoint (from its discovery document); raises
        :class:`SubjectTokenUnavailable` when it cannot be read now."""
        ...

    async def subject_token(
        self, user_id: str, *, kind: SubjectTokenKind, scopes: tuple[str, ...] = ()
    ) -> SubjectToken:
        """The ID token of the user's sign-in (``id_token``), or an access token obtained for
        ``scopes`` with the sign-in's refresh token (``access_token``); raises
        :class:`SubjectTokenUnavailable`."""
        ...


CLIENT_SUPPLIED = "client_supplied"  # UpstreamCredential.mode of a token the client supplied


@dataclass(frozen=True, slots=True)
class SuppliedToken:
    """A downstream token the MCP client supplied with a ``tools/call`` (the #234 wire format:
    ``params._meta.authorization = {"method": "oauth2", "token": "…"}``). Edge takes it out of
    the message before any other stage sees the call; only the vault reads it."""

    method: str
    token: str = field(repr=False)
