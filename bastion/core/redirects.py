"""Redirect URI rules shared by every way a client registers (CIMD, RFC 7591 DCR, config).

Registration: https anywhere; http only on loopback (RFC 8252 §7.3, MCP authorization
"Communication Security"); no fragment (RFC 6749 §3.1.2), no userinfo, no custom schemes.
Matching: exact string comparison (OAuth 2.1 §4.1.3), except that for loopback http redirect
URIs the port may differ (RFC 8252 §7.3, OAuth 2.1 §8.4.2) — nothing else may.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import urlsplit

# scheme, loopback host, optional port, then path and query; no userinfo, no fragment
LOOPBACK_REDIRECT = re.compile(
    r"http://(127\.0\.0\.1|\[::1\]|localhost)(?::(\d{1,5}))?([/?][^#]*)?", re.ASCII
)


def redirect_uri_problem(uri: str) -> str | None:
    """Why ``uri`` may not be registered, or None."""
    if "#" in uri or not uri.isprintable() or any(c in uri for c in " \\"):
        return "has a fragment or illegal characters"
    try:
        parts = urlsplit(uri)
        parts.port  # noqa: B018  (raises ValueError on a malformed port)
    except ValueError:
        return "is not a URL"
    if "@" in parts.netloc:
        return "carries userinfo"
    if parts.scheme == "https" and parts.hostname:
        return None
    if parts.scheme == "http" and LOOPBACK_REDIRECT.fullmatch(uri):
        return None
    return "must be https, or http on 127.0.0.1, [::1] or localhost"


def is_loopback(uri: str) -> bool:
    return LOOPBACK_REDIRECT.fullmatch(uri) is not None


def redirect_uri_matches(registered: Iterable[str], redirect_uri: str) -> bool:
    registered = tuple(registered)
    if redirect_uri in registered:
        return True
    asked = LOOPBACK_REDIRECT.fullmatch(redirect_uri)
    if asked is None or (asked.group(2) is not None and not 0 < int(asked.group(2)) < 65536):
        return False
    for uri in registered:
        known = LOOPBACK_REDIRECT.fullmatch(uri)
        if known and (known.group(1), known.group(3)) == (asked.group(1), asked.group(3)):
            return True
    return False
