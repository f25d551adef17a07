"""LegacyChannel: many callers share one upstream session. The far side is a scripted
in-memory upstream (the only fake: the channel itself runs for real)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bastion.config.model import Timeouts
from bastion.core.errors import UpstreamFailed, UpstreamTimeout
from bastion.upstream.channel import LegacyChannel
from bastion.upstream.routes import CallRoute, LocalBroker

JsonObject = dict[str, Any]


class ScriptedUpstream:
    """Records what the channel sends; answers initialize; the test drives the rest."""

    def __init__(self, channel: LegacyChannel) -> None:
        self.channel = channel
        self.sent: list[JsonObject] = []
        self.closed = False

    async def send(self, message: JsonObject) -> None:
        self.sent.append(message)
        if message.get("method") == "initialize":
            result = {
                "protocolVersion": "2025-11-25",
                "capabilities": {},
                "serverInfo": {"name": "s", "version": "1"},
            }
            asyncio.get_running_loop().call_soon(
                self.channel.on_message, {"jsonrpc": "2.0", "id": message["id"], "result": result}
            )

    async def close(self) -> None:
        self.closed = True

    def last(self, method: str) -> JsonObject:
        return [m for m in self.sent if m.get("method") == method][-1]


async def open_channel(request_timeout: float = 5.0) -> tuple[LegacyChannel, ScriptedUpstream]:
    channel = LegacyChannel(
        "up",
        {"protocolVersion": "2025-11-25", "capabilities": {}},
        Timeouts(connect=1, request=request_timeout),
    )
    upstream = ScriptedUpstream(channel)
    channel.attach(upstream)
    await channel.handshake()
    assert upstream.sent[1] == {"jsonrpc": "2.0", "method": "notifications/initialized"}
    return channel, upstream


async def test_ids_are_rewritten_and_restored() -> None:
    channel, upstream = await open_channel()
    route_a, route_b = CallRoute(None), CallRoute(None)
    call_a = asyncio.ensure_future(
        channel.request({"jsonrpc": "2.0", "id": "same", "method": "tools/list"}, route_a)
    )
    call_b = asyncio.ensure_future(
        channel.request({"jsonrpc": "2.0", "id": "same", "method": "tools/list"}, route_b)
    )
    await asyncio.sleep(0)
    ids = [m["id"] for m in upstream.sent if m.get("method") == "tools/list"]
    assert len(set(ids)) == 2  # two callers with the same id do not collide upstream
    channel.on_message({"jsonrpc": "2.0", "id": ids[1], "result": {"tools": ["b"]}})
    channel.on_message({"jsonrpc": "2.0", "id": ids[0], "result": {"tools": ["a"]}})
    assert await call_a == {"jsonrpc": "2.0", "id": "same", "result": {"tools": ["a"]}}
    assert await call_b == {"jsonrpc": "2.0", "id": "same", "result": {"tools": ["b"]}}


async def test_progress_tokens_are_private_per_call() -> None:
    channel, upstream = await open_channel()
    route = CallRoute(None)
    message = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": "x", "_meta": {"progressToken": 7}},
    }
    call = asyncio.ensure_future(channel.request(message, route))
    await asyncio.sleep(0)
    sent = upstream.last("tools/call")
    token = sent["params"]["_meta"]["progressToken"]
    assert token != 7
    channel.on_message(
        {
            "jsonrpc": "2.0",
            "method": "notifications/progress",
            "params": {"progressToken": token, "progress": 1},
        }
    )
    channel.on_message(
        {
            "jsonrpc": "2.0",
            "method": "notifications/progress",
            "params": {"progressToken": "other", "progress": 9},
        }
    )
    channel.on_message({"jsonrpc": "2.0", "id": sent["id"], "result": {"content": []}})
    await call
    route.finish({})
    received = [m async for m in route.messages()]
    assert received[0]["params"] == {"progressToken": 7, "progress": 1}
    assert len(received) == 2  # the foreign token was not delivered


async def test_server_request_reaches_the_caller_and_the_answer_goes_back() -> None:
    channel, upstream = await open_channel()
    broker = LocalBroker()
    route = CallRoute(broker)
    call = asyncio.ensure_future(
        channel.request({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {}}, route)
    )
    await asyncio.sleep(0)
    channel.on_message(
        {"jsonrpc": "2.0", "id": "srv-1", "method": "elicitation/create", "params": {"message": "?"}}
    )
    stream = route.messages()
    asked = await anext(stream)
    assert asked["method"] == "elicitation/create"
    assert asked["id"] != "srv-1"  # numbered by the client side
    assert broker.resolve({"jsonrpc": "2.0", "id": asked["id"], "result": {"action": "accept"}})
    await asyncio.sleep(0.01)
    assert {"jsonrpc": "2.0", "id": "srv-1", "result": {"action": "accept"}} in upstream.sent
    channel.on_message({"jsonrpc": "2.0", "id": upstream.last("tools/call")["id"], "result": {}})
    assert (await call)["id"] == 1


async def test_ping_from_server_is_answered_without_a_caller() -> None:
    channel, upstream = await open_channel()
    channel.on_message({"jsonrpc": "2.0", "id": 99, "method": "ping"})
    await asyncio.sleep(0.01)
    assert {"jsonrpc": "2.0", "id": 99, "result": {}} in upstream.sent


async def test_unanswerable_server_request_gets_an_error() -> None:
    channel, upstream = await open_channel()
    channel.on_message({"jsonrpc": "2.0", "id": 5, "method": "sampling/createMessage", "params": {}})
    await asyncio.sleep(0.01)
    (reply,) = [m for m in upstream.sent if m.get("id") == 5]
    assert reply["error"]["code"] == -32601


async def test_timeout_cancels_upstream() -> None:
    channel, upstream = await open_channel(request_timeout=0.05)
    with pytest.raises(UpstreamTimeout):
        await channel.request(
            {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {}}, CallRoute(None)
        )
    cancelled = upstream.last("notifications/cancelled")
    assert cancelled["params"]["requestId"] == upstream.last("tools/call")["id"]


async def test_lost_transport_fails_pending_calls() -> None:
    channel, _ = await open_channel()
    call = asyncio.ensure_future(channel.request({"jsonrpc": "2.0", "id": 1, "method": "x"}, CallRoute(None)))
    await asyncio.sleep(0)
    channel.transport_lost("process exited (code 1)")
    with pytest.raises(UpstreamFailed, match="process exited"):
        await call


async def test_client_cancellation_is_forwarded() -> None:
    channel, upstream = await open_channel()
    call = asyncio.ensure_future(
        channel.request({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {}}, CallRoute(None))
    )
    await asyncio.sleep(0)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    await asyncio.sleep(0.01)
    assert (
        upstream.last("notifications/cancelled")["params"]["requestId"] == upstream.last("tools/call")["id"]
    )
