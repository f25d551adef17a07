"""Clients negotiate the era with Bastion the way the SDKs do: a modern probe on a
legacy-only endpoint falls back to initialize; a modern-only endpoint refuses initialize."""

from __future__ import annotations

import pytest
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from tests.support.gateway import Gateway


async def test_probe_on_legacy_only_endpoint_falls_back(gateway: Gateway) -> None:
    async with Client(streamable_http_client(gateway.url("ev-legacy")), mode="auto") as c:
        assert c.session.discover_result is None
        assert c.session.initialize_result is not None
        assert (await c.list_tools()).tools


async def test_modern_only_endpoint(gateway: Gateway) -> None:
    async with Client(streamable_http_client(gateway.url("ev-modern")), mode="auto") as c:
        assert c.session.discover_result is not None
        assert (await c.list_tools()).tools
    with pytest.raises(BaseException) as exc:  # noqa: PT011 - the SDK wraps it in an ExceptionGroup
        async with Client(streamable_http_client(gateway.url("ev-modern")), mode="legacy") as c:
            await c.list_tools()
    assert [e.error.code for e in leaves(exc.value) if isinstance(e, MCPError)] == [-32022]


def leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in leaves(inner)]
    return [exc]
