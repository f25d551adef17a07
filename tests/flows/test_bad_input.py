"""Malformed, hostile and failing traffic: each gets a clear, spec-shaped error, nothing secret
leaks, and the gateway keeps serving everyone else."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest

from tests.support.gateway import Gateway
from tests.support.wire import ACCEPT, LEGACY, MODERN, init_body


def modern_call(name: str, request_id: int = 1) -> tuple[dict[str, Any], dict[str, str]]:
    body = {
        "jsonrpc": "2.0",
        "id": request_id,
        "method": "tools/call",
        "params": {
            "name": name,
            "arguments": {},
            "_meta": {
                "io.modelcontextprotocol/protocolVersion": MODERN,
                "io.modelcontextprotocol/clientCapabilities": {},
            },
        },
    }
    headers = {"mcp-protocol-version": MODERN, "mcp-method": "tools/call", "mcp-name": name}
    return body, headers


async def post(
    url: str, body: bytes | dict[str, Any] | list[Any], headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    all_headers = {"content-type": "application/json", "accept": ACCEPT, **(headers or {})}
    async with aiohttp.ClientSession() as s, s.post(url, data=data, headers=all_headers) as r:
        return r.status, dict(r.headers), await r.read()


def rpc_error(raw: bytes) -> dict[str, Any]:
    text = raw.decode()
    if text.startswith(("event:", "id:", "data:")):
        datas = [
            line[5:].strip() for line in text.splitlines() if line.startswith("data:") and line[5:].strip()
        ]
        text = datas[-1]
    message = json.loads(text)
    assert message["jsonrpc"] == "2.0"
    return message["error"]


async def legacy_session(url: str) -> dict[str, str]:
    status, headers, _ = await post(url, init_body())
    assert status == 200
    session = {"mcp-protocol-version": LEGACY}
    if "mcp-session-id" in headers:  # stateless upstreams issue none, and so neither does Bastion
        session["mcp-session-id"] = headers["mcp-session-id"]
    return session


async def legacy_call(url: str, name: str) -> tuple[int, bytes]:
    session = await legacy_session(url)
    body = {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": name, "arguments": {}}}
    status, _, raw = await post(url, body, session)
    return status, raw


# -- malformed requests ------------------------------------------------------------------------


async def test_malformed_json_is_a_parse_error(gateway: Gateway) -> None:
    status, _, raw = await post(gateway.url("ev"), b'{"jsonrpc": "2.0", "id": 1, "method": ')
    assert status == 400
    assert rpc_error(raw)["code"] == -32700


async def test_batch_is_rejected(gateway: Gateway) -> None:
    status, _, raw = await post(gateway.url("ev"), [init_body(1), init_body(2)])
    assert status == 400
    error = rpc_error(raw)
    assert error["code"] == -32600
    assert "batch" in error["message"].lower()


@pytest.mark.parametrize(
    "body",
    [
        {"id": 1, "method": "ping"},
        {"jsonrpc": "1.0", "id": 1, "method": "ping"},
        {"jsonrpc": "2.0", "id": True, "method": "ping"},
        {"jsonrpc": "2.0", "id": {"x": 1}, "method": "ping"},
        {"jsonrpc": "2.0", "id": 1, "method": 5},
        {"jsonrpc": "2.0", "id": 1, "method": "ping", "params": [1, 2]},
        {"jsonrpc": "2.0"},
        "just a string",
    ],
)
async def test_invalid_jsonrpc_envelopes(gateway: Gateway, body: Any) -> None:
    status, _, raw = await post(gateway.url("ev"), json.dumps(body).encode())
    assert status == 400
    assert rpc_error(raw)["code"] == -32600


async def test_unknown_method_on_aggregate(gateway: Gateway) -> None:
    session = await legacy_session(gateway.url())
    body = {"jsonrpc": "2.0", "id": 3, "method": "no/such/method", "params": {}}
    status, _, raw = await post(gateway.url(), body, session)
    assert status == 200
    assert rpc_error(raw)["code"] == -32601


async def test_unknown_method_modern_is_404(gateway: Gateway) -> None:
    body, headers = modern_call("x")
    body["method"] = "no/such/method"
    headers["mcp-method"] = "no/such/method"
    status, _, raw = await post(gateway.url(), body, headers)
    assert status == 404
    assert rpc_error(raw)["code"] == -32601


@pytest.mark.parametrize("endpoint", ["ev", "time", None])
async def test_mcp_name_header_must_match_body(gateway: Gateway, endpoint: str | None) -> None:
    body, headers = modern_call("test_simple_text")
    headers["mcp-name"] = "something_else"
    status, _, raw = await post(gateway.url(endpoint), body, headers)
    assert status == 400
    assert rpc_error(raw)["code"] == -32020


async def test_mcp_method_header_must_match_body(gateway: Gateway) -> None:
    body, headers = modern_call("test_simple_text")
    headers["mcp-method"] = "tools/list"
    status, _, raw = await post(gateway.url("ev"), body, headers)
    assert status == 400
    assert rpc_error(raw)["code"] == -32020


async def test_unsupported_modern_version(gateway: Gateway) -> None:
    body, headers = modern_call("test_simple_text")
    body["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"] = "2099-01-01"
    headers["mcp-protocol-version"] = "2099-01-01"
    status, _, raw = await post(gateway.url("time"), body, headers)
    assert status == 400
    assert rpc_error(raw)["code"] in (-32022, -32020)


async def test_oversized_body(hostile_gateway: Gateway) -> None:
    body = init_body()
    body["params"]["padding"] = "x" * 70_000
    status, _, raw = await post(hostile_gateway.url("garbage"), body)
    assert status == 413
    assert rpc_error(raw)["code"] == -32600


async def test_unknown_upstream(gateway: Gateway) -> None:
    status, _, raw = await post(gateway.url("nope"), init_body())
    assert status == 404
    assert "nope" in rpc_error(raw)["message"]


async def test_wrong_content_type_and_method(gateway: Gateway) -> None:
    status, _, _ = await post(gateway.url("ev"), b"{}", {"content-type": "text/plain"})
    assert status == 415
    async with aiohttp.ClientSession() as s, s.put(gateway.url("ev"), data=b"{}") as r:
        assert r.status == 405


async def test_dns_rebinding_host_and_origin(gateway: Gateway) -> None:
    status, _, _ = await post(gateway.url("ev"), init_body(), {"host": "evil.example:80"})
    assert status == 421
    status, _, _ = await post(gateway.url("ev"), init_body(), {"origin": "http://evil.example"})
    assert status == 403
    status, _, _ = await post(gateway.url("ev"), init_body(), {"origin": gateway.base})
    assert status == 200


async def test_session_required_and_unknown_session(gateway: Gateway) -> None:
    body = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}
    status, _, _ = await post(gateway.url("time"), body)
    assert status == 400
    status, _, raw = await post(gateway.url("time"), body, {"mcp-session-id": "not-a-session"})
    assert status == 404
    assert rpc_error(raw)["code"] == -32600


async def test_session_is_bound_to_its_endpoint(gateway: Gateway) -> None:
    session = await legacy_session(gateway.url("ev"))
    body = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}
    status, _, _ = await post(gateway.url("time"), body, session)
    assert status == 404
    status, headers, _ = await post(gateway.url("ev"), init_body(), {})
    assert headers["mcp-session-id"] != session["mcp-session-id"]


# -- failing upstreams ------------------------------------------------------------------------


async def test_upstream_down_names_the_upstream(hostile_gateway: Gateway) -> None:
    status, _, raw = await post(hostile_gateway.url("down"), init_body())
    assert status == 200
    error = rpc_error(raw)
    assert error["code"] == -32010
    assert "'down'" in error["message"]


async def test_upstream_timeout(hostile_gateway: Gateway) -> None:
    status, raw = await legacy_call(hostile_gateway.url("slow"), "anything")
    assert status == 200
    error = rpc_error(raw)
    assert error["code"] == -32011
    assert "'slow'" in error["message"]


async def test_upstream_crash_mid_stream(hostile_gateway: Gateway) -> None:
    status, raw = await legacy_call(hostile_gateway.url("crash"), "anything")
    assert status == 200
    assert b"notifications/progress" in raw  # what arrived before the crash was relayed
    error = rpc_error(raw)
    assert error["code"] == -32012
    assert "'crash'" in error["message"]


async def test_upstream_500_does_not_leak(hostile_gateway: Gateway) -> None:
    status, raw = await legacy_call(hostile_gateway.url("error500"), "anything")
    assert status == 200
    assert b"Traceback" not in raw
    assert b"hunter2" not in raw
    assert rpc_error(raw)["code"] == -32012
    assert "hunter2" not in hostile_gateway.log()


async def test_upstream_401_is_not_a_challenge_to_the_client(hostile_gateway: Gateway) -> None:
    status, _, raw = await post(hostile_gateway.url("unauth"), init_body())
    session = {}
    body = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "x"}}
    status, headers, raw = await post(hostile_gateway.url("unauth"), body, session)
    assert status == 200
    assert "www-authenticate" not in {k.lower() for k in headers}
    assert rpc_error(raw)["code"] == -32012


async def test_upstream_garbage(hostile_gateway: Gateway) -> None:
    status, raw = await legacy_call(hostile_gateway.url("garbage"), "anything")
    assert status == 200
    error = rpc_error(raw)
    assert error["code"] == -32012
    assert "'garbage'" in error["message"]


async def test_stdio_server_that_exits_at_start(hostile_gateway: Gateway) -> None:
    status, _, raw = await post(hostile_gateway.url("broken"), init_body())
    assert status == 200
    error = rpc_error(raw)
    assert error["code"] in (-32010, -32012)
    assert "'broken'" in error["message"]


async def test_gateway_still_serves_after_abuse(hostile_gateway: Gateway, gateway: Gateway) -> None:
    for gw in (hostile_gateway, gateway):
        async with aiohttp.ClientSession() as s, s.get(f"{gw.base}/healthz") as r:
            assert r.status == 200
    status, _, _ = await post(gateway.url("ev"), init_body())
    assert status == 200


async def test_response_framing_has_one_content_length(gateway: Gateway) -> None:
    """aiohttp (strict) must accept Bastion's responses: one Content-Length, never two."""
    body = init_body()
    async with aiohttp.ClientSession() as s:
        for endpoint in ("ev", "time", None):
            async with s.post(gateway.url(endpoint), json=body, headers={"accept": ACCEPT}) as r:
                assert r.status == 200
                assert len(r.headers.getall("content-length", [])) <= 1
                await r.read()


