"""The official Python SDK client (``mcp.client.auth.OAuthClientProvider``, mcp 2.3.0) signs in
to Bastion headlessly and calls the demo upstream's tools: once registering itself (RFC 7591
DCR), once identified by a Client ID Metadata Document served over real HTTPS, and once more to
show it refreshes its token (rotation) without a second sign-in. The "browser" fills Bastion's
real sign-in and consent pages with plain HTTP form posts (tests.support.oauth)."""

from __future__ import annotations

import time

import httpx2
import pytest
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client

from tests.support.gateway import Gateway
from tests.support.interop_oauth import (
    InteropSetup,
    RecordingUser,
    RequestLog,
    interop_setup,
    registered_clients,
    text_of,
)
from tests.support.oauth import REDIRECT_URI, query_of
from tests.support.sdk_oauth import MemoryTokenStorage, sdk_auth

pytestmark = pytest.mark.timeout(90)


async def add_and_list(url: str, http: httpx2.AsyncClient, title: str) -> str:
    async with Client(streamable_http_client(url, http_client=http)) as client:
        added = await client.call_tool("add_note", {"title": title, "body": f"written by {title}"})
        assert not added.is_error, text_of(added)
        listed = await client.call_tool("list_notes", {})
        assert not listed.is_error, text_of(listed)
        return text_of(listed)


@pytest.fixture(scope="module")
def setup(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> InteropSetup:
    return interop_setup(request, tmp_path_factory)


@pytest.fixture(scope="module")
def gateway(setup: InteropSetup) -> Gateway:
    return setup.gateway


async def test_dynamic_registration(gateway: Gateway) -> None:
    user, requests = RecordingUser(), RequestLog()
    storage = MemoryTokenStorage()
    auth = sdk_auth(gateway.url("demo"), user, storage=storage, client_name="Python SDK via DCR")
    async with httpx2.AsyncClient(auth=auth, timeout=30, event_hooks={"request": [requests]}) as http:
        listed = await add_and_list(gateway.url("demo"), http, "py-dcr")
    assert "py-dcr" in listed
    assert user.sign_ins == 1
    assert "/register" in requests.paths("POST")
    assert storage.client_info is not None
    assert storage.client_info.client_id.startswith("dcr_")
    consent = user.consent_page()
    assert "Python SDK via DCR" in consent
    assert REDIRECT_URI in consent
    [redirect] = user.redirects
    assert redirect.startswith(REDIRECT_URI + "?")
    assert query_of(redirect)["iss"] == gateway.base  # RFC 9207
    listing = registered_clients(gateway, "dcr")
    assert storage.client_info.client_id in listing
    assert "Python SDK via DCR" in listing
    assert storage.tokens is not None
    assert storage.tokens.refresh_token


async def test_client_id_metadata_document(setup: InteropSetup) -> None:
    gw, doc = setup.gateway, setup.document
    user, requests = RecordingUser(), RequestLog()
    storage = MemoryTokenStorage()
    auth = sdk_auth(gw.url("demo"), user, storage=storage, client_metadata_url=doc.url)
    async with httpx2.AsyncClient(auth=auth, timeout=30, event_hooks={"request": [requests]}) as http:
        listed = await add_and_list(gw.url("demo"), http, "py-cimd")
    assert "py-cimd" in listed, gw.tail()
    assert user.sign_ins == 1
    assert storage.client_info is not None
    assert storage.client_info.client_id == doc.url
    assert "/register" not in requests.paths(), requests.seen
    assert doc.server.hits >= 1  # Bastion fetched the document
    consent = user.consent_page()
    assert "Python SDK via CIMD" in consent
    assert f"Metadata published by {doc.host}." in consent
    assert doc.url in consent
    listing = registered_clients(gw)  # metadata-document clients are fetched, not registered
    assert doc.url not in listing
    assert "Python SDK via CIMD" not in listing


async def test_refresh_and_rotation(gateway: Gateway) -> None:
    """The SDK refreshes an expired access token itself (rotation: a new refresh token each
    time, no second sign-in); the refresh token also works by hand at /token."""
    user, requests = RecordingUser(), RequestLog()
    storage = MemoryTokenStorage()
    url = gateway.url("demo")
    auth = sdk_auth(url, user, storage=storage, client_name="Python SDK refresh")
    async with httpx2.AsyncClient(auth=auth, timeout=30, event_hooks={"request": [requests]}) as http:
        await add_and_list(url, http, "py-refresh-1")
        assert storage.tokens is not None
        assert storage.tokens.refresh_token
        first = storage.tokens
        assert first.expires_in
        assert first.expires_in <= 900
        # The clock moves past the access token's expiry (the SDK's own notion of it).
        auth.context.token_expiry_time = time.time() - 1
        listed = await add_and_list(url, http, "py-refresh-2")
    assert "py-refresh-1" in listed
    assert "py-refresh-2" in listed
    assert user.sign_ins == 1, "the SDK signed in again instead of refreshing"
    second = storage.tokens
    assert second is not None
    assert second.access_token != first.access_token
    assert second.refresh_token
    assert second.refresh_token != first.refresh_token
    assert requests.paths("POST").count("/token") == 2, requests.seen

    # By hand: the SDK registered without token_endpoint_auth_method, so (RFC 7591 default) it
    # is a client_secret_basic client and authenticates with the secret Bastion gave it.
    info = storage.client_info
    assert info is not None
    assert info.token_endpoint_auth_method == "client_secret_basic"
    async with httpx2.AsyncClient(timeout=30) as http:
        response = await http.post(
            f"{gateway.base}/token",
            auth=(info.client_id, info.client_secret or ""),
            data={"grant_type": "refresh_token", "refresh_token": second.refresh_token, "resource": url},
        )
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["token_type"].lower() == "bearer"
    assert body["refresh_token"] not in (first.refresh_token, second.refresh_token)
    bearer = {"Authorization": f"Bearer {body['access_token']}"}
    async with httpx2.AsyncClient(headers=bearer, timeout=30) as http:
        assert "py-refresh-2" in await add_and_list(url, http, "py-refresh-3")
