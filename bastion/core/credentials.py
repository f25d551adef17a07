"""The seams of per-user upstream credentials.

The vault stage binds a principal to a :class:`Credentials` object; the upstream stage asks it
for the credential of each upstream it actually talks to (one for ``/mcp/<name>``, several on
the aggregate ``/mcp``), so nothing is fetched for upstreams a call never reaches.

Enterprise-Managed Authorization towards an upstream needs an ID-JAG for the user. Who mints it
is a deployment choice (the enterprise IdP by token exchange, or Bastion's own bridge); both
implement :class:`IdJagSource`, which the vault uses without knowing which one it has.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from bastion.core.records import UpstreamCredential


class Credentials(Protocol):
    """A principal's credentials, resolved per upstream on first use."""

    async def for_upstream(self, name: str) -> UpstreamCredential: ...

    def refused(self, name: str) -> None:
        """The upstream answered 401 to the credential: the next call gets a fresh one."""
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


CLIENT_SUPPLIED = "client_supplied"  # UpstreamCredential.mode of a token the client supplied


@dataclass(frozen=True, slots=True)
class SuppliedToken:
    """A downstream token the MCP client supplied with a ``tools/call`` (the #234 wire format:
    ``params._meta.authorization = {"method": "oauth2", "token": "…"}``). Edge takes it out of
    the message before any other stage sees the call; only the vault reads it."""

    method: str
    token: str = field(repr=False)
