"""The official Python SDK client (``mcp.client.auth.OAuthClientProvider``, mcp 2.3.0) against
Bastion when users sign in at an Entra-like IdP (panva's oidc-provider, ``tests/node/idp.mjs``).
The SDK registers itself with Bastion (RFC 7591 DCR: nothing is registered at the IdP, where
Bastion is one static confidential client); the "browser" goes, with plain HTTP form posts,
through Bastion's sign-in choice, Bastion's consent for the MCP client, the IdP's sign-in and
consent, and back through Bastion's callback to the client. Then the SDK calls tools through
Bastion as the provisioned user: the upstream (in-process, recording) sees the calls and no
credential; the audit trail names the user and the IdP."""

from __future__ import annotations

import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx2
import jwt
import pytest
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client

from tests.support.federation_checks import IdpBrowserUser, assert_federated_call, idp_refresh_tokens
from tests.support.federation_upstream import FederatedNotes, assert_no_credentials, federated_notes
from tests.support.interop_oauth import RequestLog, text_of
from tests.support.oauth import REDIRECT_URI, query_of
from tests.support.sdk_oauth import MemoryTokenStorage, sdk_auth

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FederatedNotes]:
    # recheck_interval 0: every Bastion refresh re-checks the user at the IdP
    with federated_notes(
        tmp_path_factory.mktemp("federation-python"), provider={"recheck_interval": 0}
    ) as setup:
        yield setup


def leaf_messages(exc: BaseException) -> str:
    """The messages of an exception, or of every exception inside an exception group."""
    if isinstance(exc, BaseExceptionGroup):
        return " | ".join(leaf_messages(e) for e in exc.exceptions)
    return str(exc)


async def add_and_list(url: str, http: httpx2.AsyncClient, title: str) -> str:
    async with Client(streamable_http_client(url, http_client=http)) as client:
        added = await client.call_tool("add_note", {"title": title, "body": f"written by {title}"})
        assert not added.is_error, text_of(added)
        listed = await client.call_tool("list_notes", {})
        assert not listed.is_error, text_of(listed)
        return text_of(listed)


async def test_python_sdk_signs_in_through_the_idp_and_calls_tools(setup: FederatedNotes) -> None:
    fed, upstream = setup.fed, setup.upstream
    gateway = fed.gateway
    user, requests = IdpBrowserUser(fed), RequestLog()
    storage = MemoryTokenStorage()
    auth = sdk_auth(setup.url, user, storage=storage, client_name="Python SDK via the IdP")
    async with httpx2.AsyncClient(auth=auth, timeout=30, event_hooks={"request": [requests]}) as http:
        listed = await add_and_list(setup.url, http, "py-federated")
    assert "py-federated: written by py-federated" in listed, gateway.tail()
    assert user.sign_ins == 1

    # the client registered with Bastion, never with the IdP
    assert "/register" in requests.paths("POST")
    info = storage.client_info
    assert info is not None
    assert info.client_id.startswith("dcr_")
    assert all(urlsplit(str(u)).netloc != urlsplit(fed.idp.base).netloc for u, _ in requests.seen)

    # the browser's journey: Bastion's choice page, Bastion's consent, the IdP as Bastion's client
    pages = [url for url, _ in user.pages.pages]
    choice = next(html for url, html in user.pages.pages if url.startswith(f"{gateway.base}/login?"))
    assert "Sign in with Microsoft" in choice
    consent = user.pages.consent_pages(gateway.base)[0]
    assert "Python SDK via the IdP" in consent
    assert REDIRECT_URI in consent
    at_idp = [url for url in pages if url.startswith(fed.idp.issuer + "/auth?")]
    assert len(at_idp) == 1, pages
    to_idp = query_of(at_idp[0])
    assert to_idp["client_id"] == "bastion-gateway"  # the ONE client the admin registered there
    assert "resource" not in to_idp  # never sent to Entra (AADSTS9010010)
    assert to_idp["code_challenge_method"] == "S256"
    assert to_idp["nonce"]
    [redirect] = user.redirects
    assert redirect.startswith(REDIRECT_URI + "?")
    assert query_of(redirect)["iss"] == gateway.base

    # Bastion's own token, for this upstream, naming the provisioned user
    tokens = storage.tokens
    assert tokens is not None
    assert tokens.refresh_token
    claims = jwt.decode(tokens.access_token, options={"verify_signature": False})
    assert claims["iss"] == gateway.base
    assert claims["aud"] == setup.url
    assert claims["sub"].startswith("x_")
    assert claims["groups"] == ["sales"]  # the Entra app role Sales.Write, mapped

    # the upstream saw the calls, and no token of Bastion's or of the IdP's
    added = {"title": "py-federated", "body": "written by py-federated"}
    assert {"name": "add_note", "arguments": added} in upstream.tool_calls
    assert {"name": "list_notes", "arguments": {}} in upstream.tool_calls
    idp_tokens = idp_refresh_tokens(gateway)
    assert idp_tokens, "Bastion kept no IdP refresh token (offline_access)"
    assert_no_credentials(
        upstream, tokens.access_token, tokens.refresh_token, info.client_secret, *idp_tokens
    )

    # the audit trail: the call by this client as the IdP user, and that user's IdP sign-in
    subject = await assert_federated_call(fed, client_id=info.client_id, tool="add_note")
    assert subject == claims["sub"]


