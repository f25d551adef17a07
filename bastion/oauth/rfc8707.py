"""RFC 8707 Resource Indicators: the ``resource`` a client asks a token for must be one of
Bastion's protected resources, given as its exact URL (MCP: clients MUST send it on both the
authorization and the token request; the token's ``aud`` is that value)."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from urllib.parse import urlsplit, urlunsplit

from bastion.oauth.errors import InvalidRequest, InvalidTarget


def requested_resource(values: Sequence[str], known: Collection[str]) -> str:
    """The single resource of a request. Several resources in one request are refused: each
    token is for exactly one resource, so a token for ``/mcp/a`` is useless at ``/mcp/b``."""
    if not values:
        raise InvalidTarget("resource is required (RFC 8707): the URL of the MCP endpoint")
    if len(values) > 1:
        raise InvalidTarget("one resource per request")
    value = values[0]
    parts = urlsplit(value)
    if not parts.scheme or not parts.netloc or parts.fragment or "#" in value:
        raise InvalidTarget("resource must be an absolute URI without a fragment")
    # MCP canonical URI: scheme and host compare case-insensitively, the rest exactly (a
    # trailing slash names another resource); the canonical form is what goes into `aud`
    canonical = _canonical(value)
    for candidate in known:
        if _canonical(candidate) == canonical:
            return candidate
    raise InvalidTarget("resource is not an endpoint of this server")


def _canonical(uri: str) -> str:
    parts = urlsplit(uri)
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), parts.path, parts.query, ""))


def same_resource(authorized: str, requested: Sequence[str]) -> None:
    """At the token endpoint, ``resource`` (when sent) must equal the one the code was issued for."""
    if not requested:
        return
    if len(requested) > 1 or _canonical(requested[0]) != _canonical(authorized):
        raise InvalidTarget("resource differs from the authorization request")


def require_single(values: Sequence[str], name: str) -> str | None:
    """OAuth parameters appear at most once (RFC 6749 §3.1)."""
    if len(values) > 1:
        raise InvalidRequest(f"{name} must not be repeated")
    return values[0] if values else None
