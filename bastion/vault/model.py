"""What the vault's parts hand each other: tokens from a provider, and why none is available.

- :mod:`.envelope` seals and opens :class:`~bastion.core.records.VaultRecord` secrets;
- :mod:`.provider` talks OAuth to a downstream provider (authorize URL, code, refresh, revoke);
- :mod:`.connections` keeps each user's credential per connection, refreshing on demand
  (single flight within a process and across replicas);
- the credential sources of ``upstreams[].auth`` turn a missing connection into a URL
  elicitation for the user.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True, slots=True)
class ProviderTokens:
    """A provider's token response (RFC 6749 §5.1), validated."""

    access_token: str = field(repr=False)
    refresh_token: str | None = field(default=None, repr=False)  # None: none issued (or not rotated)
    expires_at: float | None = None  # None: the provider did not say
    scopes: tuple[str, ...] | None = None  # None: the provider did not say (= as requested)
    account: str | None = None  # who the user is at the provider, when it says (id token, userinfo)
    # the API base of the user's account (Salesforce: their org), for presets that keep it; not
    # a secret, an https URL without credentials, query or fragment
    instance_url: str | None = None


@dataclass(frozen=True, slots=True)
class Credential:
    """What the vault hands out for an upstream call: the access token or API key, and the API
    base of the user's account when the provider gave one (``{instance_url}`` in a template)."""

    secret: str = field(repr=False)
    instance_url: str | None = None


class ProviderRefused(Exception):
    """The provider answered ``invalid_grant`` (or an equivalent): the refresh token is dead and
    the user must connect again. The message is safe to show; it never holds a token."""


class ProviderUnavailable(Exception):
    """The provider could not be reached or answered with an error that may pass (5xx, timeout,
    a malformed reply): keep what is stored and try again later."""


class VaultTampered(Exception):
    """A record does not open: altered ciphertext, a row moved to another user or connection,
    or a data key wrapped under a master key that is not configured."""


class ConnectionMissing(Exception):
    """The user has no usable credential for ``connection``: never connected, disconnected, or
    (``reconnect``) the provider refused the refresh token."""

    def __init__(self, connection: str, *, reconnect: bool = False, detail: str = "") -> None:
        super().__init__(f"no usable credential for connection {connection!r}")
        self.connection = connection
        self.reconnect = reconnect
        self.detail = detail


class TokenRefresher(Protocol):
    """Refreshes a connection's tokens at its provider (implemented by :mod:`.provider`)."""

    async def refresh(self, connection: str, refresh_token: str) -> ProviderTokens:
        """Raises :class:`ProviderRefused` or :class:`ProviderUnavailable`."""
        ...


__all__ = [
    "ConnectionMissing",
    "Credential",
    "ProviderRefused",
    "ProviderTokens",
    "ProviderUnavailable",
    "TokenRefresher",
    "VaultTampered",
]
