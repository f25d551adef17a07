"""Bastion's own extensions in initialize / server/discover results: merged with the upstream's,
and on the passthrough path the response rewritten whatever its framing, other bytes untouched."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from bastion.config.model import Settings
from bastion.upstream.extensions import (
    EMA_EXTENSION,
    declare_in_json,
    declare_in_sse,
    server_extensions,
    with_extensions,
)

EMA = {EMA_EXTENSION: {}}
INIT = {
    "protocolVersion": "2025-11-25",
    "capabilities": {"tools": {}, "extensions": {"com.example/other": {"x": 1}}},
    "serverInfo": {"name": "up", "version": "1"},
}


def test_merged_with_the_upstreams_own() -> None:
    result = with_extensions(INIT, EMA)
    assert result["capabilities"] == {
        "tools": {},
        "extensions": {"com.example/other": {"x": 1}, EMA_EXTENSION: {}},
    }
    assert result["serverInfo"] == INIT["serverInfo"]
    assert INIT["capabilities"]["extensions"] == {"com.example/other": {"x": 1}}  # not mutated
    assert with_extensions({"supportedVersions": []}, EMA)["capabilities"] == {"extensions": EMA}
    assert with_extensions(INIT, {}) is INIT


def test_declared_only_when_bastion_redeems_id_jags() -> None:
    issuer = {"issuer": "https://idp.example", "jwks": {"keys": []}}
    base: dict[str, Any] = {"public_url": "https://gw.example", "upstreams": []}
    on = Settings.model_validate({**base, "auth": {"enabled": True}, "ema": {"trusted_issuers": [issuer]}})
    assert server_extensions(on) == EMA
    assert server_extensions(Settings.model_validate({**base, "auth": {"enabled": True}})) == {}


def test_json_body() -> None:
    body = json.dumps({"jsonrpc": "2.0", "id": 7, "result": INIT}).encode()
    declared = json.loads(declare_in_json(body, 7, EMA))
    assert declared["result"]["capabilities"]["extensions"][EMA_EXTENSION] == {}
    assert declare_in_json(body, 8, EMA) is body  # another request's response
    error = b'{"jsonrpc":"2.0","id":7,"error":{"code":-32602,"message":"no"}}'
    assert declare_in_json(error, 7, EMA) is error
    assert declare_in_json(b"not json", 7, EMA) == b"not json"


async def _collect(chunks: list[bytes]) -> bytes:
    async def source() -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield chunk

    return b"".join([c async for c in declare_in_sse(source(), 1, EMA)])


def _messages(raw: bytes) -> list[Any]:
    out = []
    for block in raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n\n"):
        data = [line[5:].strip() for line in block.split(b"\n") if line.startswith(b"data:")]
        if data and any(data):
            out.append(json.loads(b"\n".join(data)))
    return out


@pytest.mark.parametrize("eol", ["\n", "\r\n", "\r"])
@pytest.mark.parametrize("size", [1, 7, 10_000])
async def test_sse_stream_any_chunking(eol: str, size: int) -> None:
    response = json.dumps({"jsonrpc": "2.0", "id": 1, "result": INIT})
    progress = json.dumps({"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progress": 1}})
    priming = f"id: 1{eol}data: {eol}retry: 100{eol}{eol}"
    note = f"event: message{eol}data: {progress}{eol}{eol}"
    final = f"id: 2{eol}event: message{eol}data: {response}{eol}{eol}"
    stream = (priming + note + final).encode()
    out = await _collect([stream[i : i + size] for i in range(0, len(stream), size)])
    assert out.startswith((priming + note).encode())  # events before the response keep their bytes
    progress_msg, declared = _messages(out)
    assert progress_msg["method"] == "notifications/progress"
    assert declared["result"]["capabilities"]["extensions"] == {"com.example/other": {"x": 1}, **EMA}
    assert b"id: 2\n" in out


async def test_sse_after_the_response_is_relayed_as_is() -> None:
    response = json.dumps({"jsonrpc": "2.0", "id": 1, "result": INIT})
    tail = b"data: whatever follows\n\n"
    out = await _collect([f"data: {response}\n\n".encode() + tail, b"more"])
    assert out.endswith(tail + b"more")
    other = json.dumps({"jsonrpc": "2.0", "id": 2, "result": INIT}).encode()
    untouched = b"data: " + other + b"\n\n"
    assert await _collect([untouched]) == untouched
