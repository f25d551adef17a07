"""The connect pages (issue #7), driven with httpx against the real gateway, a real SaaS provider
(oidc-provider) and real MCP upstreams (``tests.support.connect_web``).

A GET never starts a provider flow; Continue needs the form's CSRF token and sends the browser
to the provider with state, PKCE S256 and the one callback; the callback attaches the account
only for the browser and the user that started it, once, and only with the provider's ``iss``
(RFC 9207); provider errors are shown by code, never by what the provider wrote; a connect link
from an agent works only for the user it was made for (MCP elicitation, URL mode: the person who
opens the URL is the user who triggered it); a pasted API key is checked, stored sealed, never
shown, and reaches the upstream; a provider that is down gets a "try again" page; sign-in never
returns off-site. Whenever anything is refused the vault is unchanged, the page is a plain page
(no stack trace), and no token, code, state or key is in the page, the log or the audit trail."""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode, urljoin

import httpx2
import pytest

from bastion.vault.provider import RETRY_AFTER_S
from tests.support.connect import provider_callback, sign_in
from tests.support.connect_web import (
    CRM_SCOPES,
    TICKETS_KEY_USER,
    ConnectStack,
    assert_not_leaked,
    assert_plain_page,
    connect_link,
    connect_stack,
    connection_events,
    opened,
    section,
    states,
    to_provider,
    vault_record,
)
from tests.support.idp import SAAS_CLIENT_ID, SAAS_CLIENT_SECRET, idp_refresh, idp_sign_in, run_saas_provider
from tests.support.oauth import (
    add_users,
    assert_page_headers,
    browser,
    hidden_fields,
    query_of,
    user_token,
)
from tests.support.saas import bearer, call_tool, credential_hash, result_json

pytestmark = [pytest.mark.node, pytest.mark.timeout(120)]
PASSWORD = "connect-web-password"
TICKETS_KEY = "tk-" + secrets.token_urlsafe(24) + "~!"
CONNECTED, REFUSED = "connection.connected", "connection.refused"
USERS = ["ann", "bob", "alice", "mallory", "carol", "dave", "erin", "frank", "gina", "hank", "ivy"]


@pytest.fixture(scope="module")
def stack(flow_tmp: Path) -> Iterator[ConnectStack]:
    with connect_stack(flow_tmp, TICKETS_KEY) as running:
        yield running


@pytest.fixture(scope="module")
async def users(stack: ConnectStack) -> dict[str, str]:
    return await add_users(stack.gateway, dict.fromkeys(USERS, PASSWORD))


async def test_a_get_never_starts_the_provider_flow(stack: ConnectStack, users: dict[str, str]) -> None:
    base, url = stack.gateway.base, f"{stack.gateway.base}/connect/crm"
    async with browser() as http:
        anonymous = await http.get(f"{url}?intent=abc_DEF-1")
        assert anonymous.status_code == 303
        assert anonymous.headers["location"] == "/login?next=/connect/crm%3Fintent%3Dabc_DEF-1"
        await sign_in(http, base, "ann", PASSWORD)
        before = states(stack)
        page = await http.get(url)
        text = assert_plain_page(page, 200)
        assert_page_headers(page)
        assert "Acme CRM" in text
        assert "crm:read" in text
        assert "ann" in text
        form = hidden_fields(text)
        assert set(form) == {"csrf"}
        assert_plain_page(await http.get(f"{base}/connect/nope"), 404)
        assert_plain_page(await http.post(f"{base}/connect/nope", data={**form, "decision": "continue"}), 404)
        tickets_csrf = hidden_fields((await http.get(f"{base}/connect/tickets")).text)["csrf"]
        login_csrf = hidden_fields((await http.get(f"{base}/login")).text)["csrf"]
        altered = form["csrf"][:-1] + ("A" if form["csrf"][-1] != "A" else "B")
        for csrf in (None, "", "forged", altered, tickets_csrf, login_csrf):
            data = {"decision": "continue"} | ({"csrf": csrf} if csrf is not None else {})
            assert_plain_page(await http.post(url, data=data), 403)
        assert_plain_page(await http.post(url, json={**form, "decision": "continue"}), 403)
        async with browser() as other:  # a valid token, from another browser of the same user
            await sign_in(other, base, "ann", PASSWORD)
            assert_plain_page(await other.post(url, data={**form, "decision": "continue"}), 403)
        cancelled = assert_plain_page(await http.post(url, data={**form, "decision": "cancel"}), 200)
        assert "Acme CRM not connected" in cancelled
        assert states(stack) == before
    assert await vault_record(stack.gateway, users["ann"], "crm") is None


