"""Rewriting the result of ONE response in an upstream's reply, leaving every other byte alone.

Used on the passthrough path for the few responses Bastion must change: the extensions it
declares in ``initialize`` / ``server/discover`` results, and list results filtered by policy.
A JSON body is parsed and dumped again; an SSE stream is relayed event by event until the
response to the request, then chunk by chunk.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson

from bastion.core.sse import SseDecoder, sse_event

JsonObject = dict[str, Any]
ResultRewrite = Callable[[JsonObject], JsonObject]

_EOL = re.compile(rb"\r\n|\r|\n")
_MAX_EVENT = 1024 * 1024  # an SSE event larger than this is relayed as is


def _rewritten(message: object, request_id: object, rewrite: ResultRewrite) -> JsonObject | None:
    """The response to ``request_id`` with its result rewritten, or None if it is not one."""
    if (
        not isinstance(message, dict)
        or "method" in message
        or message.get("id") != request_id
        or not isinstance(message.get("result"), dict)
    ):
        return None
    return {**message, "result": rewrite(message["result"])}


def rewrite_json(body: bytes, request_id: object, rewrite: ResultRewrite) -> bytes:
    """A JSON response body from an upstream, with the result of the response to
    ``request_id`` rewritten (anything else: the bytes unchanged)."""
    try:
        message = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body
    rewritten = _rewritten(message, request_id, rewrite)
    return body if rewritten is None else orjson.dumps(rewritten)


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


def _rewrite_event(raw: bytes, request_id: object, rewrite: ResultRewrite) -> bytes | None:
    events = SseDecoder().feed(raw)
    if len(events) != 1 or events[0].event != "message":
        return None
    event = events[0]
    try:
        rewritten = _rewritten(orjson.loads(event.data), request_id, rewrite)
    except orjson.JSONDecodeError:
        return None
    if rewritten is None:
        return None
    retry = b"" if event.retry is None else b"retry: %d\n" % event.retry
    return retry + sse_event(orjson.dumps(rewritten), event.id)


async def rewrite_sse(
    chunks: AsyncIterator[bytes], request_id: object, rewrite: ResultRewrite
) -> AsyncIterator[bytes]:
    """An upstream's SSE response, relayed event by event until the response to ``request_id``
    (its result rewritten), then chunk by chunk; every other event keeps its bytes."""
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
                rewritten = _rewrite_event(raw, request_id, rewrite)
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
            buffer = _rewrite_event(buffer + b"\n", request_id, rewrite) or buffer
        if buffer:
            yield buffer
    finally:
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(RuntimeError):  # already running: its consumer closes it
                await aclose()
