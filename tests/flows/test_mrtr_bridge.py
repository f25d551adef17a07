"""The 2026-07-28 bridge for legacy upstreams that ask the client mid-call: requestState is
opaque, single use, bound to the request that created it, and forged values are refused."""

from __future__ import annotations

import json
from typing import Any

import aiohttp

from tests.support.gateway import Gateway
from tests.support.wire import MODERN


def call(
    name: str, arguments: dict[str, Any], request_id: int, **extra: Any
) -> tuple[dict[str, Any], dict[str, str]]:
    params: dict[str, Any] = {
        "name": name,
        "arguments": arguments,
        "_meta": {
            "io.modelcontextprotocol/protocolVersion": MODERN,
            "io.modelcontextprotocol/clientCapabilities": {"elicitation": {"form": {}}},
        },
        **extra,
    }
    body = {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params}
    headers = {
        "content-type": "application/json",
        "accept": "application/json, text/event-stream",
        "mcp-protocol-version": MODERN,
        "mcp-method": "tools/call",
        "mcp-name": name,
    }
    return body, headers


async def post(url: str, body: dict[str, Any], headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as s, s.post(url, data=json.dumps(body), headers=headers) as r:
        raw = (await r.read()).decode()
        if raw.startswith(("event:", "data:", ":")):
            raw = [line[5:] for line in raw.splitlines() if line.startswith("data:")][-1]
        return r.status, json.loads(raw)


async def first_round(gateway: Gateway, action: str) -> dict[str, Any]:
    body, headers = call("confirm_action", {"action": action}, 1)
    status, message = await post(gateway.url("demo"), body, headers)
    assert status == 200
    result = message["result"]
    assert message["id"] == 1
    assert result["resultType"] == "input_required"
    (request,) = result["inputRequests"].values()
    assert request["method"] == "elicitation/create"
    assert action in request["params"]["message"]
    return result


async def test_round_trip_and_single_use(gateway: Gateway) -> None:
    result = await first_round(gateway, "ship it")
    key = next(iter(result["inputRequests"]))
    answer = {key: {"action": "accept", "content": {"confirm": True}}}
    body, headers = call(
        "confirm_action", {"action": "ship it"}, 2, inputResponses=answer, requestState=result["requestState"]
    )
    status, message = await post(gateway.url("demo"), body, headers)
    assert status == 200
    assert message["id"] == 2
    assert message["result"]["resultType"] == "complete"
    assert "confirm" in json.dumps(message["result"]["content"]).lower()
    status, replay = await post(gateway.url("demo"), body, headers)  # the same state again
    assert status == 400
    assert replay["error"]["code"] == -32602


async def test_forged_state_is_refused(gateway: Gateway) -> None:
    body, headers = call(
        "confirm_action",
        {"action": "x"},
        3,
        inputResponses={"input-1": {"action": "accept"}},
        requestState="forged-" + "A" * 40,
    )
    status, message = await post(gateway.url("demo"), body, headers)
    assert status == 400
    assert message["error"]["code"] == -32602


async def test_state_bound_to_the_request_that_created_it(gateway: Gateway) -> None:
    result = await first_round(gateway, "delete everything")
    key = next(iter(result["inputRequests"]))
    body, headers = call(
        "add_note",
        {"title": "t", "body": "b"},
        4,
        inputResponses={key: {"action": "accept", "content": {"confirm": True}}},
        requestState=result["requestState"],
    )
    status, message = await post(gateway.url("demo"), body, headers)
    assert status == 400
    assert message["error"]["code"] == -32602


async def test_unanswered_retry_is_asked_again(gateway: Gateway) -> None:
    result = await first_round(gateway, "rename")
    body, headers = call(
        "confirm_action", {"action": "rename"}, 5, inputResponses={}, requestState=result["requestState"]
    )
    status, message = await post(gateway.url("demo"), body, headers)
    assert status == 200
    again = message["result"]
    assert again["resultType"] == "input_required"
    assert again["requestState"] != result["requestState"]
    assert again["inputRequests"] == result["inputRequests"]