async def test_connect_list_disconnect_and_a_replayed_callback(
    stack: ConnectStack, users: dict[str, str]
) -> None:
    gateway, base = stack.gateway, stack.gateway.base
    async with browser() as http:
        await sign_in(http, base, "bob", PASSWORD)
        before = states(stack)
        location = await to_provider(http, base, "crm")
        assert location.startswith(stack.saas.authorization_endpoint + "?")
        asked = query_of(location)
        assert (asked["response_type"], asked["client_id"]) == ("code", SAAS_CLIENT_ID)
        assert asked["redirect_uri"] == stack.callback
        assert asked["code_challenge_method"] == "S256"
        assert re.fullmatch(r"[A-Za-z0-9_-]{43}", asked["code_challenge"])
        assert len(asked["state"]) >= 43
        assert asked["scope"].split() == CRM_SCOPES
        assert states(stack) == before + 1
        callback = await provider_callback(location, "bob", base)
        back = query_of(callback)
        assert (back["state"], back["iss"]) == (asked["state"], stack.saas.issuer)
        code, state = back["code"], back["state"]
        text = assert_plain_page(await http.get(callback), 200, code, state)
        assert "Connected Acme CRM" in text
        assert states(stack) == before
        record = await vault_record(gateway, users["bob"], "crm")
        assert record is not None
        secret = opened(gateway, record)
        tokens = [secret["access_token"], secret["refresh_token"]]
        for token in tokens:
            assert token not in record.sealed
            assert token not in text
        assert "crm:read" in record.scopes
        assert record.account == "bob@crm.test"

        replayed = assert_plain_page(await http.get(callback), 400, code, state, *tokens)
        assert "no longer valid" in replayed
        again = await vault_record(gateway, users["bob"], "crm")
        assert again is not None
        assert (again.version, again.sealed) == (record.version, record.sealed)

        listing = assert_plain_page(await http.get(f"{base}/connections"), 200, *tokens)
        crm = section(listing, "crm")
        assert "Connected" in crm
        assert "crm:read" in crm
        assert "bob@crm.test" in crm
        assert "Not connected" in section(listing, "tickets")
        form = hidden_fields(crm)
        disconnect = f"{base}/connections/crm/disconnect"
        connect_csrf = hidden_fields((await http.get(f"{base}/connect/crm")).text)["csrf"]
        for data in ({}, {"csrf": "forged"}, {"csrf": connect_csrf}):
            assert_plain_page(await http.post(disconnect, data=data), 403)
        async with browser() as anonymous:
            assert_plain_page(await anonymous.post(disconnect, data=form), 403)
        assert_plain_page(await http.post(f"{base}/connections/nope/disconnect", data=form), 404)
        assert await vault_record(gateway, users["bob"], "crm") is not None

        gone = assert_plain_page(await http.post(disconnect, data=form), 200, *tokens)
        assert "Disconnected Acme CRM" in gone
        assert await vault_record(gateway, users["bob"], "crm") is None
        async with httpx2.AsyncClient(timeout=20) as plain:  # revoked at the provider too
            answer = await idp_refresh(plain, stack.saas, client=stack.saas.client, refresh_token=tokens[1])
        assert answer.json()["error"] == "invalid_grant"
        twice = assert_plain_page(await http.post(disconnect, data=form), 200)
        assert "Acme CRM was not connected" in twice
    records = assert_not_leaked(gateway, [*tokens, code, state])
    assert connection_events(records, users["bob"]) == [
        (CONNECTED, "connection crm (oauth)"),
        (REFUSED, "unknown, used or expired state"),
        *[(REFUSED, "connection crm: disconnect without a valid CSRF token")] * 3,
        ("connection.disconnected", "connection crm"),
    ]


