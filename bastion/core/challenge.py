"""``WWW-Authenticate: Bearer`` challenges (RFC 6750 §3, RFC 9728 §5.1).

The 401 for a request without credentials carries no ``error`` (RFC 6750 §3.1: a request that
lacks authentication SHOULD NOT get an error code); a presented but bad token gets
``error="invalid_token"``; a token without the needed scopes gets a 403 with
``error="insufficient_scope"`` and *all* the scopes the operation needs in one challenge.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

# RFC 6750 §3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E ); error codes and descriptions are
# limited to %x20-21 / %x23-5B / %x5D-7E, so neither ever needs escaping inside quotes.
_SCOPE_TOKEN = re.compile(r"^[\x21\x23-\x5B\x5D-\x7E]+$")
_DESCRIPTION = re.compile(r"[^\x20-\x21\x23-\x5B\x5D-\x7E]")
# RFC 9110 §11.2 auth-param: token BWS "=" BWS ( token / quoted-string )
_AUTH_PARAM = re.compile(
    r'(?:^|[\s,])([!#$%&\'*+.^_`|~0-9A-Za-z-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([!#$%&\'*+.^_`|~0-9A-Za-z-/:]+))'
)
_QUOTED_PAIR = re.compile(r"\\(.)")
MAX_CHALLENGE_CHARS = 4096


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


def bearer_params(challenges: Iterable[str]) -> dict[str, str]:
    """The auth-params of the ``Bearer`` challenge among ``challenges`` (the values of every
    ``WWW-Authenticate`` header of one response), names lower-cased; the first occurrence of a
    name wins. Another scheme's parameters are not read; an over-long header is not read at all."""
    params: dict[str, str] = {}
    for header in challenges:
        if len(header) > MAX_CHALLENGE_CHARS:
            continue
        start = re.search(r"(?:^|,)\s*bearer(?:\s+|$)", header, re.IGNORECASE)
        if start is None:
            continue
        rest = header[start.end() :]
        other = re.search(r",\s*[!#$%&'*+.^_`|~0-9A-Za-z-]+\s+[!#$%&'*+.^_`|~0-9A-Za-z-]+\s*=", rest)
        for match in _AUTH_PARAM.finditer(rest[: other.start()] if other else rest):
            name = match.group(1).lower()
            value = _QUOTED_PAIR.sub(r"\1", match.group(2)) if match.group(2) is not None else match.group(3)
            params.setdefault(name, value)
    return params


def challenge_scopes(params: dict[str, str]) -> tuple[str, ...]:
    """The valid scope tokens of a challenge's ``scope`` parameter, in order, without repeats."""
    return tuple(dict.fromkeys(s for s in params.get("scope", "").split(" ") if _SCOPE_TOKEN.match(s)))
