"""Bastion's sign-in page against the real ``bastion serve``: wrong passwords, the brute-force
limits (per username, per address), pending requests bound to the browser that started them,
disabled users, and re-authentication with ``prompt=login``."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx2
import pytest

from bastion.idp.users import LocalUsers
from tests.support.gateway import Gateway, run_gateway
from tests.support.oauth import (
    REDIRECT_URI,
    add_users,
    assert_page_headers,
    authorize_url,
    browser,
    demo_upstream,
    gateway_store,
    pending_request,
    pkce,
    query_of,
    submit_login,
)

PASSWORD = "correct horse battery"
USERS = ["alice", "frank", "gina", "victim", "mallory", "dora", "lena", "target"]
CLIENTS = [{"client_id": "app", "name": "Flow App", "redirect_uris": [REDIRECT_URI], "trusted": True}]
MAX_PER_USER = 3
MAX_PER_ADDRESS = 5
FAILED = "The username or password is not right."
THROTTLED = "Too many failed sign-ins."
EXPIRED = "Sign-in request expired"
_addresses = itertools.count(2)


@pytest.fixture(scope="module")
def gw(flow_tmp: Path) -> Iterator[Gateway]:
    limits = {"max_failures_per_user": MAX_PER_USER, "max_failures_per_address": MAX_PER_ADDRESS}
    auth = {"enabled": True, "login": limits}
    with run_gateway(flow_tmp, [demo_upstream("a", flow_tmp)], extra={"auth": auth, "clients": CLIENTS}) as g:
        yield g


@pytest.fixture(scope="module")
async def users(gw: Gateway) -> dict[str, str]:
    return await add_users(gw, dict.fromkeys(USERS, PASSWORD))


def new_browser() -> httpx2.AsyncClient:
    """A browser on a loopback address of its own: sign-in limits are also counted per address."""
    return browser(f"127.0.0.{next(_addresses)}")


@pytest.fixture
async def http(users: dict[str, str]) -> AsyncIterator[httpx2.AsyncClient]:
    async with new_browser() as client:
        yield client


def url_for(gw: Gateway, **params: str) -> str:
    return authorize_url(gw.base, client_id="app", resource=gw.url("a"), challenge=pkce().challenge, **params)


async def signed_out(http: httpx2.AsyncClient, gw: Gateway, handle: str) -> bool:
    """Whether this browser is (still) not signed in: the request sends it back to /login."""
    resumed = await http.get(f"{gw.base}/authorize/continue?request={handle}")
    return resumed.status_code == 303 and resumed.headers["location"].startswith("/login")


async def test_wrong_password_shows_an_error_and_signs_nobody_in(
    gw: Gateway, http: httpx2.AsyncClient
) -> None:
    handle = await pending_request(http, url_for(gw))
    for username in ("frank", "nobody-by-this-name"):
        failed = await submit_login(http, gw.base, handle, username, "not the password")
        assert failed.status_code == 401
        assert FAILED in failed.text  # the same answer for a wrong password and an unknown user
        assert 'name="password"' in failed.text
        assert_page_headers(failed)
    assert await signed_out(http, gw, handle)


async def test_sign_in_form_needs_its_csrf_token(gw: Gateway, http: httpx2.AsyncClient) -> None:
    handle = await pending_request(http, url_for(gw))
    fields = {"request": handle, "username": "frank", "password": PASSWORD}
    refused = await http.post(f"{gw.base}/login", data=fields)
    assert refused.status_code == 403
    assert await signed_out(http, gw, handle)


async def test_brute_force_is_refused_even_with_the_right_password(
    gw: Gateway, http: httpx2.AsyncClient
) -> None:
    handle = await pending_request(http, url_for(gw))
    for attempt in range(MAX_PER_USER):
        failed = await submit_login(http, gw.base, handle, "victim", f"guess number {attempt}")
        assert failed.status_code == 401
    refused = await submit_login(http, gw.base, handle, "victim", PASSWORD)
    assert refused.status_code == 429
    assert THROTTLED in refused.text
    assert await signed_out(http, gw, handle)
    # the limit is per username, not per browser: a fresh browser elsewhere is refused too ...
    async with new_browser() as other:
        other_handle = await pending_request(other, url_for(gw))
        assert (await submit_login(other, gw.base, other_handle, "victim", PASSWORD)).status_code == 429
        # ... while another user signs in normally
        assert (await submit_login(other, gw.base, other_handle, "alice", PASSWORD)).status_code == 303


async def test_failures_from_one_address_are_limited(gw: Gateway, http: httpx2.AsyncClient) -> None:
    handle = await pending_request(http, url_for(gw))
    guesses = ["frank", "gina", "alice", "dora", "lena"]  # spread over users: no per-user limit is reached
    for username in guesses[:MAX_PER_ADDRESS]:
        assert (await submit_login(http, gw.base, handle, username, "wrong guess")).status_code == 401
    refused = await submit_login(http, gw.base, handle, "mallory", PASSWORD)
    assert refused.status_code == 429
    assert await signed_out(http, gw, handle)


async def test_request_handle_from_another_browser_is_expired(gw: Gateway, http: httpx2.AsyncClient) -> None:
    handle = await pending_request(http, url_for(gw, state="mine"))
    async with new_browser() as thief:
        shown = await thief.get(f"{gw.base}/authorize/continue?request={handle}")
        assert shown.status_code == 400
        assert EXPIRED in shown.text
        signed_in = await submit_login(thief, gw.base, handle, "gina", PASSWORD)
        assert signed_in.status_code == 303
        after = await thief.get(gw.base + signed_in.headers["location"])
        assert after.status_code == 400
        assert EXPIRED in after.text
        assert "location" not in after.headers
    # the browser that started it can still finish it
    signed_in = await submit_login(http, gw.base, handle, "gina", PASSWORD)
    finished = await http.get(gw.base + signed_in.headers["location"])
    assert finished.status_code == 302
    assert query_of(finished.headers["location"])["state"] == "mine"


async def test_prompt_login_asks_a_signed_in_user_again(gw: Gateway, http: httpx2.AsyncClient) -> None:
    handle = await pending_request(http, url_for(gw))
    signed_in = await submit_login(http, gw.base, handle, "dora", PASSWORD)
    assert (await http.get(gw.base + signed_in.headers["location"])).status_code == 302
    assert (await http.get(url_for(gw))).status_code == 302  # signed in: straight back with a code
    # Bastion compares whole seconds (the sign-in time in the cookie with the request's creation
    # time): a request in the same second as the sign-in counts as signed in after it
    await asyncio.sleep(1.1)
    again = await http.get(url_for(gw, prompt="login"))
    assert again.status_code == 303
    assert again.headers["location"].startswith("/login?request=")
    fresh = await submit_login(
        http, gw.base, query_of(again.headers["location"])["request"], "dora", PASSWORD
    )
    finished = await http.get(gw.base + fresh.headers["location"])
    assert finished.status_code == 302
    assert "code" in query_of(finished.headers["location"])


async def test_disabled_user_cannot_sign_in_and_loses_the_session(
    gw: Gateway, http: httpx2.AsyncClient
) -> None:
    handle = await pending_request(http, url_for(gw))
    signed_in = await submit_login(http, gw.base, handle, "lena", PASSWORD)
    assert (await http.get(gw.base + signed_in.headers["location"])).status_code == 302
    async with gateway_store(gw) as store:  # what `bastion users disable lena` does
        await LocalUsers(store.users).set_disabled("lena", True)
    handle = await pending_request(http, url_for(gw))  # the session no longer counts
    refused = await submit_login(http, gw.base, handle, "lena", PASSWORD)
    assert refused.status_code == 401
    assert FAILED in refused.text


async def test_successful_sign_ins_do_not_use_up_the_address_failure_limit(
    gw: Gateway, http: httpx2.AsyncClient
) -> None:
    for _ in range(MAX_PER_ADDRESS + 1):
        http.cookies.clear()
        handle = await pending_request(http, url_for(gw))
        assert (await submit_login(http, gw.base, handle, "alice", PASSWORD)).status_code == 303


async def test_the_per_user_limit_holds_for_unicode_variants_of_the_username(
    gw: Gateway, http: httpx2.AsyncClient
) -> None:
    handle = await pending_request(http, url_for(gw))
    for attempt in range(MAX_PER_USER):
        assert (await submit_login(http, gw.base, handle, "target", f"guess {attempt}")).status_code == 401
    assert (await submit_login(http, gw.base, handle, "target", PASSWORD)).status_code == 429
    fullwidth = "".join(chr(ord(c) - ord("a") + ord("\uff41")) for c in "target")  # fullwidth "target"
    variant = await submit_login(http, gw.base, handle, fullwidth, PASSWORD)
    assert variant.status_code == 429
