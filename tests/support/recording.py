"""A minimal legacy-era MCP server over HTTP, in the test process, that keeps every request it
receives (headers and JSON-RPC message): the proof of what reached the upstream, and of what
did not (never the client's token). Cheaper than a stdio upstream, which costs a Python process
start on first use."""

from __future__ import annotations

import contextlib
import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from tests.support.tls import serve_asgi


@dataclass
class UpstreamRequest:
    method: str  # HTTP method
    headers: dict[str, str]  # lower-case names
    message: dict[str, Any] | None  # the JSON-RPC message of a POST


async def read_request(scope: dict[str, Any], receive: Any) -> tuple[dict[str, str], bytes]:
    """An ASGI request's headers (lower-cased names) and its whole body."""
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
    body = b""
    while True:
        event = await receive()
        body += event.get("body", b"")
        if not event.get("more_body"):
            return headers, body


class RecordingUpstream:
    """Answers initialize (2025-11-25 only: server/discover gets -32022), ping, tools/list and,
    through :meth:`call`, tools/call; subclasses bring their own ``tools`` and ``call``."""

    name = "recorder"
    tools: list[dict[str, Any]] = [{"name": "echo", "inputSchema": {"type": "object"}}]

    def __init__(self) -> None:
        self.requests: list[UpstreamRequest] = []
        self.url = ""

    def call(self, params: dict[str, Any]) -> dict[str, Any] | None:
        """The result of a tools/call, or None for "method not found"."""
        return None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        headers, body = await read_request(scope, receive)
        message = json.loads(body) if scope["method"] == "POST" and body else None
        self.requests.append(UpstreamRequest(scope["method"], headers, message))
        if not isinstance(message, dict):
            await self._send(send, 405 if message is None else 400, b"")
            return
        if "id" not in message:
            await self._send(send, 202, b"")
            return
        method, reply = message.get("method"), {"jsonrpc": "2.0", "id": message["id"]}
        result = self._answer(method, message.get("params") or {})
        if result is None and method == "server/discover":
            reply["error"] = {"code": -32022, "message": "Unsupported protocol version"}
            reply["error"]["data"] = {"supported": ["2025-11-25"], "requested": "2026-07-28"}
        elif result is None:
            reply["error"] = {"code": -32601, "message": "Method not found"}
        else:
            reply["result"] = result
        session = [(b"mcp-session-id", secrets.token_urlsafe(16).encode())] if method == "initialize" else []
        await self._send(send, 400 if "error" in reply else 200, json.dumps(reply).encode(), session)

    def _answer(self, method: object, params: dict[str, Any]) -> dict[str, Any] | None:
        if method == "initialize":
            return {
                "protocolVersion": "2025-11-25",
                "capabilities": {"tools": {}},
                "serverInfo": {"name": self.name, "version": "1"},
            }
        if method == "ping":
            return {}
        if method == "tools/list":
            return {"tools": self.tools}
        if method == "tools/call":
            return self.call(params)
        return None

    @staticmethod
    async def _send(
        send: Any, status: int, body: bytes, extra: list[tuple[bytes, bytes]] | None = None
    ) -> None:
        headers = [(b"content-type", b"application/json")] if body else []
        headers += extra or []
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


@contextlib.contextmanager
def serve_upstream(upstream: RecordingUpstream) -> Iterator[None]:
    """Run ``upstream`` on a free loopback port; its MCP endpoint is then ``upstream.url``."""
    with serve_asgi(upstream) as port:
        upstream.url = f"http://127.0.0.1:{port}/mcp"
        yield


@contextlib.contextmanager
def recording_upstream() -> Iterator[RecordingUpstream]:
    """A running :class:`RecordingUpstream`; its MCP endpoint is ``.url``."""
    upstream = RecordingUpstream()
    with serve_upstream(upstream):
        yield upstream