async def test_a_callback_works_only_for_the_browser_and_user_that_started_it(
    stack: ConnectStack, users: dict[str, str]
) -> None:
    base = stack.gateway.base
    async with browser() as alice, browser() as mallory, browser() as alice_elsewhere:
        await sign_in(alice, base, "alice", PASSWORD)
        callback = await provider_callback(await to_provider(alice, base, "crm"), "alice", base)
        code, state = query_of(callback)["code"], query_of(callback)["state"]
        await sign_in(mallory, base, "mallory", PASSWORD)  # completes alice's flow in her browser
        assert_plain_page(await mallory.get(callback), 400, code, state)
        await sign_in(alice_elsewhere, base, "alice", PASSWORD)  # alice herself, another browser
        assert_plain_page(await alice_elsewhere.get(callback), 400, code, state)
        async with browser() as nobody:
            assert_plain_page(await nobody.get(callback), 400, code, state)
        await sign_in(alice, base, "mallory", PASSWORD)  # alice's browser, now signed in as mallory
        wrong_user = assert_plain_page(await alice.get(callback), 403, code, state, "alice")
        assert "another account" in wrong_user
        # none of this burned alice's state: back as alice, in her browser, it works once
        await sign_in(alice, base, "alice", PASSWORD)
        assert "Connected Acme CRM" in assert_plain_page(await alice.get(callback), 200, code, state)
    assert await vault_record(stack.gateway, users["mallory"], "crm") is None
    assert await vault_record(stack.gateway, users["alice"], "crm") is not None
    records = assert_not_leaked(stack.gateway, [code, state])
    assert connection_events(records, users["mallory"]) == [
        (REFUSED, "connection crm: state from another browser"),
        (REFUSED, "connection crm: state of another user"),
    ]
    assert connection_events(records, users["alice"]) == [
        (REFUSED, "connection crm: state from another browser"),
        (CONNECTED, "connection crm (oauth)"),
    ]


async def test_provider_errors_and_hostile_callbacks(stack: ConnectStack, users: dict[str, str]) -> None:
    base, issuer = stack.gateway.base, stack.saas.issuer
    async with browser() as http:
        await sign_in(http, base, "carol", PASSWORD)
        async with httpx2.AsyncClient(timeout=30) as provider_browser:  # cancels at the provider
            back = await idp_sign_in(
                provider_browser,
                await to_provider(http, base, "crm"),
                login="alice",
                stop_prefix=stack.callback,
                cancel=True,
            )
        cancelled = urljoin(stack.callback, back.headers["location"])
        assert query_of(cancelled)["error"] == "access_denied"
        text = assert_plain_page(
            await http.get(cancelled), 400, query_of(cancelled).get("error_description", "-")
        )
        assert "Acme CRM not connected" in text
        assert "(access_denied)" in text

        hostile = [
            ("access_denied", "<script>alert(1)</script>", "(access_denied)"),
            ("<img src=x onerror=alert(1)>", "Call +1 555 0100 for help", "(invalid_response)"),
            ("server_error", "Visit https://evil.example to fix this", "(server_error)"),
        ]
        for error, description, shown in hostile:
            state = query_of(await to_provider(http, base, "crm"))["state"]
            query = urlencode(
                {"state": state, "error": error, "error_description": description, "iss": issuer}
            )
            text = assert_plain_page(await http.get(f"{stack.callback}?{query}"), 400, description, state)
            assert shown in text
            assert "not connected" in text
            assert "alert(1)" not in text  # not even escaped: what the provider wrote is never shown
            assert "evil.example" not in text

        # the provider's real answer with another provider's iss (RFC 9207 mix-up): refused
        callback = await provider_callback(await to_provider(http, base, "crm"), "alice", base)
        params = query_of(callback)
        assert params["iss"] == issuer
        forged = f"{stack.callback}?{urlencode({**params, 'iss': 'https://evil.example'})}"
        assert_plain_page(await http.get(forged), 400, params["code"], params["state"])

        garbage = [
            "",
            "?state=",
            "?code=x",
            "?state=nope&code=x",
            "?state=" + "A" * 5000,
            "?state=%00%FF&code=%FF",
        ]
        garbage.append("?" + urlencode({"state": secrets.token_urlsafe(32), "code": "c", "iss": issuer}))
        for query in garbage:
            assert_plain_page(await http.get(f"{stack.callback}{query}"), 400)
    assert await vault_record(stack.gateway, users["carol"], "crm") is None
    records = assert_not_leaked(stack.gateway, [params["code"], params["state"]])
    seen = connection_events(records, users["carol"])
    assert seen[:5] == [
        (REFUSED, f"connection crm: provider error {code}")
        for code in ("access_denied", "access_denied", "invalid_response", "server_error")
    ] + [(REFUSED, "connection crm: response without the provider's iss")]
    assert {event for event, _ in seen} == {REFUSED}


