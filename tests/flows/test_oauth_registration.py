"""RFC 7591 dynamic client registration at the real ``bastion serve``: refusals with the exact
RFC 7591 §3.2.2 codes and nothing stored, the per-address rate limit, and registered clients
that then complete the authorization-code flow (public, and confidential with HTTP Basic)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

from tests.support.gateway import Gateway, run_gateway
from tests.support.oauth import (
    REDIRECT_URI,
    add_users,
    authorization_code,
    authorize_url,
    browser,
    client_ids,
    demo_upstream,
    exchange_code,
    hidden_fields,
    query_of,
)

PASSWORD = "correct horse battery"
PER_HOUR = 3
UNUSED_TTL = 4.0  # seconds: the success tests below obtain their tokens well within it
NATIVE = {"application_type": "native", "redirect_uris": [REDIRECT_URI], "client_name": "Registered App"}
_addresses = itertools.count(2)


@pytest.fixture(scope="module")
def gw(flow_tmp: Path) -> Iterator[Gateway]:
    registration = {"max_per_hour_per_address": PER_HOUR, "unused_ttl": UNUSED_TTL}
    auth = {"enabled": True, "registration": registration}
    with run_gateway(flow_tmp, [demo_upstream("a", flow_tmp)], extra={"auth": auth}) as g:
        yield g


@pytest.fixture(scope="module")
async def users(gw: Gateway) -> dict[str, str]:
    return await add_users(gw, {"alice": PASSWORD})


@pytest.fixture
async def http(users: dict[str, str]) -> AsyncIterator[httpx2.AsyncClient]:
    """Each test registers from its own loopback address: the rate limit is per address."""
    async with browser(f"127.0.0.{next(_addresses)}") as client:
        yield client


async def register(http: httpx2.AsyncClient, gw: Gateway, body: Any) -> httpx2.Response:
    response = await http.post(f"{gw.base}/register", json=body)
    assert response.headers["cache-control"] == "no-store"
    return response


async def refused_and_not_stored(
    http: httpx2.AsyncClient, gw: Gateway, body: Any, error: str, status: int = 400, **send: Any
) -> None:
    before = await client_ids(gw)
    response = await http.post(f"{gw.base}/register", **(send or {"json": body}))
    assert response.status_code == status, response.text
    assert response.json()["error"] == error
    assert "client_id" not in response.json()
    assert await client_ids(gw) == before


@pytest.mark.parametrize(
    "uri",
    [
        "javascript:alert(document.cookie)",
        "http://evil.example/callback",  # plain http off loopback
        "https://app.example/cb#fragment",
        "https://user:pw@app.example/cb",
    ],
)
async def test_bad_redirect_uris_are_refused(gw: Gateway, http: httpx2.AsyncClient, uri: str) -> None:
    await refused_and_not_stored(
        http, gw, {**NATIVE, "redirect_uris": [REDIRECT_URI, uri]}, "invalid_redirect_uri"
    )


async def test_missing_or_empty_redirect_uris(gw: Gateway, http: httpx2.AsyncClient) -> None:
    await refused_and_not_stored(http, gw, {"application_type": "native"}, "invalid_redirect_uri")
    await refused_and_not_stored(http, gw, {**NATIVE, "redirect_uris": []}, "invalid_redirect_uri")


async def test_web_application_may_not_use_loopback(gw: Gateway, http: httpx2.AsyncClient) -> None:
    body = {**NATIVE, "application_type": "web"}
    await refused_and_not_stored(http, gw, body, "invalid_redirect_uri")


async def test_application_type_is_required(gw: Gateway, http: httpx2.AsyncClient) -> None:
    body = {k: v for k, v in NATIVE.items() if k != "application_type"}
    await refused_and_not_stored(http, gw, body, "invalid_client_metadata")
    await refused_and_not_stored(
        http, gw, {**NATIVE, "application_type": "desktop"}, "invalid_client_metadata"
    )


@pytest.mark.parametrize(
    "change",
    [
        {"token_endpoint_auth_method": "client_secret_jwt"},
        {"grant_types": ["client_credentials"]},
        {"grant_types": ["refresh_token"]},
        {"response_types": ["token"]},
        {"client_uri": "http://app.example"},
    ],
)
async def test_invalid_client_metadata(gw: Gateway, http: httpx2.AsyncClient, change: dict[str, Any]) -> None:
    await refused_and_not_stored(http, gw, {**NATIVE, **change}, "invalid_client_metadata")


async def test_body_must_be_a_json_object(gw: Gateway, http: httpx2.AsyncClient) -> None:
    json_type = {"content-type": "application/json"}
    await refused_and_not_stored(
        http, gw, None, "invalid_client_metadata", content=b"{not json", headers=json_type
    )
    await refused_and_not_stored(
        http, gw, None, "invalid_client_metadata", data={"redirect_uris": REDIRECT_URI}
    )
    await refused_and_not_stored(http, gw, [NATIVE], "invalid_client_metadata")


async def test_registrations_are_rate_limited_per_address(gw: Gateway, http: httpx2.AsyncClient) -> None:
    before = await client_ids(gw, "dcr")
    for _ in range(PER_HOUR):
        assert (await register(http, gw, NATIVE)).status_code == 201
    await refused_and_not_stored(http, gw, NATIVE, "slow_down", 429)
    assert len(await client_ids(gw, "dcr") - before) == PER_HOUR
    async with browser(f"127.0.0.{next(_addresses)}") as elsewhere:
        assert (await register(elsewhere, gw, NATIVE)).status_code == 201


async def test_public_client_registers_and_signs_in(gw: Gateway, http: httpx2.AsyncClient) -> None:
    response = await register(http, gw, {**NATIVE, "token_endpoint_auth_method": "none"})
    assert response.status_code == 201, response.text
    body = response.json()
    client_id = body["client_id"]
    assert client_id.startswith("dcr_")
    assert "client_secret" not in body
    assert "client_secret_expires_at" not in body
    assert (body["application_type"], body["token_endpoint_auth_method"]) == ("native", "none")
    assert body["redirect_uris"] == [REDIRECT_URI]
    assert isinstance(body["client_id_issued_at"], int)
    assert client_id in await client_ids(gw, "dcr")
    # the consent page says it registered itself
    url = (
        f"{gw.base}/authorize?response_type=code&client_id={client_id}&redirect_uri={REDIRECT_URI}"
        f"&code_challenge={'A' * 43}&code_challenge_method=S256&resource={gw.url('a')}"
    )
    handle_page = await http.get(url)
    login = await http.get(gw.base + handle_page.headers["location"])
    fields = hidden_fields(login.text) | {"username": "alice", "password": PASSWORD}
    signed_in = await http.post(f"{gw.base}/login", data=fields)
    consent = await http.get(gw.base + signed_in.headers["location"])
    assert "Registered itself dynamically" in consent.text
    assert "Registered App" in consent.text
    code, proof = await authorization_code(
        http, gw.base, client_id=client_id, resource=gw.url("a"), username="alice", password=PASSWORD
    )
    token = await exchange_code(
        http, gw.base, code=code, verifier=proof.verifier, client_id=client_id, resource=gw.url("a")
    )
    assert token.status_code == 200, token.text


async def test_confidential_client_gets_a_secret_and_authenticates_with_basic(
    gw: Gateway, http: httpx2.AsyncClient
) -> None:
    response = await register(http, gw, {**NATIVE, "token_endpoint_auth_method": "client_secret_basic"})
    assert response.status_code == 201, response.text
    body = response.json()
    client_id, secret = body["client_id"], body["client_secret"]
    assert len(secret) >= 32
    assert body["client_secret_expires_at"] == 0
    code, proof = await authorization_code(
        http, gw.base, client_id=client_id, resource=gw.url("a"), username="alice", password=PASSWORD
    )
    wrong = await exchange_code(
        http,
        gw.base,
        code=code,
        verifier=proof.verifier,
        client_id=client_id,
        resource=gw.url("a"),
        auth=(client_id, secret + "x"),
    )
    assert wrong.status_code == 401
    assert wrong.json()["error"] == "invalid_client"
    assert wrong.headers["www-authenticate"].startswith("Basic ")
    public = await exchange_code(
        http, gw.base, code=code, verifier=proof.verifier, client_id=client_id, resource=gw.url("a")
    )
    assert public.json()["error"] == "invalid_client"
    ok = await exchange_code(
        http,
        gw.base,
        code=code,
        verifier=proof.verifier,
        client_id=client_id,
        resource=gw.url("a"),
        auth=(client_id, secret),
    )
    assert ok.status_code == 200, ok.text
    assert "refresh_token" not in ok.json()  # registered for authorization_code only (the default)


async def test_registrations_that_never_get_a_token_expire(gw: Gateway, http: httpx2.AsyncClient) -> None:
    public = {**NATIVE, "token_endpoint_auth_method": "none"}
    used = (await register(http, gw, public)).json()["client_id"]
    unused = (await register(http, gw, public)).json()["client_id"]
    code, proof = await authorization_code(
        http, gw.base, client_id=used, resource=gw.url("a"), username="alice", password=PASSWORD
    )
    token = await exchange_code(
        http, gw.base, code=code, verifier=proof.verifier, client_id=used, resource=gw.url("a")
    )
    assert token.status_code == 200, token.text
    await asyncio.sleep(UNUSED_TTL + 0.5)
    gone = await http.get(authorize_url(gw.base, client_id=unused, resource=gw.url("a"), challenge="A" * 43))
    assert gone.status_code == 400
    assert "unknown client" in gone.text
    kept = await http.get(authorize_url(gw.base, client_id=used, resource=gw.url("a"), challenge="A" * 43))
    assert kept.status_code == 302  # alice is signed in and consented: straight back with a code
    assert "code" in query_of(kept.headers["location"])
