"""The official TypeScript SDK client (``@modelcontextprotocol/sdk`` 1.32.2) as Bastion's OAuth
client: ``tests/node/ts_oauth_login_client.mjs`` implements ``OAuthClientProvider`` with a
headless "browser" (fetch + a hand-kept cookie jar filling Bastion's sign-in and consent forms).
The SDK does the rest: discovery (RFC 9728 → RFC 8414), dynamic registration (RFC 7591), PKCE,
``resource``, the token request, and the MCP session whose tool calls go through Bastion."""

from __future__ import annotations

import json

import pytest

from tests.support.gateway import Gateway
from tests.support.interop_oauth import (
    PASSWORD,
    USER,
    InteropSetup,
    NodeRun,
    interop_setup,
    registered_clients,
    run_node_script,
)
from tests.support.oauth import REDIRECT_URI, query_of

pytestmark = [pytest.mark.node, pytest.mark.timeout(90)]
SCRIPT = "ts_oauth_login_client.mjs"


@pytest.fixture(scope="module")
def gateway(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Gateway:
    setup: InteropSetup = interop_setup(request, tmp_path_factory)
    return setup.gateway


def run_client(gateway: Gateway, **plan: object) -> NodeRun:
    plan = {"username": USER, "password": PASSWORD, "redirectUri": REDIRECT_URI, **plan}
    return run_node_script(SCRIPT, gateway.url("demo"), json.dumps(plan), timeout=60)


def test_registers_signs_in_and_calls_a_tool(gateway: Gateway) -> None:
    run = run_client(
        gateway,
        clientName="TypeScript SDK via DCR",
        # MCP 2026-07-28 (SEP-837): application_type MUST be sent at registration; SDK 1.32.2
        # sends only what the application puts in clientMetadata (see the next test).
        clientMetadata={"application_type": "native"},
        calls=[
            {"name": "add_note", "arguments": {"title": "ts-oauth", "body": "from the TypeScript SDK"}},
            {"name": "list_notes", "arguments": {}},
        ],
    )
    out = run.output
    assert out.get("ok"), (run.report(), gateway.tail())
    client_id = out["client"]["client_id"]
    assert client_id.startswith("dcr_")
    assert out["client"]["token_endpoint_auth_method"] == "none"
    kinds = [p["kind"] for p in out["pages"] if p["kind"] != "redirect"]
    assert kinds == ["login", "consent"]
    assert "TypeScript SDK via DCR" in out["consentText"]
    assert "127.0.0.1" in out["consentText"]  # where the user is sent afterwards
    authorize = query_of(out["authorizationUrl"])
    assert authorize["client_id"] == client_id
    assert authorize["code_challenge_method"] == "S256"
    assert authorize["resource"] == gateway.url("demo")
    assert out["callback"].startswith(REDIRECT_URI + "?")
    assert out["iss"] == gateway.base
    assert out["tokens"]["token_type"].lower() == "bearer"
    assert out["tokens"]["has_refresh_token"]
    assert {"add_note", "list_notes"} <= set(out["tools"])
    add, listing = out["calls"]
    assert add["result"]["isError"] is False, add
    assert "ts-oauth" in listing["result"]["content"][0]["text"]
    listed = registered_clients(gateway, "dcr")
    assert client_id in listed
    assert "TypeScript SDK via DCR" in listed


def test_registration_without_application_type_is_refused(gateway: Gateway) -> None:
    """Known incompatibility, pinned so it stays visible: the SDK's own example client metadata
    (``simpleOAuthClient``) has no ``application_type``; SDK 1.32.2 sends it as is and Bastion,
    following MCP 2026-07-28 (SEP-837), answers 400 ``invalid_client_metadata``. The SDK
    surfaces the error by name and message; the user never reaches the sign-in page."""
    run = run_client(gateway, clientName="TypeScript SDK, default metadata")
    assert not run.output.get("ok"), run.report()
    assert run.output["error"] == {
        "name": "InvalidClientMetadataError",
        "message": "application_type is required (native or web)",
    }
    assert run.output["pages"] == []
    assert "TypeScript SDK, default metadata" not in registered_clients(gateway, "dcr")
