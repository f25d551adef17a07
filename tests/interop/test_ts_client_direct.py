"""The TypeScript SDK client script (tests/node/ts_client.mjs) against the fixture server directly.

The "through Bastion" variants reuse ``run_ts_client`` with Bastion's URL (and an
``Authorization`` header in the plan) and must observe the same results.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.interop.conformance import TsClientRun, run_ts_client

pytestmark = [pytest.mark.node, pytest.mark.timeout(180)]

PLAN = {
    "calls": [
        {"name": "test_simple_text"},
        {"name": "test_tool_with_progress", "progress": True},
        {"name": "test_elicitation", "arguments": {"message": "Proceed?"}},
        {"name": "test_sampling", "arguments": {"prompt": "Capital of France?"}},
        {"name": "test_tool_with_logging"},
        {"name": "test_error_handling"},
        {"name": "no_such_tool"},
    ],
    "elicitation": {"action": "accept", "content": {"response": "yes, go"}},
    "sampling": {"text": "Paris"},
    "readResources": ["test://static-text"],
    "getPrompts": [{"name": "test_prompt_with_arguments", "arguments": {"arg1": "a", "arg2": "b"}}],
}


def _text(entry: dict[str, Any]) -> str:
    result = entry["result"]
    assert isinstance(result, dict), entry
    return "".join(c.get("text", "") for c in result["content"])


@pytest.fixture(scope="module")
def ts_run(node22: object, everything_upstream: str) -> TsClientRun:
    return run_ts_client(everything_upstream, PLAN, timeout_s=120)


def test_connects_and_lists_tools(ts_run: TsClientRun) -> None:
    assert ts_run.ok, (ts_run.output, ts_run.stderr)
    out = ts_run.output
    assert out["serverInfo"]["name"] == "bastion-everything-fixture"
    assert out["protocolVersion"] == "2025-11-25"
    assert out["sessionId"]
    names = {t["name"] for t in out["tools"]}
    assert {"test_simple_text", "test_tool_with_progress", "test_elicitation", "test_sampling"} <= names


def test_simple_call(ts_run: TsClientRun) -> None:
    entry = ts_run.call("test_simple_text")
    assert _text(entry) == "This is a simple text response for testing."
    assert entry["result"]["isError"] is False


def test_progress_notifications(ts_run: TsClientRun) -> None:
    entry = ts_run.call("test_tool_with_progress")
    assert [p["progress"] for p in entry["progress"]] == [0, 50, 100]
    assert all(p["total"] == 100 for p in entry["progress"])


def test_elicitation_auto_accept(ts_run: TsClientRun) -> None:
    entry = ts_run.call("test_elicitation")
    assert _text(entry) == 'User response: action=accept, content={"response":"yes, go"}'
    [elicitation] = ts_run.output["elicitations"]
    assert elicitation["message"] == "Proceed?"
    assert "response" in elicitation["requestedSchema"]["properties"]


def test_sampling_answered(ts_run: TsClientRun) -> None:
    assert _text(ts_run.call("test_sampling")) == "LLM response: Paris"
    assert ts_run.output["samplings"][0]["messages"][0]["content"]["text"] == "Capital of France?"


def test_logging_notifications(ts_run: TsClientRun) -> None:
    entry = ts_run.call("test_tool_with_logging")
    assert [log["data"] for log in entry["logs"]] == [
        "Tool execution started",
        "Tool processing data",
        "Tool execution completed",
    ]


def test_tool_errors(ts_run: TsClientRun) -> None:
    failing = ts_run.call("test_error_handling")
    assert failing["result"]["isError"] is True
    assert "intentionally returns an error" in _text(failing)
    unknown = ts_run.call("no_such_tool")
    # mcp 2.3.0 reports an unknown tool as a tool error result (isError), not a JSON-RPC error
    assert ("error" in unknown) or unknown["result"]["isError"] is True


def test_resources_and_prompts(ts_run: TsClientRun) -> None:
    [content] = ts_run.output["resourceContents"]["test://static-text"]
    assert content["text"] == "This is the content of the static text resource."
    [prompt] = ts_run.output["promptResults"]
    assert prompt["messages"][0]["content"]["text"] == "Prompt with arguments: arg1='a', arg2='b'"


def test_json_response_mode(node22: object, everything_server_factory: Callable[..., str]) -> None:
    url = everything_server_factory("--json-response")
    run = run_ts_client(url, {"calls": [{"name": "test_simple_text"}]}, timeout_s=60)
    assert run.ok, (run.output, run.stderr)
    assert _text(run.call("test_simple_text")) == "This is a simple text response for testing."


def test_unreachable_server_reports_error(node22: object) -> None:
    run = run_ts_client("http://127.0.0.1:9/mcp", {}, timeout_s=60)
    assert run.returncode == 1
    assert run.output["ok"] is False
    assert run.output["error"]["message"]
