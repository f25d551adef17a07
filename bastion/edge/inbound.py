"""Parse one HTTP request to an MCP endpoint into an :class:`InboundCall`.

Checks run in a fixed order, each raising a typed error:
HTTP method → Host/Origin → content type → Accept → body size → JSON → one JSON-RPC object
→ era → (modern) routing headers vs body. Nothing here performs I/O beyond reading the body.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson
from mcp.shared.inbound import (
    InboundLadderRejection,
    classify_inbound_request,
    find_duplicated_routing_header,
)
from mcp_types import PROTOCOL_VERSION_META_KEY
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from bastion.core.errors import (
    BodyTooLarge,
    ClientError,
    HeaderMismatch,
    HttpMethodNotAllowed,
    InvalidParams,
    InvalidRequest,
    NotAcceptable,
    ParseError,
    UnsupportedMediaType,
    UnsupportedProtocolVersion,
)
from bastion.core.records import Era, InboundCall, MessageKind
from bastion.edge.guards import HostGuard

Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]

_MODERN = frozenset(MODERN_PROTOCOL_VERSIONS)
_NAME_KEYS = {"tools/call": "name", "prompts/get": "name", "resources/read": "uri"}
_FORWARDED_PREFIX = "mcp-param-"
_REJECTION_ERRORS: dict[int, type[ClientError]] = {
    -32020: HeaderMismatch,
    -32022: UnsupportedProtocolVersion,
    -32602: InvalidParams,
    -32600: InvalidRequest,
}


async def read_body(receive: Receive, limit: int, declared: str | None) -> bytes:
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"Request body too large (limit {limit} bytes)")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise InvalidRequest("client disconnected while sending the body")
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge(f"Request body too large (limit {limit} bytes)")
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _headers(raw: list[tuple[bytes, bytes]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in raw:
        # RFC 9110 §5.5: leading/trailing whitespace is not part of a field value
        out[key.decode("latin-1")] = value.decode("latin-1").strip(" \t")
    return out


def _accepts_post(accept: str) -> None:
    lowered = accept.lower()
    if not accept or "*/*" in lowered or "application/json" in lowered or "text/event-stream" in lowered:
        return
    raise NotAcceptable("Not Acceptable: the client must accept application/json and text/event-stream")


def _era_of(message: dict[str, Any], version_header: str | None) -> Era:
    if version_header in _MODERN or message.get("method") == "server/discover":
        return Era.MODERN
    params = message.get("params")
    if isinstance(params, dict):
        meta = params.get("_meta")
        if isinstance(meta, dict) and PROTOCOL_VERSION_META_KEY in meta:
            return Era.MODERN
    return Era.LEGACY


def _kind_of(message: dict[str, Any]) -> MessageKind:
    if message.get("jsonrpc") != "2.0":
        raise InvalidRequest('Invalid Request: jsonrpc must be "2.0"')
    has_id = "id" in message
    if has_id:
        request_id = message["id"]
        if isinstance(request_id, bool) or not isinstance(request_id, str | int):
            raise InvalidRequest("Invalid Request: id must be a string or an integer")
    if "method" in message:
        if not isinstance(message["method"], str):
            raise InvalidRequest("Invalid Request: method must be a string")
        if "params" in message and not isinstance(message["params"], dict):
            raise InvalidRequest("Invalid Request: params must be an object")
        return MessageKind.REQUEST if has_id else MessageKind.NOTIFICATION
    if has_id and ("result" in message or "error" in message):
        return MessageKind.RESPONSE
    raise InvalidRequest("Invalid Request: not a JSON-RPC request, notification or response")


def _check_modern(message: dict[str, Any], headers: dict[str, str], raw: list[tuple[bytes, bytes]]) -> None:
    duplicated = find_duplicated_routing_header((k.decode("latin-1"), "") for k, _ in raw)
    if duplicated is not None:
        raise HeaderMismatch(f"{duplicated} header appears more than once")
    verdict = classify_inbound_request(
        message, headers=headers, supported_modern_versions=MODERN_PROTOCOL_VERSIONS
    )
    if isinstance(verdict, InboundLadderRejection):
        error_type = _REJECTION_ERRORS.get(verdict.code, InvalidRequest)
        raise error_type(verdict.message, data=verdict.data)


async def read_call(
    scope: MutableMapping[str, Any],
    receive: Receive,
    *,
    endpoint: str | None,
    guard: HostGuard,
    max_body: int,
) -> InboundCall:
    raw: list[tuple[bytes, bytes]] = scope["headers"]
    headers = _headers(raw)
    method = scope["method"]
    guard.check(headers.get("host"), headers.get("origin"))
    trace_id = headers.get("x-request-id") or secrets.token_hex(8)
    trace_id = trace_id[:64]
    session_id = headers.get("mcp-session-id")
    version = headers.get("mcp-protocol-version")
    accept = headers.get("accept", "")
    if method in ("GET", "DELETE"):
        return InboundCall(
            endpoint=endpoint,
            http_method=method,
            era=Era.MODERN if version in _MODERN else Era.LEGACY,
            kind=None,
            method=None,
            request_id=None,
            name=None,
            protocol_version=version,
            session_id=session_id,
            accept=accept,
            body=b"",
            message={},
            trace_id=trace_id,
            last_event_id=headers.get("last-event-id"),
        )
    if method != "POST":
        raise HttpMethodNotAllowed("Method Not Allowed")
    content_type = headers.get("content-type", "")
    if not content_type.lower().startswith("application/json"):
        raise UnsupportedMediaType("Unsupported Media Type: the body must be application/json")
    _accepts_post(accept)
    body = await read_body(receive, max_body, headers.get("content-length"))
    try:
        message = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ParseError("Parse error: the body is not valid JSON") from None
    if isinstance(message, list):
        raise InvalidRequest("Invalid Request: JSON-RPC batches are not supported by MCP since 2025-06-18")
    if not isinstance(message, dict):
        raise InvalidRequest("Invalid Request: the body must be one JSON-RPC object")
    raw_id = message.get("id")
    try:
        kind = _kind_of(message)
        era = _era_of(message, version)
        if era is Era.MODERN and kind is MessageKind.REQUEST:
            _check_modern(message, headers, raw)
    except ClientError as err:
        if isinstance(raw_id, str | int) and not isinstance(raw_id, bool):
            err.request_id = raw_id
        raise
    rpc_method = message.get("method")
    name: str | None = None
    params = message.get("params")
    name_key = _NAME_KEYS.get(rpc_method) if isinstance(rpc_method, str) else None
    if name_key is not None and isinstance(params, dict):
        value = params.get(name_key)
        if isinstance(value, str):
            name = value
    extra = tuple((k, v) for k, v in headers.items() if k.startswith(_FORWARDED_PREFIX))
    return InboundCall(
        endpoint=endpoint,
        http_method="POST",
        era=era,
        kind=kind,
        method=rpc_method if isinstance(rpc_method, str) else None,
        request_id=message.get("id"),
        name=name,
        protocol_version=version,
        session_id=session_id,
        accept=accept,
        body=body,
        message=message,
        trace_id=trace_id,
        extra_headers=extra,
    )