async def test_errors_carry_the_request_id(gateway: Gateway) -> None:
    body, headers = modern_call("test_simple_text", request_id=101)
    headers["mcp-name"] = "other"
    _, _, raw = await post(gateway.url("ev"), body, headers)
    assert json.loads(raw)["id"] == 101
    _, _, raw = await post(gateway.url("ev"), {"jsonrpc": "2.0", "id": 102, "method": 7})
    assert json.loads(raw)["id"] == 102
    _, _, raw = await post(gateway.url("ev"), b"{broken")
    assert json.loads(raw)["id"] is None


async def test_modern_client_disconnect_cancels_upstream(hostile_gateway: Gateway, hostile_base: str) -> None:
    """2026-07-28: closing the response stream is cancellation; Bastion closes its upstream
    request too, even before the upstream has answered anything."""
    import asyncio

    async with aiohttp.ClientSession() as s, s.get(f"{hostile_base}/stats") as r:
        before = (await r.json())["disconnects"]
    body, headers = modern_call("anything", request_id=9)
    all_headers = {"content-type": "application/json", "accept": ACCEPT, **headers}
    async with aiohttp.ClientSession() as s:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.5):
                await s.post(hostile_gateway.url("slow-modern"), data=json.dumps(body), headers=all_headers)
    for _ in range(50):
        async with aiohttp.ClientSession() as s, s.get(f"{hostile_base}/stats") as r:
            if (await r.json())["disconnects"] > before:
                return
        await asyncio.sleep(0.1)
    raise AssertionError("the upstream never saw the cancellation")
