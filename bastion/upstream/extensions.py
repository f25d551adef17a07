"""MCP extensions Bastion itself implements, declared to clients under ``capabilities.extensions``
of every ``initialize`` (2025-11-25 and older, SEP-2133's additive property) and
``server/discover`` (2026-07-28) result it returns, merged with the upstream's own.

Today that is Enterprise-Managed Authorization, when Bastion redeems ID-JAGs at its ``/token``.
Results Bastion builds go through :func:`with_extensions`; the passthrough path rewrites only the
response to these two methods (:func:`declare_in_json`, :func:`declare_in_sse`), every other
response stays bytes. With no extension to declare nothing is touched.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from typing import Any

import orjson

from bastion.config.model import Settings
from bastion.core.sse import SseDecoder, sse_event

JsonObject = dict[str, Any]

EMA_EXTENSION = "io.modelcontextprotocol/enterprise-managed-authorization"
RESULT_METHODS = frozenset({"initialize", "server/discover"})

_EOL = re.compile(rb"\r\n|\r|\n")
_MAX_EVENT = 1024 * 1024  # an SSE event larger than this is relayed as is


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


def _declared(message: object, request_id: object, extensions: JsonObject) -> JsonObject | None:
    """The response to ``request_id`` with the extensions declared, or None if it is not one."""
    if (
        not isinstance(message, dict)
        or "method" in message
        or message.get("id") != request_id
        or not isinstance(message.get("result"), dict)
    ):
        return None
    return {**message, "result": with_extensions(message["result"], extensions)}


def declare_in_json(body: bytes, request_id: object, extensions: JsonObject) -> bytes:
    """A JSON response body from an upstream, with the extensions declared in its result."""
    try:
        message = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body
    declared = _declared(message, request_id, extensions)
    return body if declared is None else orjson.dumps(declared)


def _event_end(buffer: bytes) -> int | None:
    """Where the first complete SSE event in ``buffer`` ends (after its blank line)."""
    line_start = 0
    while True:
        eol = _EOL.search(buffer, line_start)
        if eol is None or (eol.group() == b"\r" and eol.end() == len(buffer)):
            return None  # incomplete (a lone CR at the end may be the first half of CRLF)
        if eol.start() == line_start:
            return eol.end()
        line_start = eol.end()


def _rewrite_event(raw: bytes, request_id: object, extensions: JsonObject) -> bytes | None:
    events = SseDecoder().feed(raw)
    if len(events) != 1 or events[0].event != "message":
        return None
    event = events[0]
    try:
        declared = _declared(orjson.loads(event.data), request_id, extensions)
    except orjson.JSONDecodeError:
        return None
    if declared is None:
        return None
    retry = b"" if event.retry is None else b"retry: %d\n" % event.retry
    return retry + sse_event(orjson.dumps(declared), event.id)


async def declare_in_sse(
    chunks: AsyncIterator[bytes], request_id: object, extensions: JsonObject
) -> AsyncIterator[bytes]:
    """An upstream's SSE response, relayed event by event until the response to ``request_id``
    (declared), then chunk by chunk; every other event keeps its bytes."""
    buffer = b""
    try:
        async for chunk in chunks:
            buffer += chunk
            out = b""
            while buffer:
                end = _event_end(buffer)
                if end is None:
                    break
                raw, buffer = buffer[:end], buffer[end:]
                rewritten = _rewrite_event(raw, request_id, extensions)
                if rewritten is not None:
                    out += rewritten + buffer
                    buffer = b""
                    yield out
                    async for rest in chunks:
                        yield rest
                    return
                out += raw
            if len(buffer) > _MAX_EVENT:  # not a response we can parse: relay the rest as is
                out, buffer = out + buffer, b""
                yield out
                async for rest in chunks:
                    yield rest
                return
            if out:
                yield out
        if buffer.endswith(b"\r"):  # the stream ended, so that CR ended a line: maybe the response
            buffer = _rewrite_event(buffer + b"\n", request_id, extensions) or buffer
        if buffer:
            yield buffer
    finally:
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(RuntimeError):  # already running: its consumer closes it
                await aclose()
