"""The official TypeScript SDK client (``@modelcontextprotocol/sdk`` 1.32.2) against Bastion when
users sign in at an Entra-like IdP (panva's oidc-provider, ``tests/node/idp.mjs``).
``tests/node/ts_federation_client.mjs`` implements ``OAuthClientProvider`` with a headless
"browser" (fetch, a cookie jar per origin) that follows Bastion's "Sign in with Microsoft" link,
allows the client on Bastion's consent page, signs in and consents at the IdP and comes back
through Bastion's callback. The SDK does discovery, dynamic registration with Bastion
(``application_type: native``), PKCE, ``resource``, the token request and the MCP session whose
tool calls reach the (recording) upstream as the provisioned user."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import jwt
import pytest

from tests.support.federation_checks import assert_federated_call, idp_refresh_tokens
from tests.support.federation_upstream import FederatedNotes, assert_no_credentials, federated_notes
from tests.support.interop_oauth import NodeRun, registered_clients, run_node_script
from tests.support.oauth import REDIRECT_URI, query_of

pytestmark = [pytest.mark.node, pytest.mark.timeout(90)]
SCRIPT = "ts_federation_client.mjs"


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FederatedNotes]:
    with federated_notes(tmp_path_factory.mktemp("federation-typescript")) as setup:
        yield setup


def run_client(setup: FederatedNotes, **plan: object) -> NodeRun:
    plan = {"login": "alice", "password": "x", "provider": "entra", "redirectUri": REDIRECT_URI, **plan}
    return run_node_script(SCRIPT, setup.url, json.dumps(plan), timeout=60)


async def test_typescript_sdk_signs_in_through_the_idp_and_calls_tools(setup: FederatedNotes) -> None:
    fed, upstream = setup.fed, setup.upstream
    gateway = fed.gateway
    run = await asyncio.to_thread(
        run_client,
        setup,
        clientName="TypeScript SDK via the IdP",
        clientMetadata={"application_type": "native"},  # MCP 2026-07-28 (SEP-837)
        calls=[
            {"name": "add_note", "arguments": {"title": "ts-federated", "body": "from the TypeScript SDK"}},
            {"name": "list_notes", "arguments": {}},
        ],
    )
    out = run.output
    assert out.get("ok"), (run.report(), gateway.tail(), fed.idp.tail())

    client_id = out["client"]["client_id"]
    assert client_id.startswith("dcr_")
    assert out["client"]["token_endpoint_auth_method"] == "none"
    assert "TypeScript SDK via the IdP" in registered_clients(gateway, "dcr")

    # Bastion's choice → Bastion's consent for this client → the IdP's sign-in and consent →
    # back to the client: one consent at Bastion (the SDK asks for scope mcp, without prompt)
    kinds = [p["kind"] for p in out["pages"] if p["kind"] != "redirect"]
    assert kinds == ["choice", "consent", "idp-login", "idp-consent"], out["pages"]
    [consent] = out["consentTexts"]
    assert "TypeScript SDK via the IdP" in consent
    assert "after you sign in with Microsoft" in consent
    to_idp = [p["url"] for p in out["pages"] if p["url"].startswith(fed.idp.issuer + "/auth?")]
    assert query_of(to_idp[0])["client_id"] == "bastion-gateway"
    assert "resource" not in query_of(to_idp[0])

    authorize = query_of(out["authorizationUrl"])
    assert "prompt" not in authorize
    assert authorize["client_id"] == client_id
    assert authorize["code_challenge_method"] == "S256"
    assert authorize["resource"] == setup.url
    assert out["callback"].startswith(REDIRECT_URI + "?")
    assert out["iss"] == gateway.base

    tokens = out["tokens"]
    assert tokens["token_type"].lower() == "bearer"
    assert tokens["refresh_token"]
    claims = jwt.decode(tokens["access_token"], options={"verify_signature": False})
    assert (claims["iss"], claims["aud"]) == (gateway.base, setup.url)
    assert claims["sub"].startswith("x_")

    assert {"add_note", "list_notes"} <= set(out["tools"])
    add, listing = out["calls"]
    assert add["result"].get("isError") is not True, add
    assert "ts-federated: from the TypeScript SDK" in listing["result"]["content"][0]["text"]

    added = {"title": "ts-federated", "body": "from the TypeScript SDK"}
    assert {"name": "add_note", "arguments": added} in upstream.tool_calls
    known = [tokens["access_token"], tokens["refresh_token"], *idp_refresh_tokens(gateway)]
    assert_no_credentials(upstream, *known)
    assert await assert_federated_call(fed, client_id=client_id, tool="add_note") == claims["sub"]


async def test_deny_at_bastion_never_reaches_the_idp(setup: FederatedNotes) -> None:
    """Deny (the first button) on Bastion's consent page: the SDK gets access_denied back at its
    redirect URI, and the browser was never sent to the IdP."""
    run = await asyncio.to_thread(
        run_client,
        setup,
        clientName="TypeScript SDK, denied",
        clientMetadata={"application_type": "native"},
        decision="deny",
    )
    out = run.output
    assert not out.get("ok"), run.report()
    assert "authorization refused: access_denied" in out["error"]["message"], out["error"]
    kinds = [p["kind"] for p in out["pages"] if p["kind"] != "redirect"]
    assert kinds == ["choice", "consent"], out["pages"]
    assert not any(p["url"].startswith(setup.fed.idp.base) for p in out["pages"])
    answer = query_of(out["callback"])
    assert answer["error"] == "access_denied"
    assert answer["iss"] == setup.fed.gateway.base
