"""Which scopes a request gets (RFC 6749 §3.3).

A request may name only scopes Bastion issues (``auth.scopes``) plus ``offline_access``;
a client registered with a ``scope`` is limited to it. No ``scope`` asks for everything the
client may have, which is what the consent screen then shows.
"""

from __future__ import annotations

import re
from collections.abc import Collection

from bastion.oauth.errors import InvalidScope

OFFLINE_ACCESS = "offline_access"
_TOKEN = re.compile(r"^[\x21\x23-\x5B\x5D-\x7E]+$")
MAX_SCOPES = 64


def parse_scope(value: str | None) -> tuple[str, ...]:
    """The scope parameter as an ordered tuple of distinct scope tokens."""
    if value is None or value.strip(" ") == "":
        return ()
    tokens = [t for t in value.split(" ") if t]
    if len(tokens) > MAX_SCOPES or not all(_TOKEN.match(t) for t in tokens):
        raise InvalidScope("scope is not a space-separated list of scope tokens")
    return tuple(dict.fromkeys(tokens))


def grant_scopes(
    requested: tuple[str, ...], *, known: Collection[str], client_scope: str | None
) -> tuple[str, ...]:
    """The scopes to grant, or ``InvalidScope`` naming what is not available."""
    allowed = set(known) | {OFFLINE_ACCESS}
    if client_scope:
        allowed &= set(client_scope.split()) | {OFFLINE_ACCESS}
    if not requested:
        return tuple(s for s in known if s in allowed)
    unknown = [s for s in requested if s not in allowed]
    if unknown:
        raise InvalidScope("scope not available to this client: " + " ".join(unknown[:5]))
    return requested


def narrowed(requested: tuple[str, ...], granted: Collection[str]) -> tuple[str, ...]:
    """A refresh request may ask for a subset of what was granted (RFC 6749 §6), never more."""
    if not requested:
        return tuple(granted)
    extra = [s for s in requested if s not in granted]
    if extra:
        raise InvalidScope("scope exceeds what was granted: " + " ".join(extra[:5]))
    return requested
