"""The official Python SDK client through Bastion: every upstream kind, both eras, the
aggregate endpoint, progress, elicitation and sampling relayed with ids intact."""

from __future__ import annotations

from typing import Any

import pytest
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client
from mcp_types import CreateMessageResult, ElicitResult, TextContent

from tests.support.gateway import Gateway

MODES = ["legacy", "auto"]  # auto = 2026-07-28 when the endpoint answers server/discover


class Recorder:
    def __init__(self) -> None:
        self.progress: list[float] = []
        self.elicitations: list[str] = []
        self.samplings: int = 0

    async def on_progress(self, progress: float, total: float | None, message: str | None) -> None:
        self.progress.append(progress)

    async def elicit(self, context: Any, params: Any) -> ElicitResult:
        self.elicitations.append(params.message)
        schema = getattr(params, "requested_schema", None) or {}
        props = schema.get("properties", {}) if isinstance(schema, dict) else {}
        content: dict[str, Any] = {}
        for key, spec in props.items():
            content[key] = True if spec.get("type") == "boolean" else "yes"
        return ElicitResult(action="accept", content=content)

    async def sample(self, context: Any, params: Any) -> CreateMessageResult:
        self.samplings += 1
        return CreateMessageResult(
            role="assistant", content=TextContent(type="text", text="sampled-by-test"), model="test-model"
        )


def client(url: str, mode: str, rec: Recorder) -> Client:
    return Client(
        streamable_http_client(url),
        mode=mode,  # type: ignore[arg-type]
        elicitation_callback=rec.elicit,
        sampling_callback=rec.sample,
    )


def text_of(result: Any) -> str:
    return " ".join(c.text for c in result.content if getattr(c, "type", "") == "text")


def era_of(c: Client) -> str:
    return "modern" if c.session.discover_result is not None else "legacy"


@pytest.mark.parametrize("mode", MODES)
async def test_http_upstream_tools_resources_prompts(gateway: Gateway, mode: str) -> None:
    rec = Recorder()
    async with client(gateway.url("ev"), mode, rec) as c:
        assert era_of(c) == ("legacy" if mode == "legacy" else "modern")
        names = {t.name for t in (await c.list_tools()).tools}
        assert {"test_simple_text", "test_tool_with_progress", "test_elicitation"} <= names
        assert "simple text" in text_of(await c.call_tool("test_simple_text", {}))
        await c.call_tool("test_tool_with_progress", {}, progress_callback=rec.on_progress)
        assert rec.progress == [0, 50, 100]
        if mode == "legacy":  # a server→client request relayed on the call's SSE stream
            answer = text_of(await c.call_tool("test_elicitation", {"message": "Proceed?"}))
            assert rec.elicitations == ["Proceed?"]
            assert "action=accept" in answer
        else:  # 2026-07-28: input_required result, the client retries with inputResponses
            await c.call_tool("test_input_required_result_elicitation", {})
            assert rec.elicitations == ["What is your name?"]
        contents = (await c.read_resource("test://static-text")).contents
        assert contents[0].uri == "test://static-text"
        prompt = await c.get_prompt("test_prompt_with_arguments", {"arg1": "a", "arg2": "b"})
        assert prompt.messages


async def test_http_upstream_sampling_legacy(gateway: Gateway) -> None:
    rec = Recorder()
    async with client(gateway.url("ev"), "legacy", rec) as c:
        assert "sampled-by-test" in text_of(await c.call_tool("test_sampling", {"prompt": "hello"}))
        assert rec.samplings == 1


@pytest.mark.parametrize("mode", MODES)
async def test_stdio_time_server(gateway: Gateway, mode: str) -> None:
    rec = Recorder()
    async with client(gateway.url("time"), mode, rec) as c:
        names = {t.name for t in (await c.list_tools()).tools}
        assert names == {"get_current_time", "convert_time"}
        assert '"timezone": "UTC"' in text_of(await c.call_tool("get_current_time", {"timezone": "UTC"}))


@pytest.mark.parametrize("mode", MODES)
async def test_stdio_demo_progress_and_elicitation(gateway: Gateway, mode: str) -> None:
    """Legacy: the demo server's elicitation/create is relayed on the call's stream.
    Modern: Bastion turns it into an input_required result and resumes the held call."""
    rec = Recorder()
    async with client(gateway.url("demo"), mode, rec) as c:
        await c.call_tool("count_down", {"seconds": 2}, progress_callback=rec.on_progress)
        assert len(rec.progress) >= 2
        answer = text_of(await c.call_tool("confirm_action", {"action": "archive the notes"}))
        assert len(rec.elicitations) == 1
        assert "archive the notes" in rec.elicitations[0]
        assert "confirm" in answer.lower()


@pytest.mark.parametrize("mode", MODES)
async def test_aggregate_endpoint(gateway: Gateway, mode: str) -> None:
    rec = Recorder()
    async with client(gateway.url(), mode, rec) as c:
        names = {t.name for t in (await c.list_tools()).tools}
        assert {"ev__test_simple_text", "time__get_current_time", "demo__add_note"} <= names
        assert "simple text" in text_of(await c.call_tool("ev__test_simple_text", {}))
        assert "UTC" in text_of(await c.call_tool("time__get_current_time", {"timezone": "UTC"}))
        uris = {str(r.uri) for r in (await c.list_resources()).resources}
        assert "ev+test://static-text" in uris
        contents = (await c.read_resource("ev+test://static-text")).contents
        assert str(contents[0].uri) == "ev+test://static-text"
        prompts = {p.name for p in (await c.list_prompts()).prompts}
        assert "ev__test_simple_prompt" in prompts
        assert (await c.get_prompt("ev__test_simple_prompt")).messages


async def test_aggregate_relays_progress_and_elicitation_legacy(gateway: Gateway) -> None:
    rec = Recorder()
    async with client(gateway.url(), "legacy", rec) as c:
        await c.call_tool("ev__test_tool_with_progress", {}, progress_callback=rec.on_progress)
        assert rec.progress == [0, 50, 100]
        assert "action=accept" in text_of(await c.call_tool("ev__test_elicitation", {"message": "ok?"}))
        assert rec.elicitations == ["ok?"]
