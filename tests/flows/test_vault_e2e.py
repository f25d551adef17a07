"""Per-user downstream credentials end to end (issue #7): the real ``bastion serve`` in front of
an MCP upstream that wants a SaaS provider's tokens (``tests/fixtures/saas_upstream.py``), the
provider being a real oidc-provider (``run_saas_provider``), the clients being the official
Python SDK in both eras, and the connect flow running in real Chromium.

alice calls ``whoami`` before she connected: her 2026-07-28 client gets an ``input_required``
URL elicitation, its elicitation callback opens the link in Chromium (Bastion's sign-in, the
confirm page, the provider's sign-in, the callback) and accepts, and the SDK's own retry reaches
the upstream with alice's provider token. bob, on a 2025-11-25 client, gets ``-32042`` with the
link, connects, and his retry reaches the upstream with his own token. Neither token ever appears
in a response to a client, Bastion's log or the audit trail; a client without URL elicitation
gets the link in a tool error, and a forwarded link does not work for another user."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import types
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from bastion.config.loader import load_config
from bastion.oauth.keystore import load_master_key
from bastion.vault.envelope import VaultCipher
from bastion.vault.keys import load_vault_keys
from tests.support.federation_checks import audit_records
from tests.support.gateway import Gateway, run_gateway
from tests.support.idp import SAAS_CLIENT_ID, SAAS_CLIENT_SECRET, SaasProvider, run_saas_provider
from tests.support.interop_oauth import CHROMIUM, missing
from tests.support.oauth import REDIRECT_URI, add_users, gateway_store, user_token
from tests.support.procs import free_port
from tests.support.saas import SaasUpstream, credential_hash, saas_upstream_for
from tests.support.wire import ACCEPT, MODERN

pytestmark = pytest.mark.timeout(180)
PASSWORD = "correct horse battery"
CLIENTS = [{"client_id": "claude", "name": "Claude", "redirect_uris": [REDIRECT_URI], "trusted": True}]


@dataclass
class Setup:
    gateway: Gateway
    saas: SaasProvider
    upstream: SaasUpstream
    tokens: dict[str, str]  # Bastion access tokens of claude, by user

    def headers(self, user: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[user]}"}


@pytest.fixture(scope="module")
def chromium() -> Path:
    if not CHROMIUM.is_file():
        missing(
            f"Chromium not installed at {CHROMIUM} (BASTION_TEST_CHROMIUM overrides the path)",
            "apt-get install -y chromium (scripts/install-test-deps.sh does it when run as root)",
        )
    return CHROMIUM


@pytest.fixture(scope="module")
def stack(flow_tmp: Path) -> Iterator[tuple[Gateway, SaasProvider, SaasUpstream]]:
    port = free_port()
    callback = f"http://127.0.0.1:{port}/connect/callback"
    with (
        run_saas_provider(flow_tmp, redirect_uris=[callback]) as saas,
        saas_upstream_for(saas, flow_tmp) as upstream,
    ):
        connection = {
            "name": "crm",
            "type": "oauth",
            "label": "Acme CRM",
            "client_id": SAAS_CLIENT_ID,
            "client_secret": SAAS_CLIENT_SECRET,
            "issuer": saas.issuer,
            "scopes": ["crm:read", "crm:write", "offline_access"],
        }
        extra = {
            "auth": {"enabled": True, "scopes": ["mcp"], "required_scopes": ["mcp"]},
            "clients": CLIENTS,
            "connections": [connection],
        }
        upstreams = [
            {
                "name": "crm",
                "http": {"url": upstream.url},
                "auth": {"type": "user_oauth", "connection": "crm"},
            }
        ]
        with run_gateway(flow_tmp, upstreams, extra=extra, port=port) as gateway:
            yield gateway, saas, upstream


@pytest.fixture(scope="module")
async def setup(stack: tuple[Gateway, SaasProvider, SaasUpstream]) -> Setup:
    gateway, saas, upstream = stack
    users = ["alice", "bob", "carol", "dave"]
    await add_users(gateway, dict.fromkeys(users, PASSWORD))
    tokens = {}
    for user in users:
        response = await user_token(
            gateway.base, client_id="claude", resource=gateway.url("crm"), username=user, password=PASSWORD
        )
        tokens[user] = str(response["access_token"])
    return Setup(gateway, saas, upstream, tokens)


async def connect_in_chromium(
    chromium: Path, url: str, user: str, *, provider_login: str | None = None
) -> str:
    """Open the connect link in a fresh Chromium: sign in to Bastion as ``user``, Continue, sign
    in at the provider; returns the text of the page the browser ends on."""
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=str(chromium), headless=True, args=["--no-sandbox"] if os.geteuid() == 0 else []
        )
        try:
            page = await browser.new_page()
            await page.goto(url)
            await page.locator("#username").fill(user)
            await page.locator("#password").fill(PASSWORD)
            await page.get_by_role("button", name="Sign in").click()
            await page.get_by_role("button", name="Continue").click()
            await page.get_by_label("Email or login").fill(provider_login or user)
            await page.get_by_label("Password").fill("x")
            await page.get_by_role("button", name="Sign in").click()
            await page.wait_for_url("**/connect/callback**", timeout=15_000)
            return await page.locator("main").inner_text()
        finally:
            await browser.close()


async def stored_secrets(gateway: Gateway) -> list[str]:
    """Every secret the vault holds (opened with the gateway's own keys): what must never leak."""
    settings = load_config(gateway.config_path, os.environ)
    cipher = VaultCipher(load_vault_keys(settings, load_master_key(settings, create=False)))
    secrets: list[str] = []
    async with gateway_store(gateway) as store:
        for user_id in await user_ids(store):
            for record in await store.vault.list_for_user(user_id):
                secrets.extend(v for v in cipher.open(record).values() if isinstance(v, str) and len(v) > 8)
    return secrets


async def user_ids(store: Any) -> list[str]:
    return [u.user_id for u in await store.users.list()]


def sdk_client(url: str, http: httpx2.AsyncClient, **options: Any) -> Client:
    return Client(streamable_http_client(url, http_client=http), **options)


def text(result: types.CallToolResult) -> str:
    return "".join(getattr(c, "text", "") for c in result.content)


async def test_modern_client_is_asked_to_connect_and_its_retry_reaches_the_upstream(
    setup: Setup, chromium: Path
) -> None:
    asked: list[types.ElicitRequestURLParams] = []
    pages: list[str] = []

    async def elicit(_context: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
        assert isinstance(params, types.ElicitRequestURLParams), params
        asked.append(params)
        pages.append(await connect_in_chromium(chromium, params.url, "alice"))
        return types.ElicitResult(action="accept")

    url = setup.gateway.url("crm")
    async with (
        httpx2.AsyncClient(headers=setup.headers("alice"), timeout=60) as http,
        sdk_client(url, http, mode="auto", elicitation_callback=elicit) as client,
    ):
        assert (await client.list_tools()).tools == []  # nothing to show before she connects
        result = await client.call_tool("whoami", {})
    assert not result.is_error, text(result)
    assert json.loads(text(result))["sub"] == "crm-user-alice"
    [params] = asked
    assert params.url.startswith(f"{setup.gateway.base}/connect/crm?intent=")
    assert "alice" not in params.url  # no personal data in the link
    assert "Acme CRM" in params.message
    assert "Acme CRM" in pages[0]
    seen = [r for r in setup.upstream.seen() if r["sub"] == "crm-user-alice" and r["status"] == 200]
    assert seen, setup.upstream.seen()


async def test_legacy_client_gets_32042_then_succeeds_with_its_own_token(
    setup: Setup, chromium: Path
) -> None:
    async def elicit(_context: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
        return types.ElicitResult(action="decline")  # declares URL elicitation; never asked here

    received: list[str] = []

    async def on_message(message: Any) -> None:  # the session's GET stream, among others
        received.append(repr(message))

    url = setup.gateway.url("crm")
    async with (
        httpx2.AsyncClient(headers=setup.headers("bob"), timeout=60) as http,
        sdk_client(
            url, http, mode="legacy", elicitation_callback=elicit, message_handler=on_message
        ) as client,
    ):
        with pytest.raises(MCPError) as caught:
            await client.call_tool("whoami", {})
        assert caught.value.code == -32042
        [elicitation] = caught.value.data["elicitations"]
        assert elicitation["mode"] == "url"
        assert elicitation["elicitationId"]
        assert "bob" not in elicitation["url"]
        await connect_in_chromium(chromium, elicitation["url"], "bob")
        for _ in range(50):  # Bastion tells the session when the connect flow finished
            if any(elicitation["elicitationId"] in m for m in received):
                break
            await asyncio.sleep(0.2)
        assert any(elicitation["elicitationId"] in m and "complete" in m.lower() for m in received), received
        result = await client.call_tool("whoami", {})
        assert json.loads(text(result))["sub"] == "crm-user-bob"
        names = [t.name for t in (await client.list_tools()).tools]
    assert "whoami" in names  # the session's upstream link opened once bob had connected


async def test_a_forwarded_link_does_not_attach_another_users_account(setup: Setup, chromium: Path) -> None:
    """carol's link, opened by someone signed in as alice, connects nothing."""
    async with (
        httpx2.AsyncClient(headers=setup.headers("carol"), timeout=60) as http,
        sdk_client(setup.gateway.url("crm"), http, mode="legacy") as client,
    ):
        result = await client.call_tool("whoami", {})  # no URL elicitation declared: a tool error
    assert result.is_error
    link = text(result).rsplit(" ", 1)[-1]
    assert link.startswith(f"{setup.gateway.base}/connect/crm?intent=")
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=str(chromium), headless=True, args=["--no-sandbox"] if os.geteuid() == 0 else []
        )
        try:
            page = await browser.new_page()
            await page.goto(link)
            await page.locator("#username").fill("alice")
            await page.locator("#password").fill(PASSWORD)
            await page.get_by_role("button", name="Sign in").click()
            body = await page.locator("main").inner_text()
        finally:
            await browser.close()
    assert "another account" in body
    assert await page_count_continue(body) == 0
    async with gateway_store(setup.gateway) as store:
        carol = await store.users.get_by_username("carol")
        assert carol is not None
        assert await store.vault.get(carol.user_id, "crm") is None


async def page_count_continue(body: str) -> int:
    return body.count("Continue")


async def test_the_aggregate_endpoint_asks_too(setup: Setup, chromium: Path) -> None:
    """dave, on the aggregate /mcp with a 2026-07-28 client: the CRM's tools are not listed before
    he connects, calling one asks him to connect, and the SDK's retry reaches the CRM as dave."""
    gateway = setup.gateway
    token = await user_token(
        gateway.base, client_id="claude", resource=gateway.url(), username="dave", password=PASSWORD
    )
    asked: list[str] = []

    async def elicit(_context: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
        assert isinstance(params, types.ElicitRequestURLParams), params
        asked.append(params.url)
        await connect_in_chromium(chromium, params.url, "dave", provider_login="alice")
        return types.ElicitResult(action="accept")

    headers = {"Authorization": f"Bearer {token['access_token']}"}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=60) as http,
        sdk_client(gateway.url(), http, mode="auto", elicitation_callback=elicit) as client,
    ):
        before = [t.name for t in (await client.list_tools()).tools]
        result = await client.call_tool("crm__whoami", {})
        after = [t.name for t in (await client.list_tools()).tools]
    assert "crm__whoami" not in before
    assert len(asked) == 1
    assert json.loads(text(result))["sub"] == "crm-user-alice"  # dave's account at the CRM
    assert "crm__whoami" in after


async def test_no_downstream_token_reaches_a_client_a_log_or_the_audit(setup: Setup) -> None:
    secrets = await stored_secrets(setup.gateway)
    assert len(secrets) >= 2  # alice's and bob's tokens, connected by the tests above
    hashes = {credential_hash(s) for s in secrets}
    assert hashes & {r["sha256"] for r in setup.upstream.seen()}  # the upstream did get them
    outputs = [setup.gateway.log(), json.dumps(audit_records(setup.gateway))]
    for user in ("alice", "bob"):
        async with (
            httpx2.AsyncClient(headers=setup.headers(user), timeout=60) as http,
            sdk_client(setup.gateway.url("crm"), http, mode="legacy") as client,
        ):
            outputs.append((await client.call_tool("whoami", {})).model_dump_json())
            outputs.append((await client.list_tools()).model_dump_json())
    for secret in secrets:
        for output in outputs:
            assert secret not in output


def modern_call(request_id: int, **extra: Any) -> tuple[dict[str, Any], dict[str, str]]:
    meta = {
        "io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientCapabilities": {"elicitation": {"url": {}}},
    }
    params = {"name": "whoami", "arguments": {}, "_meta": meta, **extra}
    body = {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params}
    headers = {
        "accept": ACCEPT,
        "mcp-protocol-version": MODERN,
        "mcp-method": "tools/call",
        "mcp-name": "whoami",
    }
    return body, headers


async def rpc_post(url: str, token: str, body: dict[str, Any], headers: dict[str, str]) -> tuple[int, Any]:
    async with httpx2.AsyncClient(timeout=30) as http:
        response = await http.post(url, json=body, headers={**headers, "authorization": f"Bearer {token}"})
    raw = response.text
    if raw.startswith(("event:", "data:", ":")):
        raw = [line[5:] for line in raw.splitlines() if line.startswith("data:")][-1]
    return response.status_code, json.loads(raw)


async def test_a_forged_or_borrowed_request_state_is_refused(setup: Setup) -> None:
    """carol (never connected) is asked; her requestState, altered or replayed by another user
    or for another tool, is refused with -32602, and nothing reaches the upstream."""
    url = setup.gateway.url("crm")
    body, headers = modern_call(1)
    status, first = await rpc_post(url, setup.tokens["carol"], body, headers)
    assert status == 200
    state = first["result"]["requestState"]
    before = len(setup.upstream.seen())
    answers = {"bastion_connect_crm": {"action": "accept"}}
    cases = {
        "altered": (setup.tokens["carol"], {"requestState": state[:-3] + "AAA"}),
        "another user": (setup.tokens["bob"], {"requestState": state}),
        "another tool": (setup.tokens["carol"], {"requestState": state, "name": "crm_update"}),
        "garbage": (setup.tokens["carol"], {"requestState": "bastion-connect.%%%"}),
    }
    for case, (token, extra) in cases.items():
        retry, retry_headers = modern_call(2, inputResponses=answers, **extra)
        if extra.get("name"):
            retry_headers["mcp-name"] = str(extra["name"])
        status, answer = await rpc_post(url, token, retry, retry_headers)
        assert status == 400, (case, answer)
        assert answer["error"]["code"] == -32602, (case, answer)
    # the genuine retry, still unconnected, is asked again
    retry, retry_headers = modern_call(3, inputResponses=answers, requestState=state)
    status, again = await rpc_post(url, setup.tokens["carol"], retry, retry_headers)
    assert status == 200
    assert again["result"]["resultType"] == "input_required"
    assert len(setup.upstream.seen()) == before
