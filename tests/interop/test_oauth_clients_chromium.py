"""Bastion's sign-in and consent pages in a real browser: Debian's Chromium driven by Playwright
(``executable_path=/usr/bin/chromium``; ``playwright install`` is never run). The user types
the username and password, clicks "Sign in", reads the consent screen (a screenshot is kept in
the test's tmp dir) and clicks "Allow"; the browser's navigation to the client's redirect URI
is intercepted, the code is redeemed with PKCE and the token calls a tool through Bastion.

Without /usr/bin/chromium the test is skipped locally and fails under CI (the install script
installs the ``chromium`` Debian package as root)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import httpx2
import pytest
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client

from tests.support.gateway import Gateway
from tests.support.interop_oauth import (
    BROWSER_CLIENT,
    BROWSER_CLIENT_NAME,
    BROWSER_REDIRECT,
    CHROMIUM,
    PASSWORD,
    USER,
    InteropSetup,
    interop_setup,
    missing,
    text_of,
)
from tests.support.oauth import authorize_url, exchange_code, pkce, query_of

pytestmark = [pytest.mark.timeout(90)]
REDIRECT_HOST = "app.interop.test"


@pytest.fixture(scope="module")
def gateway(
    chromium: Path, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Gateway:
    setup: InteropSetup = interop_setup(request, tmp_path_factory)
    return setup.gateway


@pytest.fixture(scope="module")  # before the module-scoped gateway: a skip costs nothing
def chromium() -> Path:
    if not CHROMIUM.is_file():
        missing(
            f"Chromium not installed at {CHROMIUM} (BASTION_TEST_CHROMIUM overrides the path)",
            "apt-get install -y chromium (scripts/install-test-deps.sh does it when run as root)",
        )
    return CHROMIUM


async def test_sign_in_and_consent_in_chromium(chromium: Path, gateway: Gateway, tmp_path: Path) -> None:
    from playwright.async_api import Route, async_playwright

    resource = gateway.url("demo")
    proof = pkce()
    start = authorize_url(
        gateway.base,
        client_id=BROWSER_CLIENT,
        resource=resource,
        challenge=proof.challenge,
        redirect_uri=BROWSER_REDIRECT,
        state="chromium-state",
    )
    captured: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def at_client(route: Route) -> None:  # the client's redirect URI: stop here
        if not captured.done():
            captured.set_result(route.request.url)
        await route.fulfill(status=200, content_type="text/html", body="<p>client got the code</p>")

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=str(chromium),
            headless=True,
            args=["--no-sandbox"] if os.geteuid() == 0 else [],
        )
        try:
            page = await browser.new_page()
            await page.route(f"https://{REDIRECT_HOST}/**", at_client)
            await page.goto(start)
            await page.get_by_label("Username").fill(USER)
            await page.get_by_label("Password").fill(PASSWORD)
            await page.get_by_role("button", name="Sign in").click()

            allow = page.get_by_role("button", name="Allow")
            await allow.wait_for(timeout=15_000)
            await page.screenshot(path=str(tmp_path / "consent.png"), full_page=True)
            heading = await page.locator("h1").inner_text()
            facts = await page.locator("dl.facts").inner_text()
            await allow.click()
            location = await asyncio.wait_for(captured, 15)
        finally:
            await browser.close()

    assert BROWSER_CLIENT_NAME in heading
    assert BROWSER_CLIENT_NAME in facts
    assert REDIRECT_HOST in facts  # where the user is sent after deciding
    assert BROWSER_REDIRECT in facts
    assert (tmp_path / "consent.png").stat().st_size > 0

    assert location.startswith(BROWSER_REDIRECT + "?")
    answer = query_of(location)
    assert answer["state"] == "chromium-state"
    assert answer["iss"] == gateway.base
    async with httpx2.AsyncClient(timeout=30) as http:
        response = await exchange_code(
            http,
            gateway.base,
            code=answer["code"],
            verifier=proof.verifier,
            client_id=BROWSER_CLIENT,
            resource=resource,
            redirect_uri=BROWSER_REDIRECT,
        )
    assert response.status_code == 200, response.text
    token = response.json()["access_token"]

    headers = {"Authorization": f"Bearer {token}"}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=30) as http,
        Client(streamable_http_client(resource, http_client=http)) as client,
    ):
        added = await client.call_tool("add_note", {"title": "chromium", "body": "consented in Chromium"})
        assert not added.is_error, text_of(added)
        assert "chromium" in text_of(await client.call_tool("list_notes", {}))