async def test_a_connect_link_works_only_for_the_user_it_was_made_for(
    stack: ConnectStack, users: dict[str, str]
) -> None:
    gateway, base = stack.gateway, stack.gateway.base
    token = await user_token(
        base, client_id="claude", resource=gateway.url("crm"), username="dave", password=PASSWORD
    )
    link = await connect_link(gateway.url("crm"), str(token["access_token"]))
    assert link.startswith(f"{base}/connect/crm?intent=")
    intent = query_of(link)["intent"]
    here = f"/connect/crm?intent={intent}"
    async with browser() as erin:  # dave's link, opened by erin: sign-in, then refused
        to_login = await erin.get(link)
        assert to_login.status_code == 303
        form = hidden_fields((await erin.get(urljoin(base, to_login.headers["location"]))).text)
        assert form["next"] == here
        signed_in = await erin.post(f"{base}/login", data={**form, "username": "erin", "password": PASSWORD})
        assert signed_in.headers["location"] == here
        text = assert_plain_page(await erin.get(link), 403, intent)
        assert "another account" in text
        assert 'name="csrf"' not in text
        assert "Continue" not in text
        before = states(stack)
        own = hidden_fields((await erin.get(f"{base}/connect/crm")).text)  # her own valid form
        data = {**own, "intent": intent, "decision": "continue"}
        assert_plain_page(await erin.post(f"{base}/connect/crm", data=data), 403, intent)
        tickets = hidden_fields((await erin.get(f"{base}/connect/tickets")).text)
        data = {**tickets, "intent": intent, "api_key": "tk-erin-key"}
        assert_plain_page(await erin.post(f"{base}/connect/tickets", data=data), 403)
        assert_plain_page(await erin.get(f"{base}/connect/tickets", params={"intent": intent}), 403)
        for bad in ("nope", secrets.token_urlsafe(32), "<script>alert(1)</script>", "A" * 200, ""):
            text = assert_plain_page(await erin.get(f"{base}/connect/crm", params={"intent": bad}), 403)
            assert "<script>alert" not in text
        assert states(stack) == before
    async with browser() as dave:  # dave himself: the confirm page carries the intent, then done
        await sign_in(dave, base, "dave", PASSWORD)
        assert hidden_fields((await dave.get(link)).text)["intent"] == intent
        callback = await provider_callback(await to_provider(dave, base, "crm", link), "bob", base)
        assert "Connected Acme CRM" in assert_plain_page(await dave.get(callback), 200)
        assert "another account or has expired" in assert_plain_page(await dave.get(link), 403)
    for connection in ("crm", "tickets"):
        assert await vault_record(gateway, users["erin"], connection) is None
    assert await vault_record(gateway, users["dave"], "crm") is not None
    records = assert_not_leaked(gateway, [intent, str(token["access_token"])])
    refused = connection_events(records, users["erin"])
    assert len(refused) == 9
    assert all(e == REFUSED and d.endswith("intent expired or made for another user") for e, d in refused)
    [connected] = [r for r in records if r["event"] == CONNECTED and r["subject"] == users["dave"]]
    assert connected["client_id"] == "claude"  # the agent that asked


