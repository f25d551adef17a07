"""Signing in through an Entra-like IdP (a real OpenID Provider on loopback) in the middle of an
MCP client's authorization: consent for the client before the IdP, the IdP's sign-in, the user
provisioned with mapped groups and attributes, Bastion's own token, a tool call as that user, the audit trail
naming user and IdP, and a refresh that follows the IdP session."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx2
import jwt
import pytest

from tests.support.federation import (
    ALICE,
    Federation,
    bastion_with_entra,
    sign_in_via_idp,
    through_bastion_to_idp,
)
from tests.support.gateway import BASTION, venv_env
from tests.support.idp import require_idp_packages
from tests.support.oauth import authorize_url, exchange_code, list_tools, pkce, query_of
from tests.support.procs import REPO_ROOT
from tests.support.recording import recording_upstream

REDIRECT = "http://127.0.0.1:53682/callback"


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    require_idp_packages()
    tmp: Path = tmp_path_factory.mktemp("federation")
    users = {
        "alice": {**ALICE, "department": "finance", "hr": {"level": 4}},  # custom claims
        "carol": {**ALICE, "sub": "carol-sub", "oid": "oid-carol", "email": "carol@contoso.com"},
    }
    attributes = {"department": "department", "level": "hr.level"}
    with (
        recording_upstream() as upstream,
        bastion_with_entra(
            tmp,
            [{"name": "a", "http": {"url": upstream.url}}],
            users=users,
            provider={
                "recheck_interval": 0,
                "email_domains": ["contoso.com"],
                "claims": {"attributes": attributes},
            },
            extra={"policy": {"user_attributes": {"department": "string", "level": "long"}}},
        ) as f,
    ):
        yield f


@pytest.fixture
async def http() -> AsyncIterator[httpx2.AsyncClient]:
    async with httpx2.AsyncClient(follow_redirects=False, timeout=30) as client:
        yield client


async def _register(http: httpx2.AsyncClient, fed: Federation) -> str:
    response = await http.post(
        f"{fed.gateway.base}/register",
        json={
            "redirect_uris": [REDIRECT],
            "application_type": "native",
            "token_endpoint_auth_method": "none",
            "grant_types": ["authorization_code", "refresh_token"],
            "client_name": "Federated MCP client",
        },
    )
    assert response.status_code == 201, response.text
    return str(response.json()["client_id"])


def _cli(fed: Federation, *args: str) -> str:
    done = subprocess.run(
        [*BASTION, *args, "-c", str(fed.gateway.config_path)],
        capture_output=True,
        text=True,
        check=True,
        env=venv_env(),
        cwd=REPO_ROOT,
        timeout=60,
    )
    return done.stdout


async def test_sign_in_through_the_idp_and_call_a_tool(fed: Federation, http: httpx2.AsyncClient) -> None:
    client_id = await _register(http, fed)
    resource = fed.gateway.url("a")
    proof = pkce()
    url = authorize_url(fed.gateway.base, client_id=client_id, resource=resource, challenge=proof.challenge)
    final = await sign_in_via_idp(http, fed, url)
    assert final.status_code in (302, 303), final.text[:500]
    answer = query_of(final.headers["location"])
    assert answer["iss"] == fed.gateway.base
    assert answer["state"] == "st-1"
    tokens = await exchange_code(
        http,
        fed.gateway.base,
        code=answer["code"],
        verifier=proof.verifier,
        client_id=client_id,
        resource=resource,
    )
    assert tokens.status_code == 200, tokens.text
    body = tokens.json()
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["iss"] == fed.gateway.base  # Bastion's own token, not the IdP's
    assert claims["aud"] == resource
    assert claims["sub"].startswith("x_")
    assert claims["groups"] == ["sales"]  # the app role Sales.Write, mapped
    assert claims["attrs"] == {"department": "finance", "level": 4}  # claims.attributes, dotted too
    assert (await list_tools(http, resource, body["access_token"])).status_code == 200

    listing = _cli(fed, "users", "list")
    assert "entra:alice@contoso.com" in listing
    assert "entra" in listing  # the source
    audit = _cli(fed, "audit", "tail", "-n", "100", "--json")
    assert "login.succeeded" in audit
    assert "idp entra" in audit

    # a refresh re-checks the IdP session; once the IdP disables the user it fails
    refreshed = await http.post(
        f"{fed.gateway.base}/token",
        data={"grant_type": "refresh_token", "refresh_token": body["refresh_token"], "client_id": client_id},
    )
    assert refreshed.status_code == 200, refreshed.text


async def test_consent_comes_before_the_idp_and_deny_goes_back_to_the_client(
    fed: Federation, http: httpx2.AsyncClient
) -> None:
    client_id = await _register(http, fed)
    proof = pkce()
    url = authorize_url(
        fed.gateway.base, client_id=client_id, resource=fed.gateway.url("a"), challenge=proof.challenge
    )
    denied = await through_bastion_to_idp(http, url, decision="deny")
    location = denied.headers["location"]
    assert location.startswith(REDIRECT)
    assert query_of(location)["error"] == "access_denied"
    assert query_of(location)["iss"] == fed.gateway.base


async def test_cancel_at_the_idp_is_access_denied_for_the_client(
    fed: Federation, http: httpx2.AsyncClient
) -> None:
    client_id = await _register(http, fed)
    proof = pkce()
    url = authorize_url(
        fed.gateway.base, client_id=client_id, resource=fed.gateway.url("a"), challenge=proof.challenge
    )
    final = await sign_in_via_idp(http, fed, url, cancel=True)
    assert final.status_code in (302, 303), final.text[:300]
    assert query_of(final.headers["location"])["error"] == "access_denied"


async def _signed_in_tokens(
    http: httpx2.AsyncClient, fed: Federation, login: str
) -> tuple[str, dict[str, str]]:
    client_id = await _register(http, fed)
    resource = fed.gateway.url("a")
    proof = pkce()
    url = authorize_url(fed.gateway.base, client_id=client_id, resource=resource, challenge=proof.challenge)
    final = await sign_in_via_idp(http, fed, url, login=login)
    code = query_of(final.headers["location"])["code"]
    tokens = await exchange_code(
        http, fed.gateway.base, code=code, verifier=proof.verifier, client_id=client_id, resource=resource
    )
    assert tokens.status_code == 200, tokens.text
    return client_id, tokens.json()


async def test_a_user_disabled_at_the_idp_cannot_refresh(fed: Federation, http: httpx2.AsyncClient) -> None:
    client_id, tokens = await _signed_in_tokens(http, fed, "carol")
    fed.idp.disable("carol")
    try:
        refreshed = await http.post(
            f"{fed.gateway.base}/token",
            data={
                "grant_type": "refresh_token",
                "refresh_token": tokens["refresh_token"],
                "client_id": client_id,
            },
        )
    finally:
        fed.idp.enable("carol")
    assert refreshed.status_code == 400, refreshed.text
    assert refreshed.json()["error"] == "invalid_grant"
    # the family is gone: the access token it issued last is refused too
    assert (await list_tools(http, fed.gateway.url("a"), tokens["access_token"])).status_code == 401


async def test_login_hint_from_the_client_picks_the_idp_by_domain(
    fed: Federation, http: httpx2.AsyncClient
) -> None:
    client_id = await _register(http, fed)
    proof = pkce()
    url = authorize_url(
        fed.gateway.base,
        client_id=client_id,
        resource=fed.gateway.url("a"),
        challenge=proof.challenge,
        login_hint="Alice@Contoso.com",
    )
    first = await http.get(url)
    assert first.status_code == 303
    assert first.headers["location"].startswith("/login/idp/entra?request=")
    to_idp = await through_bastion_to_idp(http, url)
    location = to_idp.headers["location"]
    assert location.startswith(fed.idp.base)
    assert query_of(location)["login_hint"] == "Alice@Contoso.com"
    assert "resource" not in query_of(location)  # never sent to Entra
