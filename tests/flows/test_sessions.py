"""Legacy-era session lifecycle through Bastion: its own ids, GET streams, DELETE, and what a
session id can and cannot do."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest

from tests.support.gateway import Gateway
from tests.support.wire import ACCEPT, init_body


async def open_session(s: aiohttp.ClientSession, url: str) -> dict[str, str]:
    async with s.post(url, json=init_body(), headers={"accept": ACCEPT}) as r:
        assert r.status == 200
        await r.read()
        headers = {"mcp-session-id": r.headers["mcp-session-id"], "mcp-protocol-version": "2025-11-25"}
    async with s.post(
        url,
        json={"jsonrpc": "2.0", "method": "notifications/initialized"},
        headers={"accept": ACCEPT, **headers},
    ) as r:
        assert r.status == 202
    return headers


async def list_tools(s: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> int:
    body: dict[str, Any] = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}
    async with s.post(url, json=body, headers={"accept": ACCEPT, **headers}) as r:
        await r.read()
        return r.status


@pytest.mark.parametrize("endpoint", ["ev", "time", None])
async def test_delete_ends_the_session(gateway: Gateway, endpoint: str | None) -> None:
    url = gateway.url(endpoint)
    async with aiohttp.ClientSession() as s:
        session = await open_session(s, url)
        assert await list_tools(s, url, session) == 200
        async with s.delete(url, headers=session) as r:
            assert r.status in (200, 204)
        assert await list_tools(s, url, session) == 404  # the client re-initializes


async def test_session_ids_are_bastions_own(gateway: Gateway, everything_url: str) -> None:
    async with aiohttp.ClientSession() as s:
        through = await open_session(s, gateway.url("ev"))
        direct = await open_session(s, everything_url)
        assert len(through["mcp-session-id"]) >= 43  # 256 random bits
        # Bastion's id means nothing to the upstream, and the upstream's means nothing to Bastion
        assert await list_tools(s, everything_url, through) in (400, 404)
        assert await list_tools(s, gateway.url("ev"), direct) == 404


@pytest.mark.parametrize("endpoint", ["ev", "demo"])
async def test_get_stream_opens(gateway: Gateway, endpoint: str) -> None:
    url = gateway.url(endpoint)
    async with aiohttp.ClientSession() as s:
        session = await open_session(s, url)
        async with s.get(url, headers={"accept": "text/event-stream", **session}) as r:
            assert r.status == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            if endpoint == "demo":  # Bastion's own relay stream opens with a comment line
                assert await asyncio.wait_for(r.content.readany(), 5) == b": stream open\n\n"


async def test_get_without_session_on_a_relay_endpoint(gateway: Gateway) -> None:
    async with (
        aiohttp.ClientSession() as s,
        s.get(gateway.url("time"), headers={"accept": "text/event-stream"}) as r,
    ):
        assert r.status == 400
        assert json.loads(await r.read())["error"]["code"] == -32600
