"""A modern client in front of a legacy-only upstream, and a legacy client in front of a
modern-only upstream: tools, resources, prompts, progress and input from the user all work."""

from __future__ import annotations

import pytest

from tests.flows.test_sdk_clients import Recorder, client, era_of, text_of
from tests.support.gateway import Gateway


async def exercise(
    c: object, rec: Recorder, elicitation_tool: str, prefix: str = "", uri_prefix: str = ""
) -> None:
    from mcp.client.client import Client

    assert isinstance(c, Client)
    names = {t.name for t in (await c.list_tools()).tools}
    assert f"{prefix}test_simple_text" in names
    assert "simple text" in text_of(await c.call_tool(f"{prefix}test_simple_text", {}))
    await c.call_tool(f"{prefix}test_tool_with_progress", {}, progress_callback=rec.on_progress)
    assert rec.progress == [0, 50, 100]
    await c.call_tool(
        f"{prefix}{elicitation_tool}",
        {"message": "Bridge?"} if elicitation_tool == "test_elicitation" else {},
    )
    assert len(rec.elicitations) == 1
    contents = (await c.read_resource(f"{uri_prefix}test://static-text")).contents
    assert "static text resource" in contents[0].text  # type: ignore[union-attr]
    prompt = await c.get_prompt(f"{prefix}test_prompt_with_arguments", {"arg1": "a", "arg2": "b"})
    assert prompt.messages


async def test_modern_client_legacy_only_upstream(bridge_gateway: Gateway) -> None:
    """Bastion answers server/discover and turns the upstream's elicitation/create into input_required."""
    rec = Recorder()
    async with client(bridge_gateway.url("old"), "auto", rec) as c:
        assert era_of(c) == "modern"
        await exercise(c, rec, "test_elicitation")


async def test_legacy_client_modern_only_upstream(bridge_gateway: Gateway) -> None:
    """Bastion answers initialize and resolves the upstream's input_required by asking the client."""
    rec = Recorder()
    async with client(bridge_gateway.url("new"), "legacy", rec) as c:
        assert era_of(c) == "legacy"
        await exercise(c, rec, "test_input_required_result_elicitation")


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_aggregate_over_both(bridge_gateway: Gateway, mode: str) -> None:
    rec = Recorder()
    async with client(bridge_gateway.url(), mode, rec) as c:
        names = {t.name for t in (await c.list_tools()).tools}
        assert {"old__test_simple_text", "new__test_simple_text"} <= names
        for prefix in ("old__", "new__"):
            assert "simple text" in text_of(await c.call_tool(f"{prefix}test_simple_text", {}))
            contents = (await c.read_resource(f"{prefix[:-2]}+test://static-text")).contents
            assert "static text resource" in contents[0].text  # type: ignore[union-attr]
