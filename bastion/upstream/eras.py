"""Translating results between the eras (2025-11-25 ↔ 2026-07-28).

What is bridged is listed in docs/protocol-bridging.md; this module is its code.
"""

from __future__ import annotations

from typing import Any

from mcp_types import (
    CLIENT_CAPABILITIES_META_KEY,
    CLIENT_INFO_META_KEY,
    LOG_LEVEL_META_KEY,
    PROTOCOL_VERSION_META_KEY,
    SERVER_INFO_META_KEY,
)
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, LATEST_HANDSHAKE_VERSION, MODERN_PROTOCOL_VERSIONS

from bastion._version import __version__

JsonObject = dict[str, Any]

ENVELOPE_KEYS = frozenset(
    {PROTOCOL_VERSION_META_KEY, CLIENT_CAPABILITIES_META_KEY, CLIENT_INFO_META_KEY, LOG_LEVEL_META_KEY}
)
CACHEABLE_METHODS = frozenset(
    {
        "server/discover",
        "tools/list",
        "prompts/list",
        "resources/list",
        "resources/templates/list",
        "resources/read",
    }
)
BASTION_INFO: JsonObject = {"name": "bastion", "version": __version__}
BASTION_CLIENT_INIT: JsonObject = {
    "protocolVersion": LATEST_HANDSHAKE_VERSION,
    "capabilities": {},
    "clientInfo": {"name": "bastion-gateway", "version": __version__},
}


def strip_envelope(message: JsonObject) -> JsonObject:
    """A modern request as a legacy upstream expects it: the per-request envelope removed."""
    params = message.get("params")
    if not isinstance(params, dict):
        return message
    meta = params.get("_meta")
    if not isinstance(meta, dict) or not (ENVELOPE_KEYS & meta.keys()):
        return message
    rest = {k: v for k, v in meta.items() if k not in ENVELOPE_KEYS}
    new_params = {k: v for k, v in params.items() if k != "_meta"}
    if rest:
        new_params["_meta"] = rest
    return {**message, "params": new_params}


def to_modern_response(method: str | None, response: JsonObject, cache_scope: str = "private") -> JsonObject:
    """A legacy result as the 2026-07-28 wire requires it: resultType, and cache hints on
    cacheable results (private: a gateway's answers may depend on who asks)."""
    result = response.get("result")
    if not isinstance(result, dict):
        return response
    extra: JsonObject = {}
    if "resultType" not in result:
        extra["resultType"] = "complete"
    if method in CACHEABLE_METHODS:
        if "cacheScope" not in result:
            extra["cacheScope"] = cache_scope
        if "ttlMs" not in result:
            extra["ttlMs"] = 0
    if not extra:
        return response
    return {**response, "result": {**result, **extra}}


def to_legacy_result(result: JsonObject) -> JsonObject:
    """A modern result for a legacy client: the modern-only hints dropped."""
    return {k: v for k, v in result.items() if k not in ("resultType", "cacheScope", "ttlMs")}


def discover_from_initialize(initialize_result: JsonObject) -> JsonObject:
    """server/discover answered from a legacy upstream's initialize result."""
    result: JsonObject = {
        "supportedVersions": list(MODERN_PROTOCOL_VERSIONS),
        "capabilities": initialize_result.get("capabilities", {}),
        "resultType": "complete",
        "cacheScope": "private",
        "ttlMs": 0,
    }
    if initialize_result.get("instructions"):
        result["instructions"] = initialize_result["instructions"]
    server_info = initialize_result.get("serverInfo")
    if isinstance(server_info, dict):
        result["_meta"] = {SERVER_INFO_META_KEY: server_info}
    return result


def initialize_from_discover(discover_result: JsonObject, requested_version: str) -> JsonObject:
    """An initialize result for a legacy client, from a modern upstream's discover result."""
    version = (
        requested_version if requested_version in HANDSHAKE_PROTOCOL_VERSIONS else LATEST_HANDSHAKE_VERSION
    )
    meta = discover_result.get("_meta")
    server_info = meta.get(SERVER_INFO_META_KEY) if isinstance(meta, dict) else None
    result: JsonObject = {
        "protocolVersion": version,
        "capabilities": discover_result.get("capabilities", {}),
        "serverInfo": server_info if isinstance(server_info, dict) else dict(BASTION_INFO),
    }
    if discover_result.get("instructions"):
        result["instructions"] = discover_result["instructions"]
    return result


def negotiated_version(requested: object) -> str:
    return (
        requested
        if isinstance(requested, str) and requested in HANDSHAKE_PROTOCOL_VERSIONS
        else LATEST_HANDSHAKE_VERSION
    )


def envelope(protocol_version: str, capabilities: JsonObject, client_info: JsonObject | None) -> JsonObject:
    meta: JsonObject = {
        PROTOCOL_VERSION_META_KEY: protocol_version,
        CLIENT_CAPABILITIES_META_KEY: capabilities,
    }
    if client_info:
        meta[CLIENT_INFO_META_KEY] = client_info
    return meta


def with_envelope(message: JsonObject, meta: JsonObject) -> JsonObject:
    params = message.get("params")
    params = dict(params) if isinstance(params, dict) else {}
    existing = params.get("_meta")
    params["_meta"] = {**existing, **meta} if isinstance(existing, dict) else dict(meta)
    return {**message, "params": params}