async def test_pasting_an_api_key(stack: ConnectStack, users: dict[str, str]) -> None:
    gateway, base = stack.gateway, stack.gateway.base
    url = f"{base}/connect/tickets"
    async with browser() as http:
        await sign_in(http, base, "frank", PASSWORD)
        text = assert_plain_page(await http.get(url), 200)
        assert 'type="password"' in text
        assert "&lt;b&gt;not&lt;/b&gt;" in text  # the instructions are text, not markup
        form = hidden_fields(text)
        bad_keys = [
            "",
            "   ",
            "tk-with\x01control",
            "tk\x00nul",
            "tk with space",
            "tk-\u00e9t\u00e9",
            "k" * 5000,
        ]
        for bad in [*bad_keys, "tk-\r\nX-Injected: 1", TICKETS_KEY + "\x7f"]:
            page = await http.post(url, data={**form, "api_key": bad})
            text = assert_plain_page(page, 400, *([bad.strip()] if bad.strip() else []))
            assert 'id="key-error"' in text
            assert 'name="api_key"' in text
            assert TICKETS_KEY not in text
            assert await vault_record(gateway, users["frank"], "tickets") is None
        assert_plain_page(await http.post(url, data={"api_key": TICKETS_KEY}), 403, TICKETS_KEY)
        saved = await http.post(url, data={**form, "api_key": f"  {TICKETS_KEY}\n"})
        assert "Connected Tickets" in assert_plain_page(saved, 200, TICKETS_KEY)
        listing = assert_plain_page(await http.get(f"{base}/connections"), 200, TICKETS_KEY)
        assert "Connected" in section(listing, "tickets")
    record = await vault_record(gateway, users["frank"], "tickets")
    assert record is not None
    assert TICKETS_KEY not in record.sealed
    assert opened(gateway, record)["api_key"] == TICKETS_KEY
    token = await user_token(
        base, client_id="claude", resource=gateway.url("tickets"), username="frank", password=PASSWORD
    )
    result = await call_tool(gateway.url("tickets"), "whoami", headers=bearer(str(token["access_token"])))
    assert result_json(result)["sub"] == TICKETS_KEY_USER
    seen = stack.tickets.seen()[-1]
    assert (seen["kind"], seen["sha256"]) == ("api_key", credential_hash(TICKETS_KEY))
    records = assert_not_leaked(gateway, [TICKETS_KEY])
    assert connection_events(records, users["frank"]) == [
        *[(REFUSED, "connection tickets: API key in the wrong format")] * 9,
        (CONNECTED, "connection tickets (api key)"),
    ]


@pytest.mark.parametrize(
    ("connection", "status", "says"),
    [("crm-down", 503, "Down CRM could not be reached"), ("crm-refused", 502, "did not complete")],
)
async def test_a_provider_that_fails_to_redeem_the_code(
    stack: ConnectStack, users: dict[str, str], connection: str, status: int, says: str
) -> None:
    base = stack.gateway.base
    async with browser() as http:
        await sign_in(http, base, "gina", PASSWORD)
        location = await to_provider(http, base, connection)
        assert location.startswith(stack.saas.authorization_endpoint + "?")
        callback = await provider_callback(location, "alice", base)
        code, state = query_of(callback)["code"], query_of(callback)["state"]
        text = assert_plain_page(await http.get(callback), status, code, state)
        assert says in text
        assert "not connected" in text
        assert_plain_page(await http.get(callback), 400, code, state)  # the state is used up
    assert await vault_record(stack.gateway, users["gina"], connection) is None
    records = assert_not_leaked(stack.gateway, [code, state, "not-the-secret", SAAS_CLIENT_SECRET])
    seen = connection_events(records, users["gina"])
    why = "could not be reached" if status == 503 else "refused the code"
    assert (REFUSED, f"connection {connection}: the provider {why}") in seen
    assert CONNECTED not in {event for event, _ in seen}


