"""The answers that make a client change era: -32022 naming only the versions served."""

from __future__ import annotations

from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, MODERN_PROTOCOL_VERSIONS

from bastion.core.errors import UnsupportedProtocolVersion


def legacy_only_rejection(requested: object) -> UnsupportedProtocolVersion:
    """For a modern request on a legacy-only endpoint: -32022 listing only handshake versions,
    which makes SDK clients fall back to initialize."""
    return UnsupportedProtocolVersion(
        "Unsupported protocol version",
        data={"supported": list(HANDSHAKE_PROTOCOL_VERSIONS), "requested": str(requested or "")},
    )


def modern_only_rejection(requested: object) -> UnsupportedProtocolVersion:
    """For initialize on a modern-only endpoint: -32022 listing only the modern versions."""
    return UnsupportedProtocolVersion(
        "Unsupported protocol version: this endpoint serves the 2026-07-28 era only",
        data={"supported": list(MODERN_PROTOCOL_VERSIONS), "requested": str(requested or "")},
    )
