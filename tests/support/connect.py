"""Connect a downstream account through Bastion's own pages, as a browser would, with httpx:
sign in to Bastion, Continue on the confirm page, sign in at the provider's real pages, and land
on Bastion's callback (tests in real Chromium use Playwright instead; this is for the many tests
that only need a connected user)."""

from __future__ import annotations

from urllib.parse import urljoin

import httpx2

from tests.support.idp import idp_sign_in
from tests.support.oauth import hidden_fields


async def connect_account(
    base: str,
    connection: str,
    *,
    username: str,
    password: str,
    provider_login: str | None = None,
    url: str | None = None,
) -> httpx2.Response:
    """Run the connect flow from ``url`` (default ``/connect/<connection>``); the response of
    Bastion's callback (the "connected" page, or the page saying why not)."""
    callback = f"{base}/connect/callback"
    async with httpx2.AsyncClient(follow_redirects=False, timeout=30) as http:
        start = url or f"{base}/connect/{connection}"
        response = await http.get(start)
        if response.is_redirect:  # not signed in yet: Bastion's sign-in page comes back here
            login = urljoin(start, response.headers["location"])
            form = hidden_fields((await http.get(login)).text)
            signed_in = await http.post(
                f"{base}/login", data={**form, "username": username, "password": password}
            )
            assert signed_in.is_redirect, signed_in.text[:800]
            response = await http.get(urljoin(base, signed_in.headers["location"]))
        assert response.status_code == 200, response.text[:800]
        fields = hidden_fields(response.text)
        continued = await http.post(f"{base}/connect/{connection}", data={**fields, "decision": "continue"})
        assert continued.is_redirect, continued.text[:800]
        at_provider = continued.headers["location"]
        async with httpx2.AsyncClient(timeout=30) as provider_browser:  # its own session there
            back = await idp_sign_in(
                provider_browser, at_provider, login=provider_login or username, stop_prefix=callback
            )
        return await http.get(urljoin(callback, back.headers["location"]))


async def paste_api_key(
    base: str, connection: str, *, username: str, password: str, key: str
) -> httpx2.Response:
    """Sign in to Bastion and save ``key`` on the connection's paste page; the page answered."""
    async with httpx2.AsyncClient(follow_redirects=False, timeout=30) as http:
        start = f"{base}/connect/{connection}"
        response = await http.get(start)
        if response.is_redirect:
            form = hidden_fields((await http.get(urljoin(start, response.headers["location"]))).text)
            signed_in = await http.post(
                f"{base}/login", data={**form, "username": username, "password": password}
            )
            assert signed_in.is_redirect, signed_in.text[:800]
            response = await http.get(urljoin(base, signed_in.headers["location"]))
        assert response.status_code == 200, response.text[:800]
        fields = hidden_fields(response.text)
        return await http.post(start, data={**fields, "api_key": key})


async def sign_in(http: httpx2.AsyncClient, base: str, username: str, password: str) -> None:
    """Sign ``http`` (a browser: its cookie jar) in to Bastion's pages as ``username``."""
    form = hidden_fields((await http.get(f"{base}/login")).text)
    response = await http.post(f"{base}/login", data={**form, "username": username, "password": password})
    assert response.is_redirect, response.text[:800]


async def start_connect(http: httpx2.AsyncClient, base: str, connection: str, query: str = "") -> str:
    """Confirm on ``/connect/<connection>`` (signed in already); the provider URL it sends to."""
    page = await http.get(f"{base}/connect/{connection}{query}")
    assert page.status_code == 200, page.text[:800]
    continued = await http.post(
        f"{base}/connect/{connection}", data={**hidden_fields(page.text), "decision": "continue"}
    )
    assert continued.is_redirect, continued.text[:800]
    return str(continued.headers["location"])


async def provider_callback(provider_url: str, login: str, base: str) -> str:
    """Sign in at the provider (its own browser session); the callback URL it sends back to."""
    async with httpx2.AsyncClient(timeout=30) as provider_browser:
        back = await idp_sign_in(
            provider_browser, provider_url, login=login, stop_prefix=f"{base}/connect/callback"
        )
    return urljoin(f"{base}/connect/callback", back.headers["location"])
