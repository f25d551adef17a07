"""For the tool-level policy flow tests: an issue-tracker upstream that echoes what it was asked,
the policy files, and a small MCP client speaking either era with a Bearer token."""

from __future__ import annotations

import json
from typing import Any

import httpx2

from tests.support.oauth import MCP_ACCEPT, MODERN_META
from tests.support.recording import RecordingUpstream
from tests.support.wire import LEGACY, MODERN, init_body

TOOLS = ("create_issue", "comment", "list_issues")


class IssueTracker(RecordingUpstream):
    """A GitHub-like upstream (legacy era, HTTP): each call answers with the arguments it got."""

    name = "issues"
    tools = [{"name": name, "inputSchema": {"type": "object"}} for name in TOOLS]

    def call(self, params: dict[str, Any]) -> dict[str, Any] | None:
        echo = {"tool": params.get("name"), "arguments": params.get("arguments") or {}}
        return {"content": [{"type": "text", "text": json.dumps(echo, sort_keys=True)}]}

    def calls(self) -> list[dict[str, Any]]:
        """The params of every tools/call that reached this upstream, in order."""
        return [
            r.message.get("params") or {}
            for r in self.requests
            if r.message is not None and r.message.get("method") == "tools/call"
        ]


def rule_file(group: str = "engineering", pattern: str = "acme/*", *, pad_to: int = 0) -> str:
    """The policy file of the tests: the issue's example rule for upstream ``gh`` (creating and
    commenting need ``github:write``, a group, the client ``claude`` and a repo under ``acme/``),
    and listing issues for both groups. ``pad_to`` pads it (in a comment) to that many bytes."""
    text = f"""policies:
  - id: eng-write
    upstream: gh
    tools: [create_issue, comment]
    require_scopes: ["github:write"]
    allow: {{groups: [{group}], clients: [claude]}}
    args: {{repo: {{match: "{pattern}"}}}}
  - id: read-issues
    upstream: gh
    tools: [list_issues]
    allow: {{groups: [engineering, sales]}}
"""
    if pad_to:
        assert len(text) < pad_to
        text += "#" + "-" * (pad_to - len(text) - 2) + "\n"
    return text


def rpc(response: httpx2.Response) -> dict[str, Any]:
    """The JSON-RPC message of a response (plain JSON, or the last SSE ``data:`` event)."""
    text = response.text
    if "text/event-stream" in response.headers.get("content-type", ""):
        datas = [line[5:].strip() for line in text.splitlines() if line.startswith("data:")]
        text = [d for d in datas if d][-1]
    message: dict[str, Any] = json.loads(text)
    return message


class McpClient:
    """Just enough of an MCP client, by hand: a legacy session (initialize, then Mcp-Session-Id)
    or 2026-07-28 requests (headers mirroring the body, ``_meta`` in each request)."""

    def __init__(self, http: httpx2.AsyncClient, url: str, token: str, era: str) -> None:
        self.http, self.url, self.token, self.era = http, url, token, era
        self.session: dict[str, str] | None = None
        self._id = 1

    def _headers(self, method: str, name: str | None) -> dict[str, str]:
        headers = {"accept": MCP_ACCEPT, "authorization": f"Bearer {self.token}"}
        if self.era == "modern":
            headers |= {"mcp-protocol-version": MODERN, "mcp-method": method}
            if name is not None:
                headers["mcp-name"] = name
        else:
            headers |= self.session or {}
        return headers

    async def _open(self) -> None:
        if self.era == "modern" or self.session is not None:
            return
        headers = {"accept": MCP_ACCEPT, "authorization": f"Bearer {self.token}"}
        response = await self.http.post(self.url, json=init_body(), headers=headers)
        assert response.status_code == 200, response.text
        self.session = {"mcp-protocol-version": LEGACY, "mcp-session-id": response.headers["mcp-session-id"]}
        note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
        await self.http.post(self.url, json=note, headers=self._headers("notifications/initialized", None))

    async def request(
        self, method: str, params: dict[str, Any], *, name: str | None = None, header_name: str | None = None
    ) -> httpx2.Response:
        """``header_name``: an ``Mcp-Name`` header other than the body's name (modern era)."""
        await self._open()
        self._id += 1
        if self.era == "modern":
            params = {**params, "_meta": MODERN_META}
        body = {"jsonrpc": "2.0", "id": self._id, "method": method, "params": params}
        headers = self._headers(method, header_name if header_name is not None else name)
        return await self.http.post(self.url, json=body, headers=headers)

    async def tool_names(self) -> list[str]:
        response = await self.request("tools/list", {})
        assert response.status_code == 200, response.text
        return [tool["name"] for tool in rpc(response)["result"]["tools"]]

    async def call(self, tool: str, arguments: dict[str, Any], **kw: Any) -> httpx2.Response:
        return await self.request("tools/call", {"name": tool, "arguments": arguments}, name=tool, **kw)
