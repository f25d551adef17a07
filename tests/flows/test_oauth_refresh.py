"""Refresh tokens (rotation, the retry grace window, reuse revoking the family, scope narrowing,
disabled users), RFC 7009 revocation and RFC 7662 introspection against the real ``bastion serve``."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx2
import jwt
import pytest

from bastion.idp.users import LocalUsers
from tests.support.gateway import Gateway, run_gateway
from tests.support.oauth import (
    REDIRECT_URI,
    add_users,
    authorization_code,
    browser,
    challenge_params,
    exchange_code,
    gateway_store,
    list_tools,
)
from tests.support.recording import recording_upstream

PASSWORD = "correct horse battery"
GRACE = 1.0
CONF_SECRET = "conf-secret-0123456789abcdefghijklmnopqrstuvwxyz"
INTRO_SECRET = "introspector-secret-0123456789abcdefghijklmnopqrstuvwxyz"
CLIENTS = [
    {"client_id": "pub", "name": "Public", "redirect_uris": [REDIRECT_URI], "trusted": True},
    {"client_id": "pub2", "name": "Other", "redirect_uris": [REDIRECT_URI], "trusted": True},
    {
        "client_id": "introspector",
        "name": "An upstream checking tokens",
        "grant_types": ["client_credentials"],
        "token_endpoint_auth_method": "client_secret_post",
        "secret_sha256": hashlib.sha256(INTRO_SECRET.encode()).hexdigest(),
    },
]


@pytest.fixture(scope="module")
def gw(flow_tmp: Path) -> Iterator[Gateway]:
    auth = {"enabled": True, "scopes": ["mcp", "notes"], "refresh_grace": GRACE}
    with recording_upstream() as upstream:
        upstreams = [{"name": "a", "http": {"url": upstream.url}}]
        with run_gateway(flow_tmp, upstreams, extra={"auth": auth, "clients": CLIENTS}) as g:
            yield g


@pytest.fixture(scope="module")
async def users(gw: Gateway) -> dict[str, str]:
    return await add_users(gw, {"alice": PASSWORD, "carol": PASSWORD})


@pytest.fixture
async def http(users: dict[str, str]) -> AsyncIterator[httpx2.AsyncClient]:
    async with browser() as client:
        yield client


async def tokens(
    http: httpx2.AsyncClient,
    gw: Gateway,
    *,
    client_id: str = "pub",
    user: str = "alice",
    scope: str | None = None,
) -> dict[str, Any]:
    extra = {"scope": scope} if scope else {}
    code, proof = await authorization_code(
        http, gw.base, client_id=client_id, resource=gw.url("a"), username=user, password=PASSWORD, **extra
    )
    response = await exchange_code(
        http, gw.base, code=code, verifier=proof.verifier, client_id=client_id, resource=gw.url("a")
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def refresh(
    http: httpx2.AsyncClient, gw: Gateway, token: str, client_id: str = "pub", **extra: str
) -> httpx2.Response:
    form = {"grant_type": "refresh_token", "refresh_token": token, "client_id": client_id, **extra}
    response = await http.post(f"{gw.base}/token", data=form)
    assert response.headers["cache-control"] == "no-store"
    return response


def refused(response: httpx2.Response, error: str = "invalid_grant", status: int = 400) -> None:
    assert response.status_code == status, response.text
    assert response.json()["error"] == error


def scope_of(access_token: str) -> str:
    return str(jwt.decode(access_token, options={"verify_signature": False}).get("scope", ""))


# -- refresh ---------------------------------------------------------------------------------


async def test_rotation_and_a_retry_within_the_grace_window(gw: Gateway, http: httpx2.AsyncClient) -> None:
    start = await tokens(http, gw)
    first = await refresh(http, gw, start["refresh_token"])
    assert first.status_code == 200, first.text
    r1 = first.json()["refresh_token"]
    assert r1 != start["refresh_token"]
    assert first.json()["access_token"] != start["access_token"]
    # the client lost the answer and retries at once: the same successor, no punishment
    retry = await refresh(http, gw, start["refresh_token"])
    assert retry.status_code == 200, retry.text
    assert retry.json()["refresh_token"] == r1
    second = await refresh(http, gw, r1)
    assert second.status_code == 200, second.text
    r2 = second.json()["refresh_token"]
    # the successor has been used: the old token is a replay now, grace window or not
    refused(await refresh(http, gw, start["refresh_token"]))
    refused(await refresh(http, gw, r2))  # the whole family, newest token included


async def test_reuse_after_the_grace_window_revokes_the_family(gw: Gateway, http: httpx2.AsyncClient) -> None:
    start = await tokens(http, gw)
    first = await refresh(http, gw, start["refresh_token"])
    assert first.status_code == 200
    current = first.json()["access_token"]
    assert (await list_tools(http, gw.url("a"), current)).status_code == 200
    await asyncio.sleep(GRACE + 0.5)
    refused(await refresh(http, gw, start["refresh_token"]))
    refused(await refresh(http, gw, first.json()["refresh_token"]))
    # the family's current access token goes with it (RFC 6749 §10.4 / RFC 9700 §4.14.2)
    assert (await list_tools(http, gw.url("a"), current)).status_code == 401


async def test_scope_may_narrow_but_never_widen(gw: Gateway, http: httpx2.AsyncClient) -> None:
    start = await tokens(http, gw, scope="mcp notes")
    assert start["scope"] == "mcp notes"
    narrow = await refresh(http, gw, start["refresh_token"], scope="mcp")
    assert narrow.status_code == 200, narrow.text
    assert narrow.json()["scope"] == "mcp"
    assert scope_of(narrow.json()["access_token"]) == "mcp"
    r1 = narrow.json()["refresh_token"]
    for wider in ("mcp notes offline_access", "mcp admin"):
        refused(await refresh(http, gw, r1, scope=wider), "invalid_scope")
    # a refused widening rotates nothing: r1 is still the live token, and the original grant
    # (mcp notes) may be asked for again (RFC 6749 §6: "originally granted")
    back = await refresh(http, gw, r1, scope="mcp notes")
    assert back.status_code == 200, back.text
    assert scope_of(back.json()["access_token"]) == "mcp notes"


async def test_refresh_token_is_bound_to_its_client_and_resource(
    gw: Gateway, http: httpx2.AsyncClient
) -> None:
    start = await tokens(http, gw)
    refused(await refresh(http, gw, start["refresh_token"], client_id="pub2"))
    refused(await refresh(http, gw, start["refresh_token"], resource=gw.url()), "invalid_target")
    refused(await refresh(http, gw, "not-a-refresh-token"))
    # none of that rotated or revoked it
    assert (await refresh(http, gw, start["refresh_token"])).status_code == 200


async def test_disabled_user_cannot_refresh_or_redeem(gw: Gateway, http: httpx2.AsyncClient) -> None:
    start = await tokens(http, gw, user="carol")
    code, proof = await authorization_code(
        http, gw.base, client_id="pub", resource=gw.url("a"), username="carol", password=PASSWORD
    )
    async with gateway_store(gw) as store:  # what `bastion users disable carol` does
        await LocalUsers(store.users).set_disabled("carol", True)
    refused(await refresh(http, gw, start["refresh_token"]))
    refused(await refresh(http, gw, start["refresh_token"]))
    late = await exchange_code(
        http, gw.base, code=code, verifier=proof.verifier, client_id="pub", resource=gw.url("a")
    )
    refused(late)


# -- RFC 7009 revocation -----------------------------------------------------------------------


async def revoke(
    http: httpx2.AsyncClient, gw: Gateway, token: str, client_id: str = "pub", **extra: str
) -> None:
    response = await http.post(f"{gw.base}/revoke", data={"token": token, "client_id": client_id, **extra})
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"


async def test_revoking_an_access_token(gw: Gateway, http: httpx2.AsyncClient) -> None:
    start = await tokens(http, gw)
    assert (await list_tools(http, gw.url("a"), start["access_token"])).status_code == 200
    await revoke(http, gw, start["access_token"], token_type_hint="access_token")
    response = await list_tools(http, gw.url("a"), start["access_token"])
    assert response.status_code == 401
    assert challenge_params(response.headers["www-authenticate"])["error"] == "invalid_token"


async def test_revoking_a_refresh_token_revokes_its_family(gw: Gateway, http: httpx2.AsyncClient) -> None:
    start = await tokens(http, gw)
    rotated = await refresh(http, gw, start["refresh_token"])
    current = rotated.json()["access_token"]
    assert (await list_tools(http, gw.url("a"), current)).status_code == 200
    await revoke(http, gw, rotated.json()["refresh_token"])  # no hint: tried as a refresh token first
    refused(await refresh(http, gw, rotated.json()["refresh_token"]))
    refused(await refresh(http, gw, start["refresh_token"]))
    assert (await list_tools(http, gw.url("a"), current)).status_code == 401  # RFC 7009 §2.1


async def test_revocation_of_unknown_or_foreign_tokens_answers_200(
    gw: Gateway, http: httpx2.AsyncClient
) -> None:
    start = await tokens(http, gw)
    await revoke(http, gw, "never-issued")
    await revoke(http, gw, "a.b.c", token_type_hint="access_token")
    # another client cannot revoke pub's tokens, and is not told so
    await revoke(http, gw, start["refresh_token"], client_id="pub2")
    await revoke(http, gw, start["access_token"], client_id="pub2")
    assert (await list_tools(http, gw.url("a"), start["access_token"])).status_code == 200
    assert (await refresh(http, gw, start["refresh_token"])).status_code == 200
    no_client = await http.post(f"{gw.base}/revoke", data={"token": start["access_token"]})
    refused(no_client, "invalid_client")


# -- RFC 7662 introspection --------------------------------------------------------------------


async def introspect(http: httpx2.AsyncClient, gw: Gateway, token: str, **client: str) -> httpx2.Response:
    creds = client or {"client_id": "introspector", "client_secret": INTRO_SECRET}
    response = await http.post(f"{gw.base}/introspect", data={"token": token, **creds})
    assert response.headers["cache-control"] == "no-store"
    return response


async def test_introspection_needs_a_confidential_client(gw: Gateway, http: httpx2.AsyncClient) -> None:
    start = await tokens(http, gw)
    refused(await introspect(http, gw, start["access_token"], client_id="pub"), "invalid_client")
    wrong = await introspect(http, gw, start["access_token"], client_id="introspector", client_secret="nope")
    refused(wrong, "invalid_client")


async def test_introspection_of_active_and_revoked_tokens(
    gw: Gateway, http: httpx2.AsyncClient, users: dict[str, str]
) -> None:
    start = await tokens(http, gw, scope="mcp")
    active = await introspect(http, gw, start["access_token"])
    assert active.status_code == 200
    body = active.json()
    assert body["active"] is True
    assert (body["sub"], body["client_id"], body["aud"]) == (users["alice"], "pub", gw.url("a"))
    assert (body["scope"], body["iss"]) == ("mcp", gw.base)
    assert body["exp"] > body["iat"]
    # a refresh token is only described to the client it belongs to
    assert (await introspect(http, gw, start["refresh_token"])).json() == {"active": False}
    await revoke(http, gw, start["access_token"])
    assert (await introspect(http, gw, start["access_token"])).json() == {"active": False}
    assert (await introspect(http, gw, "garbage")).json() == {"active": False}
    forged = start["access_token"][:-4] + ("AAAA" if not start["access_token"].endswith("AAAA") else "BBBB")
    assert (await introspect(http, gw, forged)).json() == {"active": False}
