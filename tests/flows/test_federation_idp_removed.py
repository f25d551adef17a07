"""An identity provider removed from the configuration while sessions from it exist (issue #4):
users sign in through two providers ("entra", client_secret_basic, and "corp",
client_secret_post, two registrations at one Entra-like IdP); Bastion is stopped and started
again on the same port, store and master key with only "corp" and password sign-in off.

The MCP client whose user came through "entra" can no longer refresh (``invalid_grant``, and the
access token of that grant is revoked with it); the one that came through "corp" refreshes as
before (the restart itself lost nothing). With one provider and no passwords, /authorize goes
straight to that provider instead of showing a choice.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import pytest

from tests.support.federation import (
    ALICE,
    callback_url,
    idp_callback,
    idp_provider,
    register_public_client,
    through_bastion_to_idp,
)
from tests.support.federation_checks import message_page
from tests.support.gateway import Gateway, run_gateway
from tests.support.idp import IdpServer, require_idp_packages, run_idp, secret_client
from tests.support.oauth import authorize_url, browser, exchange_code, list_tools, pkce, query_of
from tests.support.procs import free_port
from tests.support.recording import recording_upstream

pytestmark = pytest.mark.node

REDIRECT = "http://127.0.0.1:53682/callback"


@dataclass
class Grant:
    client_id: str
    tokens: dict[str, Any]


@dataclass
class Restarted:
    gateway: Gateway  # the second run: "corp" only, no passwords
    first_state_dir: Path
    via_entra: Grant
    via_corp: Grant


async def _sign_in(gateway: Gateway, idp: IdpServer, provider: str) -> Grant:
    """An MCP client registers, its user picks ``provider`` on the sign-in page, consents, signs
    in at the IdP: the client's tokens."""
    async with browser() as http:
        client_id = await register_public_client(http, gateway.base, REDIRECT)
        proof = pkce()
        url = authorize_url(
            gateway.base, client_id=client_id, resource=gateway.url("a"), challenge=proof.challenge
        )
        to_idp = await through_bastion_to_idp(http, url, provider=provider)
        location = to_idp.headers.get("location", "")
        assert location.startswith(idp.authorization_endpoint), to_idp.text[:500]
        callback = await idp_callback(http, location, callback=callback_url(gateway.base, provider))
        final = await http.get(callback)
        assert final.status_code in (302, 303), final.text[:500]
        code = query_of(final.headers["location"])["code"]
        tokens = await exchange_code(
            http,
            gateway.base,
            code=code,
            verifier=proof.verifier,
            client_id=client_id,
            resource=gateway.url("a"),
        )
        assert tokens.status_code == 200, tokens.text
        body = tokens.json()
        assert body.get("refresh_token"), body
        return Grant(client_id, body)


@pytest.fixture(scope="module")
async def restarted(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Restarted]:
    require_idp_packages()
    tmp: Path = tmp_path_factory.mktemp("federation-removed")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    entra_client = secret_client("bastion-entra", [callback_url(base, "entra")])
    corp_client = secret_client("bastion-corp", [callback_url(base, "corp")], method="client_secret_post")
    with (
        recording_upstream() as upstream,
        run_idp(tmp, clients=[entra_client, corp_client], users={"alice": ALICE}) as idp,
    ):
        upstreams = [{"name": "a", "http": {"url": upstream.url}}]
        # recheck_interval 0: every refresh asks the IdP about the user (with its refresh token)
        entra = idp_provider("entra", idp, entra_client, recheck_interval=0)
        corp = idp_provider("corp", idp, corp_client, label="Contoso Corp", recheck_interval=0)
        both = {"auth": {"enabled": True}, "identity_providers": [entra, corp]}
        with run_gateway(tmp, upstreams, extra=both, port=port) as first:
            via_entra = await _sign_in(first, idp, "entra")
            via_corp = await _sign_in(first, idp, "corp")
        corp_only = {"auth": {"enabled": True, "login": {"password": False}}, "identity_providers": [corp]}
        with run_gateway(tmp, upstreams, extra=corp_only, port=port) as second:
            yield Restarted(second, first.state_dir, via_entra, via_corp)


@pytest.fixture
async def http() -> AsyncIterator[httpx2.AsyncClient]:
    async with browser() as client:
        yield client


async def _refresh(http: httpx2.AsyncClient, gateway: Gateway, grant: Grant) -> httpx2.Response:
    return await http.post(
        f"{gateway.base}/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": str(grant.tokens["refresh_token"]),
            "client_id": grant.client_id,
        },
    )


async def test_a_session_from_the_removed_idp_cannot_refresh(
    restarted: Restarted, http: httpx2.AsyncClient
) -> None:
    gateway, grant = restarted.gateway, restarted.via_entra
    resource = gateway.url("a")
    # before the refresh the access token from the first run still works (same keys, same store)
    assert (await list_tools(http, resource, str(grant.tokens["access_token"]))).status_code == 200
    refused = await _refresh(http, gateway, grant)
    assert refused.status_code == 400, refused.text
    assert refused.json() == {
        "error": "invalid_grant",
        "error_description": "the sign-in at the identity provider ended; sign in again",
    }
    assert "access_token" not in refused.text
    # the grant is gone: its access token is refused, and the refresh token stays refused
    assert (await list_tools(http, resource, str(grant.tokens["access_token"]))).status_code == 401
    again = await _refresh(http, gateway, grant)
    assert again.status_code == 400, again.text
    assert again.json()["error"] == "invalid_grant"
    # and the provider's pages are gone with it
    for path in ("/login/idp/entra?request=anything", "/login/idp/entra/callback?state=anything&code=x"):
        page = await http.get(f"{gateway.base}{path}")
        assert page.status_code == 400, page.text[:300]
        assert message_page(page)[0] == "Sign-in request expired"


async def test_a_session_from_the_kept_idp_still_refreshes(
    restarted: Restarted, http: httpx2.AsyncClient
) -> None:
    gateway, grant = restarted.gateway, restarted.via_corp
    assert gateway.state_dir == restarted.first_state_dir  # same store, same master key
    refreshed = await _refresh(http, gateway, grant)  # re-checked at the IdP (client_secret_post)
    assert refreshed.status_code == 200, refreshed.text
    body = refreshed.json()
    assert body["refresh_token"] != grant.tokens["refresh_token"]
    assert (await list_tools(http, gateway.url("a"), body["access_token"])).status_code == 200


async def test_one_idp_and_no_passwords_skips_the_choice(
    restarted: Restarted, http: httpx2.AsyncClient
) -> None:
    gateway = restarted.gateway
    client_id = await register_public_client(http, gateway.base, REDIRECT)
    url = authorize_url(
        gateway.base, client_id=client_id, resource=gateway.url("a"), challenge=pkce().challenge
    )
    first = await http.get(url)
    assert first.status_code == 303, first.text[:300]
    location = first.headers["location"]
    assert location.startswith("/login/idp/corp?request="), location
    # the sign-in page, if opened anyway, offers only that provider
    login = await http.get(f"{gateway.base}/login?request={query_of(location)['request']}")
    assert login.status_code == 200
    assert 'name="password"' not in login.text
    assert "Sign in with Contoso Corp" in login.text
    assert "/login/idp/entra" not in login.text
