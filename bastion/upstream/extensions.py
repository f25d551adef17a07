"""MCP extensions Bastion itself implements, declared to clients under ``capabilities.extensions``
of every ``initialize`` (2025-11-25 and older, SEP-2133's additive property) and
``server/discover`` (2026-07-28) result it returns, merged with the upstream's own.

Today that is Enterprise-Managed Authorization, when Bastion redeems ID-JAGs at its ``/token``.
Results Bastion builds go through :func:`with_extensions`; the passthrough path rewrites only the
response to these two methods (:mod:`bastion.upstream.result_rewrite`), every other response
stays bytes. With no extension to declare nothing is touched.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from bastion.config.model import Settings
from bastion.upstream.result_rewrite import rewrite_json, rewrite_sse

JsonObject = dict[str, Any]

EMA_EXTENSION = "io.modelcontextprotocol/enterprise-managed-authorization"
RESULT_METHODS = frozenset({"initialize", "server/discover"})


def server_extensions(settings: Settings) -> JsonObject:
    """What Bastion declares: EMA when its ``/token`` redeems ID-JAGs (the same condition under
    which its authorization server metadata lists the id-jag grant profile)."""
    if settings.auth.enabled and settings.ema.trusted_issuers:
        return {EMA_EXTENSION: {}}
    return {}


def with_extensions(result: JsonObject, extensions: JsonObject) -> JsonObject:
    """``result`` (initialize or server/discover) with ``extensions`` added to
    ``capabilities.extensions``; the upstream's other extensions are kept, Bastion's own win."""
    if not extensions:
        return result
    capabilities = result.get("capabilities")
    capabilities = capabilities if isinstance(capabilities, dict) else {}
    declared = capabilities.get("extensions")
    merged = {**declared, **extensions} if isinstance(declared, dict) else dict(extensions)
    return {**result, "capabilities": {**capabilities, "extensions": merged}}


def declare_in_json(body: bytes, request_id: object, extensions: JsonObject) -> bytes:
    """A JSON response body from an upstream, with the extensions declared in its result."""
    return rewrite_json(body, request_id, lambda result: with_extensions(result, extensions))


def declare_in_sse(
    chunks: AsyncIterator[bytes], request_id: object, extensions: JsonObject
) -> AsyncIterator[bytes]:
    """An upstream's SSE response with the extensions declared in the response's result."""
    return rewrite_sse(chunks, request_id, lambda result: with_extensions(result, extensions))
