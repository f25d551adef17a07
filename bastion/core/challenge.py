"""``WWW-Authenticate: Bearer`` challenges (RFC 6750 §3, RFC 9728 §5.1).

The 401 for a request without credentials carries no ``error`` (RFC 6750 §3.1: a request that
lacks authentication SHOULD NOT get an error code); a presented but bad token gets
``error="invalid_token"``; a token without the needed scopes gets a 403 with
``error="insufficient_scope"`` and *all* the scopes the operation needs in one challenge.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

# RFC 6750 §3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E ); error codes and descriptions are
# limited to %x20-21 / %x23-5B / %x5D-7E, so neither ever needs escaping inside quotes.
_SCOPE_TOKEN = re.compile(r"^[\x21\x23-\x5B\x5D-\x7E]+$")
_DESCRIPTION = re.compile(r"[^\x20-\x21\x23-\x5B\x5D-\x7E]")


def bearer_challenge(
    *,
    resource_metadata: str,
    scopes: Sequence[str] = (),
    error: str | None = None,
    description: str | None = None,
) -> str:
    for scope in scopes:
        if not _SCOPE_TOKEN.match(scope):
            raise ValueError(f"not a valid scope token: {scope!r}")
    parts: list[str] = []
    if error is not None:
        parts.append(f'error="{error}"')
    if scopes:
        parts.append('scope="' + " ".join(s for s in scopes if s != "offline_access") + '"')
    parts.append(f'resource_metadata="{resource_metadata}"')
    if description:
        parts.append('error_description="' + _DESCRIPTION.sub("?", description)[:200] + '"')
    return "Bearer " + ", ".join(parts)
