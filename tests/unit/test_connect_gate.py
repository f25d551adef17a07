"""The connect gate: how a missing connection is asked for in each era, and the requestState of
the 2026-07-28 retry (MAC-protected, bound to the user, upstream, request, and a deadline)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
import pytest
from mcp_types import CLIENT_CAPABILITIES_META_KEY

from bastion.core.errors import ConnectionRequired, InvalidParams
from bastion.core.records import Era, InboundCall, Principal, request_call
from bastion.core.replies import MessageReply, Reply
from bastion.upstream import connect_gate
from bastion.upstream.connect_gate import ConnectGate, modern_capabilities, url_elicitation_declared

ALICE = Principal(subject="u-alice", client_id="claude", authenticated=True, username="alice")
BOB = Principal(subject="u-bob", client_id="claude", authenticated=True, username="bob")
URL_CAPS = {"elicitation": {"form": {}, "url": {}}}
KEY = b"k" * 32


def _err() -> ConnectionRequired:
    return ConnectionRequired(
        "crm",
        connection="salesforce",
        label="Salesforce",
        url="https://bastion.example/connect/salesforce?intent=abc",
        elicitation_id="el-1",
    )


def _call(
    method: str = "tools/call", *, era: Era = Era.MODERN, caps: Any = None, **params: Any
) -> InboundCall:
    body: dict[str, Any] = {"name": "search", "arguments": {"q": "acme"}} if method == "tools/call" else {}
    body.update(params)
    if caps is not None:
        body["_meta"] = {CLIENT_CAPABILITIES_META_KEY: caps}
    return request_call("crm", method, body, era=era)


async def _one(reply: Reply) -> dict[str, Any]:
    assert isinstance(reply, MessageReply)
    messages = [m async for m in reply.messages]
    assert len(messages) == 1
    return messages[0]


def _retry(call: InboundCall, state: str, action: str = "accept") -> InboundCall:
    params = {
        **call.params,
        "requestState": state,
        "inputResponses": {"bastion_connect_salesforce": {"action": action}},
    }
    message = {**call.message, "id": 2, "params": params}
    return call._replace(message=message, body=orjson.dumps(message), request_id=2)


def test_capability_detection() -> None:
    assert url_elicitation_declared(URL_CAPS)
    assert not url_elicitation_declared({"elicitation": {}})  # form only
    assert not url_elicitation_declared({"elicitation": {"url": True}})
    assert not url_elicitation_declared(None)
    assert modern_capabilities(_call(caps=URL_CAPS)) == URL_CAPS


def test_modern_client_gets_input_required_and_its_retry_resumes() -> None:
    gate = ConnectGate(KEY)
    call = _call(caps=URL_CAPS)
    reply = asyncio.run(_one(gate.ask(call, ALICE, _err(), capabilities=URL_CAPS)))
    result = reply["result"]
    assert result["resultType"] == "input_required"
    request = result["inputRequests"]["bastion_connect_salesforce"]
    assert request == {
        "method": "elicitation/create",
        "params": {"mode": "url", "url": _err().url, "message": _err().prompt},
    }
    state = result["requestState"]
    assert state.startswith(connect_gate.STATE_PREFIX)
    assert "u-alice" not in state
    assert "alice" not in orjson.dumps(request).decode()

    retry = _retry(call, state)
    assert gate.is_retry(retry)
    resumed, declined = gate.resume(retry, ALICE, "crm")
    assert not declined
    assert "requestState" not in resumed.params
    assert "inputResponses" not in resumed.params
    assert orjson.loads(resumed.body) == resumed.message
    assert resumed.params["arguments"] == {"q": "acme"}


@pytest.mark.parametrize(
    "change",
    [
        "other_user",
        "other_upstream",
        "other_arguments",
        "other_tool",
        "tampered",
        "expired",
        "other_key",
        "garbage",
    ],
)
def test_request_state_is_refused_when_it_does_not_fit(change: str, monkeypatch: pytest.MonkeyPatch) -> None:
    gate = ConnectGate(KEY)
    call = _call(caps=URL_CAPS)
    state = asyncio.run(_one(gate.ask(call, ALICE, _err(), capabilities=URL_CAPS)))["result"]["requestState"]
    who, upstream, retry = ALICE, "crm", _retry(call, state)
    if change == "other_user":
        who = BOB
    elif change == "other_upstream":
        upstream = "github"
    elif change == "other_arguments":
        retry = _retry(_call(caps=URL_CAPS, arguments={"q": "evil"}), state)
    elif change == "other_tool":
        retry = _retry(_call(caps=URL_CAPS, name="delete_everything"), state)
    elif change == "tampered":
        payload, _, mac = state[len(connect_gate.STATE_PREFIX) :].partition(".")
        retry = _retry(call, f"{connect_gate.STATE_PREFIX}{payload[:-2]}AA.{mac}")
    elif change == "expired":
        later = time.time() + connect_gate.STATE_TTL_S + 5
        monkeypatch.setattr(connect_gate.time, "time", lambda: later)
    elif change == "other_key":
        gate = ConnectGate(b"x" * 32)
    else:
        retry = _retry(call, connect_gate.STATE_PREFIX + "not.base64!")
    with pytest.raises(InvalidParams):
        gate.resume(retry, who, upstream)


def test_a_declined_connect_ends_in_a_tool_error() -> None:
    gate = ConnectGate(KEY)
    call = _call(caps=URL_CAPS)
    state = asyncio.run(_one(gate.ask(call, ALICE, _err(), capabilities=URL_CAPS)))["result"]["requestState"]
    resumed, declined = gate.resume(_retry(call, state, "decline"), ALICE, "crm")
    assert declined
    reply = asyncio.run(_one(gate.ask(resumed, ALICE, _err(), capabilities=URL_CAPS, declined=True)))
    assert reply["result"]["isError"] is True
    assert "not connected" in reply["result"]["content"][0]["text"]


def test_legacy_client_with_url_elicitation_gets_32042() -> None:
    reply = asyncio.run(
        _one(ConnectGate(KEY).ask(_call(era=Era.LEGACY), ALICE, _err(), capabilities=URL_CAPS))
    )
    error = reply["error"]
    assert error["code"] == -32042
    assert error["data"] == {
        "elicitations": [
            {"mode": "url", "elicitationId": "el-1", "url": _err().url, "message": _err().prompt}
        ]
    }


@pytest.mark.parametrize("era", [Era.LEGACY, Era.MODERN])
def test_client_without_url_elicitation_gets_the_link_in_a_tool_error(era: Era) -> None:
    caps = {"elicitation": {}}
    reply = asyncio.run(_one(ConnectGate(KEY).ask(_call(era=era), ALICE, _err(), capabilities=caps)))
    result = reply["result"]
    assert result["isError"] is True
    assert _err().url in result["content"][0]["text"]
    assert ("resultType" in result) == (era is Era.MODERN)


def test_prompts_and_resources_without_url_elicitation_get_an_error_with_the_link() -> None:
    with pytest.raises(ConnectionRequired) as caught:
        ConnectGate(KEY).ask(_call("prompts/get", name="p"), ALICE, _err(), capabilities={})
    assert _err().url in caught.value.message


@pytest.mark.parametrize(
    ("method", "key"),
    [("tools/list", "tools"), ("prompts/list", "prompts"), ("resources/list", "resources")],
)
def test_lists_are_empty_until_the_user_connects(method: str, key: str) -> None:
    reply = ConnectGate.unconnected(_call(method, era=Era.MODERN), _err())
    assert reply is not None
    result = asyncio.run(_one(reply))["result"]
    assert result[key] == []
    assert result["cacheScope"] == "private"
    assert ConnectGate.unconnected(_call("completion/complete"), _err()) is None


def test_pending_handshake_results_name_the_connection() -> None:
    init = ConnectGate.pending_initialize("2025-11-25", _err(), "crm")
    assert init["protocolVersion"] == "2025-11-25"
    assert "Salesforce" in init["instructions"]
    discover = ConnectGate.pending_discover(_err(), "crm")
    assert discover["resultType"] == "complete"
    assert discover["capabilities"]["tools"]["listChanged"]
