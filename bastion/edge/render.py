"""The only module that turns Bastion's errors and replies into HTTP bytes.

JSON-RPC errors carry the public message only; the private ``detail`` goes to the log.
HTTP status follows the MCP transport: protocol-level faults get 4xx, method-level errors
200 in the legacy era, and the 2026-07-28 table (-32601 → 404, -32602/-32020/-32022 → 400).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson

from bastion.core.errors import BastionError, HttpMethodNotAllowed, MethodNotFound, Unauthorized
from bastion.core.records import Era, RequestId
from bastion.core.sse import sse_event

Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

JSON_HEADERS: tuple[tuple[bytes, bytes], ...] = ((b"content-type", b"application/json"),)
SSE_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache, no-transform"),
    (b"x-accel-buffering", b"no"),
)


def error_object(code: int, message: str, data: object = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return error


def error_message(
    request_id: RequestId | None, code: int, message: str, data: object = None
) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "error": error_object(code, message, data)}


def error_body(request_id: RequestId | None, err: BastionError) -> bytes:
    return orjson.dumps(error_message(request_id, err.code, err.message, err.data))


def status_for(err: BastionError, era: Era | None) -> int:
    """HTTP status for an error answering a request of the given era."""
    if isinstance(err, MethodNotFound) and era is not Era.MODERN:
        return 200
    if isinstance(err, Unauthorized):
        return err.http_status
    return err.status


async def send_bytes(
    send: Send, status: int, headers: tuple[tuple[bytes, bytes], ...] | list[tuple[bytes, bytes]], body: bytes
) -> None:
    all_headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": all_headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def send_json(
    send: Send, status: int, message: dict[str, Any], extra: tuple[tuple[bytes, bytes], ...] = ()
) -> None:
    await send_bytes(send, status, (*JSON_HEADERS, *extra), orjson.dumps(message))


async def send_empty(send: Send, status: int, extra: tuple[tuple[bytes, bytes], ...] = ()) -> None:
    await send_bytes(send, status, extra, b"")


async def send_error(send: Send, err: BastionError, request_id: RequestId | None, era: Era | None) -> int:
    """Render ``err`` as a JSON-RPC error response; returns the HTTP status sent."""
    status = status_for(err, era)
    extra: tuple[tuple[bytes, bytes], ...] = ()
    if isinstance(err, HttpMethodNotAllowed):
        extra = ((b"allow", b"GET, POST, DELETE"),)
    elif isinstance(err, Unauthorized):
        extra = ((b"www-authenticate", err.challenge.encode("latin-1")), (b"cache-control", b"no-store"))
    await send_bytes(send, status, (*JSON_HEADERS, *extra), error_body(request_id, err))
    return status


async def send_sse_error_event(send: Send, request_id: RequestId | None, err: BastionError) -> None:
    """Mid-stream failure after headers were sent: end the stream with a JSON-RPC error event."""
    await send(
        {"type": "http.response.body", "body": sse_event(error_body(request_id, err)), "more_body": True}
    )
