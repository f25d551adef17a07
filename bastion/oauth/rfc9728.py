"""RFC 9728 OAuth 2.0 Protected Resource Metadata, for every MCP endpoint Bastion serves.

Each endpoint (``/mcp/<upstream>`` and the aggregate ``/mcp``) is its own protected resource:
its ``resource`` identifier is the exact endpoint URL (RFC 9728 §3.3 requires the document's
``resource`` to be identical to the URL the client asked about, and RFC 8707/9068 make the same
string the token's ``aud``). Documents are served at the path-suffixed well-known URL
(``/.well-known/oauth-protected-resource/mcp/<upstream>``, RFC 9728 §3.1) and, for the
aggregate endpoint, also at the root well-known URL, the fallback MCP clients try last.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bastion.config.model import Settings

WELL_KNOWN = "/.well-known/oauth-protected-resource"
MCP_PATH = "/mcp"


@dataclass(frozen=True, slots=True)
class ProtectedResource:
    endpoint: str | None  # upstream name; None for the aggregate endpoint
    resource: str  # the exact endpoint URL: PRM `resource` and every token's `aud`
    metadata_url: str  # where its PRM document is (the WWW-Authenticate resource_metadata value)
    name: str


def resources(settings: Settings) -> list[ProtectedResource]:
    """Every protected resource of this configuration, aggregate first when enabled."""
    base = settings.public_url
    out: list[ProtectedResource] = []
    if settings.aggregate.enabled:
        out.append(
            ProtectedResource(None, base + MCP_PATH, base + WELL_KNOWN + MCP_PATH, "Bastion (all upstreams)")
        )
    for upstream in settings.upstreams:
        path = f"{MCP_PATH}/{upstream.name}"
        out.append(
            ProtectedResource(
                upstream.name, base + path, base + WELL_KNOWN + path, upstream.title or upstream.name
            )
        )
    return out


def resource_for_path(path: str, known: Sequence[ProtectedResource]) -> ProtectedResource | None:
    """The resource whose PRM document lives at ``path`` (a request path on Bastion)."""
    if not path.startswith(WELL_KNOWN):
        return None
    suffix = path[len(WELL_KNOWN) :].rstrip("/")
    if suffix == "":
        # Root fallback: one document only can live here; it describes the aggregate
        # endpoint, or the only upstream when there is no aggregate.
        aggregate = [r for r in known if r.endpoint is None]
        if aggregate:
            return aggregate[0]
        return known[0] if len(known) == 1 else None
    for candidate in known:
        if candidate.metadata_url.endswith(WELL_KNOWN + suffix) and suffix.startswith(MCP_PATH):
            expected = MCP_PATH if candidate.endpoint is None else f"{MCP_PATH}/{candidate.endpoint}"
            if suffix == expected:
                return candidate
    return None


def metadata_document(resource: ProtectedResource, *, issuer: str, scopes: Sequence[str]) -> dict[str, Any]:
    """The RFC 9728 §2 document. ``offline_access`` is never listed (MCP authorization spec)."""
    return {
        "resource": resource.resource,
        "authorization_servers": [issuer],
        "scopes_supported": [s for s in scopes if s != "offline_access"],
        "bearer_methods_supported": ["header"],
        "resource_name": resource.name,
    }