async def test_a_provider_down_at_continue_is_tried_again(stack: ConnectStack, users: dict[str, str]) -> None:
    """The late provider was not running when the gateway started: Continue says try again, and
    once it runs (and the failure is no longer cached) the same form goes through."""
    base, url = stack.gateway.base, f"{stack.gateway.base}/connect/late"
    async with browser() as http:
        await sign_in(http, base, "hank", PASSWORD)
        form = hidden_fields(assert_plain_page(await http.get(url), 200))
        before = states(stack)
        down = assert_plain_page(await http.post(url, data={**form, "decision": "continue"}), 503)
        failed_at = time.monotonic()
        assert "Late CRM could not be reached" in down
        assert "try again" in down
        assert states(stack) == before
        with run_saas_provider(stack.tmp, redirect_uris=[stack.callback], port=stack.late_port) as late:
            await asyncio.sleep(max(0.0, failed_at + RETRY_AFTER_S + 0.5 - time.monotonic()))
            continued = await http.post(url, data={**form, "decision": "continue"})
            assert continued.status_code == 303, continued.text[:800]
            location = continued.headers["location"]
            assert location.startswith(late.authorization_endpoint + "?")
            callback = await provider_callback(location, "alice", base)
            assert "Connected Late CRM" in assert_plain_page(await http.get(callback), 200)
    assert await vault_record(stack.gateway, users["hank"], "late") is not None
    assert connection_events(assert_not_leaked(stack.gateway, []), users["hank"]) == [
        (REFUSED, "connection late: the provider could not be reached"),
        (CONNECTED, "connection late (oauth)"),
    ]


async def test_my_connections_needs_a_signed_in_browser(stack: ConnectStack, users: dict[str, str]) -> None:
    base = stack.gateway.base
    async with browser() as http:
        anonymous = await http.get(f"{base}/connections")
        assert anonymous.status_code == 303
        assert anonymous.headers["location"] == "/login?next=/connections"
        await sign_in(http, base, "ivy", PASSWORD)
        form = hidden_fields(assert_plain_page(await http.get(f"{base}/connections"), 200))
        logout = hidden_fields((await http.get(f"{base}/logout")).text)
        assert (await http.post(f"{base}/logout", data=logout)).status_code == 200
        assert (await http.get(f"{base}/connections")).status_code == 303
        assert_plain_page(await http.post(f"{base}/connections/crm/disconnect", data=form), 403)


@pytest.mark.parametrize(
    "target",
    [
        "//evil.example/x",
        "///evil.example",
        "https://evil.example",
        "https:evil.example",
        "/\\evil.example",
        "\\\\evil.example",
        "/%5Cevil.example",
        "%2F%2Fevil.example",
        "javascript:alert(1)",
        "/connect/../authorize",
        "/connect/%2e%2e/authorize",
        "/connect/crm@evil.example",
        "/connections\r\nLocation: https://evil.example",
        "/connect/callback",
    ],
)
async def test_sign_in_never_returns_off_site(
    stack: ConnectStack, users: dict[str, str], target: str
) -> None:
    base = stack.gateway.base
    async with browser() as http:
        page = await http.get(f"{base}/login", params={"next": target})
        form = hidden_fields(page.text)
        assert form.get("next", "") == ""
        data = {**form, "next": target, "username": "ivy", "password": PASSWORD}
        response = await http.post(f"{base}/login", data=data)
    assert response.status_code == 303
    assert response.headers["location"] == "/login/done"


@pytest.mark.parametrize("target", ["/connections", "/connect/crm", "/connect/tickets?intent=abc_DEF-1"])
async def test_sign_in_returns_to_the_connect_pages(
    stack: ConnectStack, users: dict[str, str], target: str
) -> None:
    base = stack.gateway.base
    async with browser() as http:
        form = hidden_fields((await http.get(f"{base}/login", params={"next": target})).text)
        assert form["next"] == target
        response = await http.post(f"{base}/login", data={**form, "username": "ivy", "password": PASSWORD})
    assert response.status_code == 303
    assert response.headers["location"] == target
