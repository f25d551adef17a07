"""Real MCP clients through the IdP (``tests/interop/test_federation_clients_*.py``): Bastion in
front of the Entra-like IdP with an in-process MCP upstream that keeps every request it receives,
the proof of what reached the upstream and of what did not."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.federation import Federation, bastion_with_entra
from tests.support.idp import require_idp_packages
from tests.support.recording import RecordingUpstream, serve_upstream

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


class NotesUpstream(RecordingUpstream):
    """A :class:`RecordingUpstream` with the demo's ``add_note`` / ``list_notes`` tools."""

    name = "notes-recorder"
    tools = NOTES_TOOLS

    def __init__(self) -> None:
        super().__init__()
        self.notes: list[dict[str, str]] = []

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

    def call(self, params: dict[str, Any]) -> dict[str, Any]:
        if params.get("name") == "add_note":
            args = params.get("arguments") or {}
            self.notes.append({"title": str(args.get("title", "")), "body": str(args.get("body", ""))})
            return {"content": [{"type": "text", "text": f"added {args.get('title')}"}]}
        if params.get("name") == "list_notes":
            text = "\n".join(f"{n['title']}: {n['body']}" for n in self.notes) or "no notes"
            return {"content": [{"type": "text", "text": text}]}
        return {"content": [{"type": "text", "text": "unknown tool"}], "isError": True}


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
    with serve_upstream(upstream):
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
