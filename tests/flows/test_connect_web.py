"""The connect pages under hostile and replayed input (issue #7): a provider callback only
attaches an account for the user and the browser that started it, once; provider errors are
shown without echoing what the provider sent; a GET never starts a provider flow; forms need
their CSRF token; sign-in never returns off-site. Nothing is stored when anything is refused."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import httpx2
import pytest

from tests.support.connect import provider_callback, sign_in, start_connect
from tests.support.gateway import Gateway, run_gateway
from tests.support.idp import SAAS_CLIENT_ID, SAAS_CLIENT_SECRET, run_saas_provider
from tests.support.oauth import add_users, gateway_store, hidden_fields, query_of
from tests.support.procs import free_port
from tests.support.saas import saas_upstream_for

pytestmark = pytest.mark.timeout(120)
PASSWORD = "connect-web-password"


@pytest.fixture(scope="module")
def gateway(flow_tmp: Path) -> Iterator[Gateway]:
    port = free_port()
    with (
        run_saas_provider(flow_tmp, redirect_uris=[f"http://127.0.0.1:{port}/connect/callback"]) as saas,
        saas_upstream_for(saas, flow_tmp) as upstream,
    ):
        connection = {
            "name": "crm",
            "type": "oauth",
            "label": "Acme CRM",
            "client_id": SAAS_CLIENT_ID,
            "client_secret": SAAS_CLIENT_SECRET,
            "issuer": saas.issuer,
            "scopes": ["crm:read", "offline_access"],
        }
        extra = {"auth": {"enabled": True, "scopes": ["mcp"]}, "connections": [connection]}
        upstreams = [
            {
                "name": "crm",
                "http": {"url": upstream.url},
                "auth": {"type": "user_oauth", "connection": "crm"},
            }
        ]
        with run_gateway(flow_tmp, upstreams, extra=extra, port=port) as gw:
            yield gw


@pytest.fixture(scope="module")
async def users(gateway: Gateway) -> dict[str, str]:
    return await add_users(gateway, dict.fromkeys(["alice", "bob", "carol"], PASSWORD))


def browser() -> httpx2.AsyncClient:
    return httpx2.AsyncClient(follow_redirects=False, timeout=30)


async def stored(gateway: Gateway, user_id: str) -> int | None:
    async with gateway_store(gateway) as store:
        record = await store.vault.get(user_id, "crm")
    return None if record is None else record.version


async def test_a_get_never_starts_the_provider_flow(gateway: Gateway, users: dict[str, str]) -> None:
    async with browser() as http:
        anonymous = await http.get(f"{gateway.base}/connect/crm")
        assert anonymous.status_code == 303
        assert urlsplit(anonymous.headers["location"]).path == "/login"
        await sign_in(http, gateway.base, "alice", PASSWORD)
        page = await http.get(f"{gateway.base}/connect/crm")
        assert page.status_code == 200
        assert "Acme CRM" in page.text
        unknown = await http.get(f"{gateway.base}/connect/nope")
        assert unknown.status_code == 404
        for form in ({}, {"csrf": "forged", "decision": "continue"}):
            refused = await http.post(f"{gateway.base}/connect/crm", data=form)
            assert refused.status_code == 403, refused.text[:400]
            assert "location" not in refused.headers
    assert await stored(gateway, users["alice"]) is None


async def test_the_happy_path_then_a_replayed_callback(gateway: Gateway, users: dict[str, str]) -> None:
    async with browser() as http:
        await sign_in(http, gateway.base, "bob", PASSWORD)
        provider = await start_connect(http, gateway.base, "crm")
        asked = query_of(provider)
        assert asked["code_challenge_method"] == "S256"
        assert asked["redirect_uri"] == f"{gateway.base}/connect/callback"
        callback = await provider_callback(provider, "bob", gateway.base)
        connected = await http.get(callback)
        assert connected.status_code == 200, connected.text[:800]
        version = await stored(gateway, users["bob"])
        assert version is not None
        replayed = await http.get(callback)
        assert replayed.status_code == 400
        assert await stored(gateway, users["bob"]) == version
        mine = await http.get(f"{gateway.base}/connections")
        assert "Acme CRM" in mine.text
        form = hidden_fields(mine.text)
        refused = await http.post(f"{gateway.base}/connections/crm/disconnect", data={})
        assert refused.status_code in (400, 403)
        assert await stored(gateway, users["bob"]) == version
        gone = await http.post(f"{gateway.base}/connections/crm/disconnect", data=form)
        assert gone.status_code in (200, 303), gone.text[:400]
    assert await stored(gateway, users["bob"]) is None


async def test_a_callback_only_works_for_the_browser_and_user_that_started_it(
    gateway: Gateway, users: dict[str, str]
) -> None:
    async with browser() as alice, browser() as other:
        await sign_in(alice, gateway.base, "alice", PASSWORD)
        provider = await start_connect(alice, gateway.base, "crm")
        callback = await provider_callback(provider, "alice", gateway.base)
        # another browser, signed in as alice herself
        await sign_in(other, gateway.base, "alice", PASSWORD)
        assert (await other.get(callback)).status_code == 400
        # the same browser, now signed in as carol
        await sign_in(alice, gateway.base, "carol", PASSWORD)
        wrong_user = await alice.get(callback)
        assert wrong_user.status_code == 403
        assert "alice" not in wrong_user.text
        # neither attempt burned alice's state: back as alice, it still works once
        await sign_in(alice, gateway.base, "alice", PASSWORD)
        assert (await alice.get(callback)).status_code == 200
    assert await stored(gateway, users["carol"]) is None
    assert await stored(gateway, users["alice"]) is not None


async def test_provider_errors_and_garbage_states(gateway: Gateway, users: dict[str, str]) -> None:
    async with browser() as http:
        await sign_in(http, gateway.base, "carol", PASSWORD)
        provider = await start_connect(http, gateway.base, "crm")
        state = query_of(provider)["state"]
        hostile = urlencode(
            {"state": state, "error": "access_denied", "error_description": "<script>alert(1)</script>"}
        )
        denied = await http.get(f"{gateway.base}/connect/callback?{hostile}")
        assert denied.status_code == 400
        assert "access_denied" in denied.text
        assert "<script>" not in denied.text
        for query in ("", "?state=", "?state=nope&code=x", "?code=x", "?state=" + "A" * 5000):
            response = await http.get(f"{gateway.base}/connect/callback{query}")
            assert response.status_code == 400, (query, response.status_code)
            assert "Traceback" not in response.text
    assert await stored(gateway, users["carol"]) is None


@pytest.mark.parametrize(
    "target",
    [
        "//evil.example/x",
        "https://evil.example",
        "/\\evil.example",
        "javascript:alert(1)",
        "/connect/callback",
    ],
)
async def test_sign_in_never_returns_off_site(gateway: Gateway, users: dict[str, str], target: str) -> None:
    async with browser() as http:
        form = hidden_fields((await http.get(f"{gateway.base}/login", params={"next": target})).text)
        response = await http.post(
            f"{gateway.base}/login", data={**form, "next": target, "username": "alice", "password": PASSWORD}
        )
    assert response.is_redirect
    location = response.headers["location"]
    assert location.startswith("/"), location
    assert not location.startswith(("//", "/\\")), location
    assert "evil" not in location
    assert not location.startswith("/connect/callback")