async def test_python_sdk_refresh_rechecks_the_idp(setup: FederatedNotes) -> None:
    """The SDK refreshes an expired token itself; Bastion re-checks the user at the IdP (its
    refresh token there) and rotates; no second sign-in. Once the IdP disables the user, the
    next refresh fails and the SDK has to send the user to sign in again."""
    fed = setup.fed
    user, storage = IdpBrowserUser(fed, "carol"), MemoryTokenStorage()
    fed.idp.put_user("carol", {"sub": "carol-sub", "oid": "oid-carol", "email": "carol@contoso.com"})
    auth = sdk_auth(setup.url, user, storage=storage, client_name="Python SDK refresh via the IdP")
    async with httpx2.AsyncClient(auth=auth, timeout=30) as http:
        await add_and_list(setup.url, http, "py-fed-refresh-1")
        first = storage.tokens
        assert first is not None
        assert first.refresh_token
        idp_before = set(idp_refresh_tokens(fed.gateway))
        auth.context.token_expiry_time = time.time() - 1
        assert "py-fed-refresh-1" in await add_and_list(setup.url, http, "py-fed-refresh-2")
        assert user.sign_ins == 1, "the SDK signed in again instead of refreshing"
        second = storage.tokens
        assert second is not None
        assert second.refresh_token not in (None, first.refresh_token)
        # the IdP was asked (its refresh token rotated in Bastion's store)
        assert set(idp_refresh_tokens(fed.gateway)) != idp_before

        fed.idp.disable("carol")
        try:
            auth.context.token_expiry_time = time.time() - 1
            with pytest.raises(BaseException) as refused:  # noqa: PT011 - an exception group
                await add_and_list(setup.url, http, "py-fed-refresh-3")
        finally:
            fed.idp.enable("carol")
    # the refresh failed (invalid_grant), so the SDK sent the user to sign in again, and the
    # IdP turned the disabled user away there
    assert "AADSTS50057: The user account is disabled." in leaf_messages(refused.value)
    assert len(user.authorize_urls) == 2
    assert user.sign_ins == 1
    assert "py-fed-refresh-3" not in str(setup.upstream.tool_calls)


async def test_python_sdk_is_asked_for_consent_once(setup: FederatedNotes) -> None:
    user, storage = IdpBrowserUser(setup.fed), MemoryTokenStorage()
    auth = sdk_auth(setup.url, user, storage=storage, client_name="Python SDK consent count")
    async with httpx2.AsyncClient(auth=auth, timeout=30) as http:
        await add_and_list(setup.url, http, "py-fed-consent")
    [authorize] = user.authorize_urls
    assert query_of(authorize)["prompt"] == "consent"
    assert len(user.pages.consent_pages(setup.fed.gateway.base)) == 1
