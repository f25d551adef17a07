"""Signing in through an Entra-like IdP (panva's oidc-provider, ``tests/node/idp.mjs``) in a real
browser: Debian's Chromium driven by Playwright (``executable_path=/usr/bin/chromium``;
``playwright install`` is never run). A web MCP client registers with Bastion (DCR); the user
clicks "Sign in with Microsoft" on Bastion's sign-in page, "Allow" on Bastion's consent page for
that client, types login and password into the IdP's form, accepts the IdP's consent, and the
browser lands, through Bastion's callback, on the client's redirect URI (intercepted). The code
is redeemed with PKCE and the token calls tools through Bastion as the provisioned user.

Without /usr/bin/chromium the test is skipped locally and fails under CI."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import httpx2
import jwt
import pytest
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client

from tests.support.federation_checks import assert_federated_call, idp_refresh_tokens
from tests.support.federation_upstream import FederatedNotes, assert_no_credentials, federated_notes
from tests.support.interop_oauth import CHROMIUM, missing, text_of
from tests.support.oauth import authorize_url, exchange_code, pkce, query_of

pytestmark = [pytest.mark.timeout(90)]
REDIRECT_HOST = "app.federated.test"  # never resolved: the browser's route stops it
REDIRECT = f"https://{REDIRECT_HOST}/oauth/callback"
CLIENT_NAME = "Chromium Federated App"


@pytest.fixture(scope="module")  # before the module-scoped setup: a skip costs nothing
def chromium() -> Path:
    if not CHROMIUM.is_file():
        missing(
            f"Chromium not installed at {CHROMIUM} (BASTION_TEST_CHROMIUM overrides the path)",
            "apt-get install -y chromium (scripts/install-test-deps.sh does it when run as root)",
        )
    return CHROMIUM


@pytest.fixture(scope="module")
def setup(chromium: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FederatedNotes]:
    with federated_notes(tmp_path_factory.mktemp("federation-chromium")) as setup:
        yield setup


async def register_web_client(base: str) -> str:
    async with httpx2.AsyncClient(timeout=30) as http:
        response = await http.post(
            f"{base}/register",
            json={
                "client_name": CLIENT_NAME,
                "redirect_uris": [REDIRECT],
                "application_type": "web",
                "token_endpoint_auth_method": "none",
                "grant_types": ["authorization_code", "refresh_token"],
                "response_types": ["code"],
            },
        )
    assert response.status_code == 201, response.text
    return str(response.json()["client_id"])


async def test_sign_in_through_the_idp_in_chromium(
    chromium: Path, setup: FederatedNotes, tmp_path: Path
) -> None:
    from playwright.async_api import Route, async_playwright

    fed, upstream = setup.fed, setup.upstream
    gateway = fed.gateway
    client_id = await register_web_client(gateway.base)
    proof = pkce()
    start = authorize_url(
        gateway.base,
        client_id=client_id,
        resource=setup.url,
        challenge=proof.challenge,
        redirect_uri=REDIRECT,
        state="chromium-federated",
    )
    captured: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    visited: list[str] = []

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
            page.on("request", lambda r: visited.append(r.url) if r.is_navigation_request() else None)
            await page.route(f"https://{REDIRECT_HOST}/**", at_client)
            await page.goto(start)

            # Bastion's sign-in page: the IdP is offered as a link
            await page.get_by_role("link", name="Sign in with Microsoft").click()

            # Bastion's consent for this client, before the IdP (Deny is the first button)
            allow = page.get_by_role("button", name="Allow")
            await allow.wait_for(timeout=15_000)
            await page.screenshot(path=str(tmp_path / "bastion-consent.png"), full_page=True)
            heading = await page.locator("h1").inner_text()
            facts = await page.locator("dl.facts").inner_text()
            await allow.click()

            # the IdP's sign-in form and its consent
            await page.get_by_label("Email or login").fill("alice")
            await page.get_by_label("Password").fill("x")
            await page.get_by_role("button", name="Sign in").click()
            accept = page.get_by_role("button", name="Accept")
            await accept.wait_for(timeout=15_000)
            idp_consent = await page.content()
            await accept.click()
            location = await asyncio.wait_for(captured, 15)
        except BaseException:
            print("gateway log:\n", gateway.tail(), "\nIdP log:\n", fed.idp.tail(), "\nvisited:", visited)
            raise
        finally:
            await browser.close()

    assert CLIENT_NAME in heading
    assert CLIENT_NAME in facts
    assert REDIRECT in facts  # where the user is sent after deciding
    assert "after you sign in with Microsoft" in facts
    assert (tmp_path / "bastion-consent.png").stat().st_size > 0
    assert "bastion-gateway" in idp_consent  # the IdP asks about Bastion, its one client
    # the browser's navigations: Bastion → the IdP (as Bastion's client, no resource) → Bastion's
    # callback → the client
    [to_idp] = [u for u in visited if u.startswith(fed.idp.issuer + "/auth?")]
    assert query_of(to_idp)["client_id"] == "bastion-gateway"
    assert "resource" not in query_of(to_idp)
    assert [u for u in visited if u.startswith(fed.callback + "?")], visited

    assert location.startswith(REDIRECT + "?")
    answer = query_of(location)
    assert answer["state"] == "chromium-federated"
    assert answer["iss"] == gateway.base
    async with httpx2.AsyncClient(timeout=30) as http:
        response = await exchange_code(
            http,
            gateway.base,
            code=answer["code"],
            verifier=proof.verifier,
            client_id=client_id,
            resource=setup.url,
            redirect_uri=REDIRECT,
        )
    assert response.status_code == 200, response.text
    tokens = response.json()
    claims = jwt.decode(tokens["access_token"], options={"verify_signature": False})
    assert (claims["iss"], claims["aud"]) == (gateway.base, setup.url)
    assert claims["sub"].startswith("x_")

    headers = {"Authorization": f"Bearer {tokens['access_token']}"}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=30) as http,
        Client(streamable_http_client(setup.url, http_client=http)) as client,
    ):
        added = await client.call_tool("add_note", {"title": "chromium", "body": "signed in at the IdP"})
        assert not added.is_error, text_of(added)
        assert "chromium: signed in at the IdP" in text_of(await client.call_tool("list_notes", {}))

    assert {"name": "add_note", "arguments": {"title": "chromium", "body": "signed in at the IdP"}} in (
        upstream.tool_calls
    )
    known = [tokens["access_token"], tokens.get("refresh_token"), *idp_refresh_tokens(gateway)]
    assert_no_credentials(upstream, *known)
    assert await assert_federated_call(fed, client_id=client_id, tool="add_note") == claims["sub"]
