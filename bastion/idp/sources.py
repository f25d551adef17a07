"""The seam between Bastion's sign-in page and wherever users come from.

A *password source* checks a username and password itself (the built-in user directory).
Enterprise identity providers (OIDC, issue #4) will be *redirect sources*: the sign-in page
lists them as links, and their callback ends in the same place a password sign-in does —
a :class:`SignedIn` for a user record in the store. The authorization flow only ever sees
``SignedIn``, so adding a source changes nothing downstream.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from bastion.core.records import UserRecord


@dataclass(frozen=True, slots=True)
class SignedIn:
    user: UserRecord
    source: str  # the identity source's name, e.g. "local"
    auth_time: float


class PasswordSource(Protocol):
    name: str

    async def verify(self, username: str, password: str) -> UserRecord | None:
        """The enabled user these credentials belong to, or None (never says which part was wrong)."""
        ...


class RedirectSource(Protocol):
    """An external identity provider the browser is sent to (implemented with issue #4)."""

    name: str
    label: str

    def start_path(self, request_handle: str) -> str:
        """Where the sign-in page links to start signing in with this source."""
        ...
