"""The browser half of Bastion's authorization server against the real ``bastion serve``:
/authorize validation (an error page when the client or redirect URI is not trusted, a redirect
with ``error``, ``state`` and ``iss`` otherwise), ``prompt``, and the consent page with its CSRF
protection — and what each refusal leaves behind (nothing). Sign-in: test_oauth_login.py."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlencode

import httpx2
import pytest

from tests.support.gateway import Gateway, run_gateway
from tests.support.oauth import (
    REDIRECT_URI,
    add_users,
    assert_page_headers,
    authorize_url,
    browser,
    consent_of,
    demo_upstream,
    exchange_code,
    hidden_fields,
    pending_request,
    pkce,
    query_of,
    sign_in_and_consent,
    stored_grants,
    submit_login,
)

PASSWORD = "correct horse battery"
USERS = ["alice", "bob", "carol", "dave", "erin", "henry", "ivan"]
CLIENTS = [
    {"client_id": "app", "name": "Flow App", "redirect_uris": [REDIRECT_URI]},
    {"client_id": "app2", "name": "Two URIs", "redirect_uris": [REDIRECT_URI, "https://app2.example/cb"]},
    {"client_id": "first-party", "name": "First Party", "redirect_uris": [REDIRECT_URI], "trusted": True},
]
EXPIRED = "Sign-in request expired"


@pytest.fixture(scope="module")
def gw(flow_tmp: Path) -> Iterator[Gateway]:
    auth = {"enabled": True, "scopes": ["mcp", "notes"]}
    with run_gateway(flow_tmp, [demo_upstream("a", flow_tmp)], extra={"auth": auth, "clients": CLIENTS}) as g:
        yield g


@pytest.fixture(scope="module")
async def user_ids(gw: Gateway) -> dict[str, str]:
    return await add_users(gw, dict.fromkeys(USERS, PASSWORD))


@pytest.fixture
async def http(user_ids: dict[str, str]) -> AsyncIterator[httpx2.AsyncClient]:
    async with browser() as client:
        yield client


def url_for(gw: Gateway, client_id: str = "app", **params: str) -> str:
    return authorize_url(
        gw.base, client_id=client_id, resource=gw.url("a"), challenge=pkce().challenge, **params
    )


async def consent_page(http: httpx2.AsyncClient, gw: Gateway, user: str, url: str) -> httpx2.Response:
    handle = await pending_request(http, url)
    signed_in = await submit_login(http, gw.base, handle, user, PASSWORD)
    assert signed_in.status_code == 303
    page = await http.get(gw.base + signed_in.headers["location"])
    assert page.status_code == 200
    assert 'name="decision"' in page.text, page.text[:300]
    return page


# -- /authorize: errors shown on a page (the redirect URI is not trusted) ------------------------


async def test_unknown_client_gets_a_page_not_a_redirect(gw: Gateway, http: httpx2.AsyncClient) -> None:
    pending = stored_grants(gw, "authorize")
    response = await http.get(url_for(gw, client_id="no-such-client"))
    assert stored_grants(gw, "authorize") == pending
    assert response.status_code == 400
    assert "location" not in response.headers
    assert "cannot sign in" in response.text
    assert "unknown client" in response.text
    assert_page_headers(response)


@pytest.mark.parametrize(
    ("client_id", "redirect_uri"),
    [
        ("app", "https://evil.example/callback"),
        ("app", "http://127.0.0.1:53682/callback/other"),  # changed path
        ("app", "http://localhost:53682/callback"),  # another loopback host is another URI
        ("app", REDIRECT_URI + "?x=1"),
        ("app2", "https://app2.example/cb/"),
    ],
)
async def test_unregistered_redirect_uri_gets_a_page(
    gw: Gateway, http: httpx2.AsyncClient, client_id: str, redirect_uri: str
) -> None:
    pending = stored_grants(gw, "authorize")
    response = await http.get(url_for(gw, client_id=client_id, redirect_uri=redirect_uri))
    assert response.status_code == 400
    assert "location" not in response.headers
    assert "redirect_uri is not registered" in response.text
    assert stored_grants(gw, "authorize") == pending


async def test_missing_redirect_uri_with_two_registered_gets_a_page(
    gw: Gateway, http: httpx2.AsyncClient
) -> None:
    params = {"response_type": "code", "client_id": "app2", "code_challenge": pkce().challenge}
    params |= {"code_challenge_method": "S256", "resource": gw.url("a"), "state": "s"}
    response = await http.get(f"{gw.base}/authorize?{urlencode(params)}")
    assert response.status_code == 400
    assert "location" not in response.headers
    assert "redirect_uri is required" in response.text


# -- /authorize: errors sent back to the (trusted) redirect URI ----------------------------------

CHALLENGE = pkce().challenge


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"code_challenge": None}, "invalid_request"),
        ({"code_challenge_method": "plain"}, "invalid_request"),
        ({"code_challenge_method": None}, "invalid_request"),
        ({"code_challenge": "not-a-sha256-challenge"}, "invalid_request"),
        ({"code_challenge": CHALLENGE + "A"}, "invalid_request"),
        ({"resource": None}, "invalid_target"),
        ({"resource": "{base}/mcp/nope"}, "invalid_target"),
        ({"resource": "{base}/mcp/a/"}, "invalid_target"),
        ({"resource": ["{base}/mcp/a", "{base}/mcp"]}, "invalid_target"),
        ({"response_type": "token"}, "unsupported_response_type"),
        ({"response_type": None}, "unsupported_response_type"),
        ({"scope": "mcp admin"}, "invalid_scope"),
        ({"response_mode": "fragment"}, "invalid_request"),
        ({"prompt": "none login"}, "invalid_request"),
    ],
)
async def test_request_errors_are_redirected_with_state_and_iss(
    gw: Gateway, http: httpx2.AsyncClient, change: dict[str, object], error: str
) -> None:
    params: dict[str, object] = {
        "response_type": "code",
        "client_id": "app",
        "redirect_uri": REDIRECT_URI,
        "code_challenge": CHALLENGE,
        "code_challenge_method": "S256",
        "resource": gw.url("a"),
        "state": "xyz-123",
    }
    for name, value in change.items():
        if value is None:
            params.pop(name)
        elif isinstance(value, list):
            params[name] = [v.format(base=gw.base) for v in value]
        else:
            params[name] = str(value).format(base=gw.base)
    pending = stored_grants(gw, "authorize")
    response = await http.get(f"{gw.base}/authorize?{urlencode(params, doseq=True)}")
    assert stored_grants(gw, "authorize") == pending  # no request was kept for a refused one
    assert response.status_code == 302
    location = response.headers["location"]
    assert location.startswith(REDIRECT_URI + "?")
    query = query_of(location)
    assert query["error"] == error
    assert query["state"] == "xyz-123"
    assert query["iss"] == gw.base
    assert "code" not in query


async def test_prompt_none_without_a_session_redirects_login_required(
    gw: Gateway, http: httpx2.AsyncClient
) -> None:
    response = await http.get(url_for(gw, prompt="none", state="quiet"))
    assert response.status_code == 302
    query = query_of(response.headers["location"])
    assert response.headers["location"].startswith(REDIRECT_URI)
    assert (query["error"], query["state"], query["iss"]) == ("login_required", "quiet", gw.base)


async def test_loopback_redirect_uri_may_use_any_port(
    gw: Gateway, http: httpx2.AsyncClient, user_ids: dict[str, str]
) -> None:
    other_port = "http://127.0.0.1:40001/callback"
    proof = pkce()
    url = authorize_url(
        gw.base, client_id="app", resource=gw.url("a"), challenge=proof.challenge, redirect_uri=other_port
    )
    final = await sign_in_and_consent(http, url, username="alice", password=PASSWORD)
    assert final.headers["location"].startswith(other_port + "?")
    query = query_of(final.headers["location"])
    assert query["iss"] == gw.base
    assert query["state"] == "st-1"
    token = await exchange_code(
        http,
        gw.base,
        code=query["code"],
        verifier=proof.verifier,
        client_id="app",
        resource=gw.url("a"),
        redirect_uri=other_port,
    )
    assert token.status_code == 200, token.text


# -- consent -----------------------------------------------------------------------------------


async def test_consent_post_needs_the_csrf_token(
    gw: Gateway, http: httpx2.AsyncClient, user_ids: dict[str, str]
) -> None:
    page = await consent_page(http, gw, "bob", url_for(gw, state="c1"))
    assert_page_headers(page)
    fields = hidden_fields(page.text)
    login_csrf = hidden_fields((await http.get(f"{gw.base}/login")).text)["csrf"]
    for bad in ({"request": fields["request"]}, {**fields, "csrf": login_csrf}, {**fields, "csrf": "x" * 43}):
        refused = await http.post(f"{gw.base}/consent", data={**bad, "decision": "allow"})
        assert refused.status_code == 403
        assert "location" not in refused.headers
        assert "Request refused" in refused.text
        assert_page_headers(refused)
    assert await consent_of(gw, user_ids["bob"], "app") is None
    # the request is still pending: the real form still works, exactly once
    allowed = await http.post(f"{gw.base}/consent", data={**fields, "decision": "allow"})
    assert allowed.status_code == 303
    assert "code" in query_of(allowed.headers["location"])
    consent = await consent_of(gw, user_ids["bob"], "app")
    assert consent is not None
    assert consent.resources == {gw.url("a")}
    again = await http.post(f"{gw.base}/consent", data={**fields, "decision": "allow"})
    assert again.status_code == 400
    assert EXPIRED in again.text


async def test_consent_from_another_browser_is_refused(
    gw: Gateway, http: httpx2.AsyncClient, user_ids: dict[str, str]
) -> None:
    page = await consent_page(http, gw, "henry", url_for(gw))
    async with browser() as other:
        await other.get(f"{gw.base}/login")  # a session cookie of its own
        stolen = await other.post(
            f"{gw.base}/consent", data={**hidden_fields(page.text), "decision": "allow"}
        )
    assert stolen.status_code == 403
    assert "location" not in stolen.headers
    assert await consent_of(gw, user_ids["henry"], "app") is None


async def test_deny_redirects_access_denied(
    gw: Gateway, http: httpx2.AsyncClient, user_ids: dict[str, str]
) -> None:
    page = await consent_page(http, gw, "carol", url_for(gw, state="deny-me"))
    fields = hidden_fields(page.text)
    denied = await http.post(f"{gw.base}/consent", data={**fields, "decision": "deny"})
    assert denied.status_code == 303
    assert denied.headers["location"].startswith(REDIRECT_URI + "?")
    query = query_of(denied.headers["location"])
    assert (query["error"], query["state"], query["iss"]) == ("access_denied", "deny-me", gw.base)
    assert "code" not in query
    assert await consent_of(gw, user_ids["carol"], "app") is None
    # the request is used up: allowing it afterwards yields no code
    late = await http.post(f"{gw.base}/consent", data={**fields, "decision": "allow"})
    assert late.status_code == 400
    assert EXPIRED in late.text
    assert await consent_of(gw, user_ids["carol"], "app") is None


async def test_consent_is_remembered_and_prompt_consent_asks_again(
    gw: Gateway, http: httpx2.AsyncClient, user_ids: dict[str, str]
) -> None:
    page = await consent_page(http, gw, "dave", url_for(gw, scope="mcp"))
    allowed = await http.post(f"{gw.base}/consent", data={**hidden_fields(page.text), "decision": "allow"})
    assert "code" in query_of(allowed.headers["location"])
    # same client, scopes and resource: straight back with a code
    again = await http.get(url_for(gw, scope="mcp", state="second"))
    assert again.status_code == 302
    query = query_of(again.headers["location"])
    assert "code" in query
    assert query["state"] == "second"
    assert query["iss"] == gw.base
    # more scopes than were allowed: asked again
    wider = await http.get(url_for(gw, scope="mcp notes"))
    assert wider.status_code == 200
    assert 'name="decision"' in wider.text
    # prompt=consent: asked again even for what was allowed
    forced = await http.get(url_for(gw, scope="mcp", prompt="consent"))
    assert forced.status_code == 200
    assert 'name="decision"' in forced.text
    assert_page_headers(forced)
    # prompt=none: a code when nothing needs asking, consent_required when something does
    quiet = await http.get(url_for(gw, scope="mcp", prompt="none", state="q"))
    assert quiet.status_code == 302
    assert "code" in query_of(quiet.headers["location"])
    refused = await http.get(url_for(gw, scope="mcp notes", prompt="none", state="q"))
    assert refused.status_code == 302
    query = query_of(refused.headers["location"])
    assert (query["error"], query["state"], query["iss"]) == ("consent_required", "q", gw.base)
    assert "code" not in query
    consent = await consent_of(gw, user_ids["dave"], "app")
    assert consent is not None
    assert consent.scopes == {"mcp"}


async def test_trusted_client_skips_consent(
    gw: Gateway, http: httpx2.AsyncClient, user_ids: dict[str, str]
) -> None:
    handle = await pending_request(http, url_for(gw, client_id="first-party", state="fp"))
    signed_in = await submit_login(http, gw.base, handle, "erin", PASSWORD)
    response = await http.get(gw.base + signed_in.headers["location"])
    assert response.status_code == 302
    query = query_of(response.headers["location"])
    assert "code" in query
    assert query["state"] == "fp"
    assert await consent_of(gw, user_ids["erin"], "first-party") is None


async def test_resource_with_upper_case_scheme_and_host_is_accepted(
    gw: Gateway, http: httpx2.AsyncClient
) -> None:
    shouting = gw.url("a").replace("http://127.0.0.1", "HTTP://127.0.0.1")
    url = authorize_url(gw.base, client_id="app", resource=shouting, challenge=pkce().challenge)
    response = await http.get(url)
    assert response.status_code == 303, response.headers.get("location")


async def test_scopes_allowed_for_one_resource_are_not_allowed_for_another(
    gw: Gateway, http: httpx2.AsyncClient, user_ids: dict[str, str]
) -> None:
    page = await consent_page(http, gw, "ivan", url_for(gw, scope="mcp"))  # /mcp/a: mcp only
    await http.post(f"{gw.base}/consent", data={**hidden_fields(page.text), "decision": "allow"})
    wide = authorize_url(
        gw.base, client_id="app", resource=gw.url(), challenge=pkce().challenge, scope="mcp notes"
    )
    page = await http.get(wide)  # the aggregate /mcp: mcp and notes
    assert 'name="decision"' in page.text
    allowed = await http.post(f"{gw.base}/consent", data={**hidden_fields(page.text), "decision": "allow"})
    assert "code" in query_of(allowed.headers["location"])
    # notes was never allowed for /mcp/a: the user must be asked
    response = await http.get(url_for(gw, scope="mcp notes"))
    assert response.status_code == 200, response.headers.get("location")
    assert 'name="decision"' in response.text
