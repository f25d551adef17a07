"""``auth: {type: service}``: one static secret for every user (the "order management API key"),
from an environment variable or a file, in the configured header and template. The upstream
(tests/fixtures/saas_upstream.py in API-key mode) sees that key on every call, whoever calls;
the client never sees it; a wrong secret is the upstream's 401, reported as Bastion's own
failure (-32012), not passed through."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import httpx2
import pytest
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client

from tests.support.gateway import run_gateway
from tests.support.saas import credential_hash, run_saas_upstream

pytestmark = pytest.mark.timeout(120)


async def call(url: str, tool: str) -> tuple[bool, str]:
    async with (
        httpx2.AsyncClient(timeout=30) as http,
        Client(streamable_http_client(url, http_client=http), mode="legacy") as client,
    ):
        result = await client.call_tool(tool, {})
    return result.is_error, "".join(getattr(c, "text", "") for c in result.content)


@pytest.mark.parametrize("source", ["env", "file"])
async def test_the_service_key_is_sent_for_everyone(flow_tmp: Path, source: str) -> None:
    key = "orders-" + secrets.token_hex(16)
    with run_saas_upstream(flow_tmp, api_key_header="x-api-key", api_keys={key: "orders-service"}) as up:
        auth: dict[str, object] = {"type": "service", "header": "x-api-key", "template": "{token}"}
        env = {}
        if source == "env":
            auth["secret"] = "${ORDERS_KEY}"
            env["ORDERS_KEY"] = key
        else:
            secret_file = flow_tmp / f"orders-{secrets.token_hex(4)}.key"
            secret_file.write_text(key + "\n")
            auth["secret_file"] = str(secret_file)
        upstreams = [{"name": "orders", "http": {"url": up.url}, "auth": auth}]
        with run_gateway(flow_tmp, upstreams, env=env) as gateway:
            failed, text = await call(gateway.url("orders"), "whoami")
            assert not failed, text
            assert json.loads(text)["sub"] == "orders-service"
            assert key not in gateway.log()
        assert {r["sha256"] for r in up.seen() if r["status"] == 200} == {credential_hash(key)}


async def test_a_wrong_service_key_is_bastions_failure_not_the_upstreams_challenge(flow_tmp: Path) -> None:
    with run_saas_upstream(flow_tmp, api_key_header="x-api-key", api_keys={"right": "orders-service"}) as up:
        auth = {"type": "service", "header": "x-api-key", "template": "{token}", "secret": "wrong-key"}
        with run_gateway(flow_tmp, [{"name": "orders", "http": {"url": up.url}, "auth": auth}]) as gateway:
            async with httpx2.AsyncClient(timeout=30) as http:
                response = await http.post(
                    gateway.url("orders"),
                    json={
                        "jsonrpc": "2.0",
                        "id": 1,
                        "method": "initialize",
                        "params": {
                            "protocolVersion": "2025-11-25",
                            "capabilities": {},
                            "clientInfo": {"name": "t", "version": "1"},
                        },
                    },
                    headers={"accept": "application/json, text/event-stream"},
                )
            assert response.status_code == 200, response.text  # no upstream challenge passed through
            assert "www-authenticate" not in response.headers
            assert "wrong-key" not in response.text
            assert response.json()["error"]["code"] == -32012
