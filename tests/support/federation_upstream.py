"""Real MCP clients through the IdP (``tests/interop/test_federation_clients_*.py``): Bastion in
front of the Entra-like IdP with an in-process MCP upstream that keeps every request it receives,
the proof of what reached the upstream and of what did not."""

from __future__ import annotations

import contextlib
import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.types import Receive, Scope, Send

from tests.support.federation import Federation, bastion_with_entra
from tests.support.idp import require_idp_packages
from tests.support.tls import serve_asgi

NOTES_TOOLS = [
    {
        "name": "add_note",
        "description": "Add a note.",
        "inputSchema": {
            "type": "object",
            "properties": {"title": {"type": "string"}, "body": {"type": "string"}},
            "required": ["title"],
        },
    },
    {"name": "list_notes", "description": "List the notes.", "inputSchema": {"type": "object"}},
]


@dataclass
class UpstreamRequest:
    method: str  # HTTP method
    headers: dict[str, str]  # lower-case names
    message: dict[str, Any] | None  # the JSON-RPC message of a POST


class NotesUpstream:
    """A legacy-era (2025-11-25) MCP server over HTTP in the test process with the demo's
    ``add_note`` / ``list_notes`` tools, keeping every request it receives (headers and JSON-RPC
    message): the proof of what reached the upstream, and of what did not."""

    def __init__(self) -> None:
        self.requests: list[UpstreamRequest] = []
        self.notes: list[dict[str, str]] = []
        self.url = ""

    def endpoint(self, name: str = "notes") -> dict[str, Any]:
        """The ``upstreams:`` entry for this server."""
        return {"name": name, "http": {"url": self.url}}

    @property
    def tool_calls(self) -> list[dict[str, Any]]:
        """The ``params`` of every ``tools/call`` received."""
        return [
            r.message.get("params", {})
            for r in self.requests
            if r.message is not None and r.message.get("method") == "tools/call"
        ]

    def header_values(self) -> list[tuple[str, str]]:
        return [item for r in self.requests for item in r.headers.items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        body = b""
        while True:
            event = await receive()
            body += event.get("body", b"")
            if not event.get("more_body"):
                break
        message = json.loads(body) if scope["method"] == "POST" and body else None
        self.requests.append(UpstreamRequest(scope["method"], headers, message))
        if not isinstance(message, dict):
            await self._send(send, 405 if message is None else 400, b"")
            return
        if "id" not in message:
            await self._send(send, 202, b"")
            return
        method, reply = message.get("method"), {"jsonrpc": "2.0", "id": message["id"]}
        params = message.get("params") or {}
        if method == "initialize":
            reply["result"] = {
                "protocolVersion": "2025-11-25",
                "capabilities": {"tools": {}},
                "serverInfo": {"name": "notes-recorder", "version": "1"},
            }
        elif method == "server/discover":
            reply["error"] = {"code": -32022, "message": "Unsupported protocol version"}
            reply["error"]["data"] = {"supported": ["2025-11-25"], "requested": "2026-07-28"}
        elif method == "ping":
            reply["result"] = {}
        elif method == "tools/list":
            reply["result"] = {"tools": NOTES_TOOLS}
        elif method == "tools/call" and params.get("name") == "add_note":
            args = params.get("arguments") or {}
            self.notes.append({"title": str(args.get("title", "")), "body": str(args.get("body", ""))})
            reply["result"] = {"content": [{"type": "text", "text": f"added {args.get('title')}"}]}
        elif method == "tools/call" and params.get("name") == "list_notes":
            text = "\n".join(f"{n['title']}: {n['body']}" for n in self.notes) or "no notes"
            reply["result"] = {"content": [{"type": "text", "text": text}]}
        elif method == "tools/call":
            reply["result"] = {"content": [{"type": "text", "text": "unknown tool"}], "isError": True}
        else:
            reply["error"] = {"code": -32601, "message": "Method not found"}
        session = [(b"mcp-session-id", secrets.token_urlsafe(16).encode())] if method == "initialize" else []
        await self._send(send, 400 if "error" in reply else 200, json.dumps(reply).encode(), session)

    @staticmethod
    async def _send(
        send: Send, status: int, body: bytes, extra: list[tuple[bytes, bytes]] | None = None
    ) -> None:
        headers = [(b"content-type", b"application/json")] if body else []
        headers += extra or []
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


@dataclass
class FederatedNotes:
    """Bastion in front of the Entra-like IdP, with a :class:`NotesUpstream` at ``/mcp/notes``."""

    fed: Federation
    upstream: NotesUpstream

    @property
    def url(self) -> str:
        return self.fed.gateway.url("notes")


@contextlib.contextmanager
def federated_notes(tmp: Path, **options: Any) -> Iterator[FederatedNotes]:
    """:func:`bastion_with_entra` (``options`` passed on) with a :class:`NotesUpstream`."""
    require_idp_packages()
    with notes_upstream() as upstream, bastion_with_entra(tmp, [upstream.endpoint()], **options) as fed:
        yield FederatedNotes(fed, upstream)


@contextlib.contextmanager
def notes_upstream() -> Iterator[NotesUpstream]:
    """A running :class:`NotesUpstream`; its MCP endpoint is ``.url``."""
    upstream = NotesUpstream()
    with serve_asgi(upstream) as port:
        upstream.url = f"http://127.0.0.1:{port}/mcp"
        yield upstream


def assert_no_credentials(upstream: NotesUpstream, *secret_values: str | None) -> None:
    """Nothing that authenticates anyone reached the upstream: no Authorization or Cookie
    header, no header carrying any of ``secret_values`` (tokens the test knows of), and no
    JWT-shaped value at all (Bastion's access tokens and the IdP's ID tokens are JWTs)."""
    assert upstream.requests, "the upstream saw nothing"
    known = [s for s in secret_values if s]
    for name, value in upstream.header_values():
        assert name not in ("authorization", "cookie", "proxy-authorization"), (name, value[:40])
        assert "eyJ" not in value, f"a JWT-shaped value in upstream header {name}"
        for secret in known:
            assert secret not in value, f"a token in upstream header {name}"
    for request in upstream.requests:
        text = json.dumps(request.message or {})
        for secret in known:
            assert secret not in text, "a token in a message to the upstream"
