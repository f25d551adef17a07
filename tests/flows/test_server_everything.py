"""@modelcontextprotocol/server-everything (the reference TypeScript server) over stdio, through
Bastion, with the official Python SDK client in both eras: progress and elicitation included."""

from __future__ import annotations

from typing import Any

import pytest
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client
from mcp_types import ElicitResult

from tests.flows.conftest import require_node_packages
from tests.support.gateway import Gateway


@pytest.mark.node
@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_reference_server_over_stdio(gateway: Gateway, mode: str) -> None:
    require_node_packages()
    asked: list[str] = []
    progress: list[float] = []

    async def elicit(context: Any, params: Any) -> ElicitResult:
        asked.append(params.message)
        return ElicitResult(action="decline")

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append(value)

    async with Client(
        streamable_http_client(gateway.url("everything")), mode=mode, elicitation_callback=elicit
    ) as c:  # type: ignore[arg-type]
        names = {t.name for t in (await c.list_tools()).tools}
        # the server registers its elicitation tool only for clients that declared the capability:
        # proof that the client's own capabilities reached it through Bastion
        assert {"echo", "trigger-long-running-operation", "trigger-elicitation-request"} <= names
        echoed = await c.call_tool("echo", {"message": "through bastion"})
        assert "through bastion" in echoed.content[0].text  # type: ignore[union-attr]
        await c.call_tool(
            "trigger-long-running-operation", {"duration": 1, "steps": 3}, progress_callback=on_progress
        )
        assert len(progress) == 3
        result = await c.call_tool("trigger-elicitation-request", {})
        assert asked
        assert "decline" in str(result.content).lower()
