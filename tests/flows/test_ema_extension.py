"""Enterprise-Managed Authorization discovery (SEP-2133): a Bastion that redeems ID-JAGs declares
``io.modelcontextprotocol/enterprise-managed-authorization`` under ``capabilities.extensions`` of
every legacy ``initialize`` and modern ``server/discover`` result, on every path (passthrough as
JSON or SSE, bridged, stdio, aggregate), next to the upstream's own capabilities and
extensions. Without EMA configured the results are the upstream's, byte for byte."""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from tests.support.gateway import Gateway, run_gateway
from tests.support.oauth import demo_upstream
from tests.support.recording import RecordingUpstream, serve_upstream
from tests.support.servers import run_fixture_server
from tests.support.wire import ACCEPT, MODERN, init_body

EMA = "io.modelcontextprotocol/enterprise-managed-authorization"
OTHER = {"com.example/other": {"level": 2}}
SECRET = secrets.token_urlsafe(32)
CLIENTS = [
    {
        "client_id": "agent",
        "secret_sha256": hashlib.sha256(SECRET.encode()).hexdigest(),
        "grant_types": ["client_credentials"],
    }
]
IDP_KEY = json.loads(ECAlgorithm.to_jwk(ec.generate_private_key(ec.SECP256R1()).public_key()))
TRUSTED = [{"issuer": "https://idp.example.test", "jwks": {"keys": [IDP_KEY]}, "algorithms": ["ES256"]}]
DISCOVER = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "server/discover",
    "params": {
        "_meta": {
            "io.modelcontextprotocol/protocolVersion": MODERN,
            "io.modelcontextprotocol/clientCapabilities": {},
        }
    },
}


class ExtendedUpstream(RecordingUpstream):
    """A legacy-only upstream (JSON responses) that declares an extension of its own."""

    def _answer(self, method: object, params: dict[str, Any]) -> dict[str, Any] | None:
        result = super()._answer(method, params)
        if method == "initialize" and result is not None:
            result["capabilities"]["extensions"] = OTHER
        return result


# endpoint -> how each era reaches it: "rec" legacy passthrough (JSON) + modern bridged from its
# initialize; "both" passthrough in both eras (initialize as SSE); "new" modern passthrough (JSON)
# + legacy bridged from its server/discover; "demo" stdio, relayed and bridged.
ENDPOINTS = ["rec", "both", "new", "demo"]


@pytest.fixture(scope="module")
def upstreams(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[dict[str, Any]]]:
    tmp: Path = tmp_path_factory.mktemp("ema-ext-upstreams")
    recorder = ExtendedUpstream()
    with (
        serve_upstream(recorder),
        run_fixture_server("everything_server.py", tmp) as both,
        run_fixture_server("everything_server.py", tmp, "--era", "modern", "--json-response") as new,
    ):
        yield [
            {"name": "rec", "http": {"url": recorder.url}},
            {"name": "both", "http": {"url": both}},
            {"name": "new", "http": {"url": new}},
            demo_upstream("demo", tmp),
        ]


def _gateway(tmp: Path, upstreams: list[dict[str, Any]], ema: bool) -> Any:
    extra: dict[str, Any] = {"auth": {"enabled": True, "scopes": ["mcp"]}, "clients": CLIENTS}
    if ema:
        extra["ema"] = {"trusted_issuers": TRUSTED}
    return run_gateway(tmp, upstreams, extra=extra)


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, upstreams: list[dict[str, Any]]) -> Iterator[Gateway]:
    with _gateway(tmp_path_factory.mktemp("ema-ext"), upstreams, ema=True) as g:
        yield g


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory, upstreams: list[dict[str, Any]]) -> Iterator[Gateway]:
    with _gateway(tmp_path_factory.mktemp("ema-ext-off"), upstreams, ema=False) as g:
        yield g


async def _token(http: httpx2.AsyncClient, gw: Gateway, resource: str) -> str:
    form = {"grant_type": "client_credentials", "resource": resource, "scope": "mcp"}
    response = await http.post(f"{gw.base}/token", data=form, auth=("agent", SECRET))
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def _message(response: httpx2.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    if response.headers["content-type"].startswith("text/event-stream"):
        data = [line[5:].strip() for line in response.text.splitlines() if line.startswith("data:")]
        messages = [json.loads(d) for d in data if d]
        (final,) = [m for m in messages if "method" not in m and m.get("id") == 1]
        return final
    message: dict[str, Any] = response.json()
    return message


async def _exchange(gw: Gateway, endpoint: str | None, era: str) -> tuple[httpx2.Response, dict[str, Any]]:
    url = gw.url(endpoint)
    async with httpx2.AsyncClient(timeout=30) as http:
        headers = {"accept": ACCEPT, "authorization": f"Bearer {await _token(http, gw, url)}"}
        if era == "legacy":
            response = await http.post(url, json=init_body(), headers=headers)
        else:
            headers |= {"mcp-protocol-version": MODERN, "mcp-method": "server/discover"}
            response = await http.post(url, json=DISCOVER, headers=headers)
    return response, _message(response)


def _capabilities(message: dict[str, Any]) -> dict[str, Any]:
    result = message["result"]
    assert isinstance(result, dict), message
    capabilities: dict[str, Any] = result["capabilities"]
    return capabilities


@pytest.mark.parametrize("era", ["legacy", "modern"])
@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_every_path_declares_ema_next_to_the_upstreams_capabilities(
    gw: Gateway, endpoint: str, era: str
) -> None:
    _, message = await _exchange(gw, endpoint, era)
    capabilities = _capabilities(message)
    assert capabilities["extensions"][EMA] == {}
    assert "tools" in capabilities  # the upstream's own capabilities are intact
    if endpoint == "rec":
        assert capabilities["extensions"] == {**OTHER, EMA: {}}
    if era == "legacy":
        assert message["result"]["protocolVersion"] == "2025-11-25"
        assert "serverInfo" in message["result"]
    else:
        assert message["result"]["supportedVersions"] == [MODERN]


@pytest.mark.parametrize("era", ["legacy", "modern"])
async def test_the_aggregate_endpoint_declares_it_too(gw: Gateway, era: str) -> None:
    _, message = await _exchange(gw, None, era)
    capabilities = _capabilities(message)
    assert capabilities["extensions"] == {EMA: {}}
    assert {"tools", "resources", "prompts"} <= capabilities.keys()


async def test_the_legacy_sse_passthrough_keeps_the_stream(gw: Gateway) -> None:
    """The upstream answers initialize on an SSE stream with a priming event first: relayed as is."""
    response, message = await _exchange(gw, "both", "legacy")
    assert response.headers["content-type"].startswith("text/event-stream")
    assert "retry: 100" in response.text  # the priming event, untouched
    assert response.headers["mcp-session-id"]
    assert _capabilities(message)["extensions"] == {EMA: {}}


@pytest.mark.parametrize("era", ["legacy", "modern"])
@pytest.mark.parametrize("endpoint", [*ENDPOINTS, None])
async def test_without_ema_nothing_is_declared(plain: Gateway, endpoint: str | None, era: str) -> None:
    _, message = await _exchange(plain, endpoint, era)
    capabilities = _capabilities(message)
    assert EMA not in capabilities.get("extensions", {})
    if endpoint == "rec":
        assert capabilities["extensions"] == OTHER


async def test_without_ema_the_passthrough_is_byte_identical(plain: Gateway) -> None:
    response, _ = await _exchange(plain, "rec", "legacy")
    upstream = ExtendedUpstream()._answer("initialize", {})
    assert response.content == json.dumps({"jsonrpc": "2.0", "id": 1, "result": upstream}).encode()
