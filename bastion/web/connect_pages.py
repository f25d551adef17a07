"""Views of the connect pages (frozen dataclasses) and their rendering.

- :class:`ConnectConfirmView`: "Connect <label> to Bastion for <user>?" before an OAuth
  connection leaves for the provider (a POST with a CSRF token: a link alone never starts it);
- :class:`ApiKeyView`: the form where a user pastes an API key (one password-type input; the
  key is never put back into a page);
- :class:`ConnectionsView`: "My connections", every configured connection with its status and
  Connect / Reconnect / Disconnect.

Rendered by ``pages``' environment (autoescaping; hidden characters shown as U+FFFD).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Final

from bastion.web.pages import _check_url, _render

STATUSES: Final = {
    "ok": "Connected",
    "reconnect": "Needs reconnecting",
    "not_connected": "Not connected",
}
KINDS: Final = frozenset({"oauth", "api_key"})


def when(ts: float | None) -> str | None:
    """A time as people read it on these pages (UTC, to the minute)."""
    if ts is None or ts <= 0:
        return None
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ts))


@dataclass(frozen=True, slots=True)
class ConnectConfirmView:
    """Confirm an OAuth connection before the browser goes to the provider."""

    action: str
    csrf: str
    intent: str  # "" when the page was opened without an intent (e.g. from My connections)
    label: str
    user: str
    scopes: tuple[str, ...]
    reconnect: bool = False

    def __post_init__(self) -> None:
        _check_url(self.action, "action")


@dataclass(frozen=True, slots=True)
class ApiKeyView:
    """Paste an API key for a connection."""

    action: str
    csrf: str
    intent: str
    label: str
    user: str
    instructions: str | None = None
    error: str | None = None

    def __post_init__(self) -> None:
        _check_url(self.action, "action")


@dataclass(frozen=True, slots=True)
class ConnectionRow:
    name: str
    label: str
    kind: str  # "oauth" | "api_key"
    status: str  # a key of STATUSES
    connect_url: str
    disconnect_action: str
    scopes: tuple[str, ...] = ()
    account: str | None = None
    connected_at: str | None = None
    last_used_at: str | None = None
    expires_at: str | None = None

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {sorted(STATUSES)}")
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {sorted(KINDS)}")
        _check_url(self.connect_url, "connect_url")
        _check_url(self.disconnect_action, "disconnect_action")

    @property
    def status_text(self) -> str:
        return STATUSES[self.status]

    @property
    def connected(self) -> bool:
        return self.status != "not_connected"


@dataclass(frozen=True, slots=True)
class ConnectionsView:
    user: str
    csrf: str
    rows: tuple[ConnectionRow, ...]
    notice: str | None = None


def render_connect_confirm(view: ConnectConfirmView) -> str:
    return _render("connect_confirm.html", view=view)


def render_api_key(view: ApiKeyView) -> str:
    return _render("connect_api_key.html", view=view)


def render_connections(view: ConnectionsView) -> str:
    return _render("connections.html", view=view)


__all__ = [
    "ApiKeyView",
    "ConnectConfirmView",
    "ConnectionRow",
    "ConnectionsView",
    "render_api_key",
    "render_connect_confirm",
    "render_connections",
    "when",
]
