"""A minimal legacy-era MCP server over HTTP, in the test process, that records the headers of
every request it receives (what reached the upstream: never the client's token)."""

from __future__ import annotations

import contextlib
import json
import secrets
from collections.abc import Iterator
from typing import Any

from tests.support.tls import serve_asgi


class RecordingUpstream:
    """A legacy-era MCP server (HTTP, in this process) that answers initialize and tools/list
    and records the headers of every request it receives. Cheaper than a stdio upstream, which
    costs a Python process start on first use."""

    def __init__(self) -> None:
        self.requests: list[dict[str, str]] = []
        self.url = ""

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        self.requests.append({k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]})
        body = b""
        while True:
            event = await receive()
            body += event.get("body", b"")
            if not event.get("more_body"):
                break
        if scope["method"] != "POST":
            await self._send(send, 405, b"")
            return
        message = json.loads(body)
        if "id" not in message:
            await self._send(send, 202, b"")
            return
        method, reply = message.get("method"), {"jsonrpc": "2.0", "id": message["id"]}
        if method == "initialize":
            reply["result"] = {
                "protocolVersion": "2025-11-25",
                "capabilities": {"tools": {}},
                "serverInfo": {"name": "recorder", "version": "1"},
            }
        elif method == "server/discover":
            reply["error"] = {"code": -32022, "message": "Unsupported protocol version"}
            reply["error"]["data"] = {"supported": ["2025-11-25"], "requested": "2026-07-28"}
        elif method == "tools/list":
            reply["result"] = {"tools": [{"name": "echo", "inputSchema": {"type": "object"}}]}
        else:
            reply["error"] = {"code": -32601, "message": "Method not found"}
        session = [(b"mcp-session-id", secrets.token_urlsafe(16).encode())] if method == "initialize" else []
        await self._send(send, 400 if "error" in reply else 200, json.dumps(reply).encode(), session)

    @staticmethod
    async def _send(
        send: Any, status: int, body: bytes, extra: list[tuple[bytes, bytes]] | None = None
    ) -> None:
        headers = [(b"content-type", b"application/json")] if body else []
        headers += extra or []
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


@contextlib.contextmanager
def recording_upstream() -> Iterator[RecordingUpstream]:
    """A running :class:`RecordingUpstream`; its MCP endpoint is ``.url``."""
    upstream = RecordingUpstream()
    with serve_asgi(upstream) as port:
        upstream.url = f"http://127.0.0.1:{port}/mcp"
        yield upstream
