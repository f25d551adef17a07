"""The Entra-like test IdP (oidc-provider, tests/node/idp.mjs) behaves the way the federation
tests rely on: tenant-path discovery without registration, code + PKCE with the static
clients, Entra's claims in a JWKS-verifiable ID token, `resource` refused with AADSTS9010010,
refresh until the user is disabled, groups overage, and the run-time switches."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx2
import jwt
import pytest

from tests.support.idp import (
    IdpServer,
    idp_authorization_url,
    idp_jwks,
    idp_refresh,
    idp_sign_in,
    idp_token_request,
    idp_tokens,
    pkce_pair,
    private_key_jwt_client,
    query_params,
    run_idp,
    secret_client,
    verify_id_token,
)

pytestmark = pytest.mark.node

CALLBACK = "http://127.0.0.1:53999/oauth/idp/callback"
TENANT = "11111111-2222-4333-8444-555555555555"
CLIENT = secret_client("bastion-app", [CALLBACK], secret="app-secret")
POST_CLIENT = secret_client("bastion-post", [CALLBACK], method="client_secret_post")
JWT_CLIENT = private_key_jwt_client("bastion-cert", [CALLBACK])
USERS = {
    "alice": {
        "sub": "alice-sub-0001",
        "email": "alice@contoso.test",
        "name": "Alice Example",
        "groups": ["sales", "staff"],
        "roles": ["Sales.Write"],
        "tid": TENANT,
        "oid": "0000aaaa-0000-4000-8000-00000000a11c",
    },
    "bob": {"email": "bob@contoso.test", "name": "Bob", "groups": ["staff"], "roles": [], "tid": TENANT},
    "carol": {"email": "carol@contoso.test", "name": "Carol", "groups": ["g"] * 3, "tid": TENANT},
    "dave": {"email": "dave@contoso.test", "name": "Dave", "password": "hunter2", "tid": TENANT},
}


@pytest.fixture(scope="module")
def idp(flow_tmp: Path) -> Iterator[IdpServer]:
    with run_idp(
        flow_tmp,
        clients=[CLIENT, POST_CLIENT, JWT_CLIENT],
        users=USERS,
        groups_overage_users=["carol"],
    ) as server:
        yield server


@pytest.fixture
async def http() -> AsyncIterator[httpx2.AsyncClient]:
    async with httpx2.AsyncClient(timeout=20) as client:
        yield client


async def test_discovery_at_tenant_issuer_has_no_registration(
    idp: IdpServer, http: httpx2.AsyncClient
) -> None:
    assert idp.issuer.endswith("/tenant-a/v2.0")
    meta = (await http.get(f"{idp.issuer}/.well-known/openid-configuration")).raise_for_status().json()
    assert meta["issuer"] == idp.issuer
    assert "registration_endpoint" not in meta
    assert meta["code_challenge_methods_supported"] == ["S256"]
    assert meta["authorization_endpoint"].startswith(f"{idp.issuer}/")
    assert meta["token_endpoint"].startswith(f"{idp.issuer}/")
    assert set(meta["token_endpoint_auth_methods_supported"]) == {
        "client_secret_basic",
        "client_secret_post",
        "private_key_jwt",
    }
    assert {"roles", "groups", "tid", "oid"} <= set(meta["claims_supported"])
    # Entra serves discovery under the tenant path only
    assert (await http.get(f"{idp.base}/.well-known/openid-configuration")).status_code == 404


async def test_code_flow_id_token_claims_and_signature(idp: IdpServer, http: httpx2.AsyncClient) -> None:
    tokens = await idp_tokens(http, idp, client=CLIENT, login="alice", nonce="n-0S6_WzA2Mj")
    assert tokens.callback["iss"] == idp.issuer  # RFC 9207
    claims = verify_id_token(
        tokens.id_token, await idp_jwks(http, idp), issuer=idp.issuer, audience="bastion-app"
    )
    assert claims["sub"] == "alice-sub-0001"
    assert claims["nonce"] == "n-0S6_WzA2Mj"
    assert claims["azp"] == "bastion-app"
    assert claims["roles"] == ["Sales.Write"]
    assert claims["groups"] == ["sales", "staff"]
    assert claims["tid"] == TENANT
    assert claims["oid"] == USERS["alice"]["oid"]
    assert claims["email"] == "alice@contoso.test"
    assert claims["name"] == "Alice Example"
    assert "refresh_token" not in tokens.response  # no offline_access asked
    # a forged signature does not verify
    head, payload, sig = tokens.id_token.split(".")
    forged = f"{head}.{payload}.{sig[:-4]}AAAA"
    with pytest.raises(jwt.InvalidSignatureError):
        verify_id_token(forged, await idp_jwks(http, idp), issuer=idp.issuer, audience="bastion-app")


@pytest.mark.parametrize("client", [POST_CLIENT, JWT_CLIENT], ids=["client_secret_post", "private_key_jwt"])
async def test_other_client_auth_methods(idp: IdpServer, http: httpx2.AsyncClient, client: dict) -> None:
    tokens = await idp_tokens(http, idp, client=client, login="bob")
    assert tokens.claims["aud"] == client["client_id"]
    assert tokens.claims["groups"] == ["staff"]


async def test_pkce_is_required(idp: IdpServer, http: httpx2.AsyncClient) -> None:
    url = idp_authorization_url(
        idp, client_id="bastion-app", redirect_uri=CALLBACK, code_challenge=None, state="s1", nonce="n1"
    )
    resp = await http.get(url)
    assert resp.status_code in (302, 303)
    q = query_params(resp)
    assert q["error"] == "invalid_request", q
    assert q["state"] == "s1"


async def test_resource_rejected_like_entra(idp: IdpServer, http: httpx2.AsyncClient) -> None:
    verifier, challenge = pkce_pair()
    url = idp_authorization_url(
        idp,
        client_id="bastion-app",
        redirect_uri=CALLBACK,
        code_challenge=challenge,
        state="s2",
        nonce="n2",
        resource="http://127.0.0.1:8000/mcp",
    )
    q = query_params(await idp_sign_in(http, url, login="alice", stop_prefix=CALLBACK))
    assert q["error"] == "invalid_target"
    assert "AADSTS9010010" in q["error_description"]
    assert q["state"] == "s2"

    # at the token endpoint too: a good code, redeemed with a resource
    url = idp_authorization_url(
        idp, client_id="bastion-app", redirect_uri=CALLBACK, code_challenge=challenge, state="s3", nonce="n3"
    )
    q = query_params(await idp_sign_in(http, url, login="alice", stop_prefix=CALLBACK))
    form = {
        "grant_type": "authorization_code",
        "code": q["code"],
        "redirect_uri": CALLBACK,
        "code_verifier": verifier,
        "resource": "http://127.0.0.1:8000/mcp",
    }
    resp = await idp_token_request(http, idp, CLIENT, form)
    assert resp.status_code == 400
    assert resp.json()["error"] == "invalid_target"
    assert "AADSTS9010010" in resp.json()["error_description"]


async def test_refresh_until_user_disabled(idp: IdpServer, http: httpx2.AsyncClient) -> None:
    tokens = await idp_tokens(
        http, idp, client=CLIENT, login="bob", scope="openid profile email offline_access"
    )
    assert tokens.refresh_token
    first = await idp_refresh(http, idp, client=CLIENT, refresh_token=tokens.refresh_token)
    assert first.status_code == 200, first.text
    refreshed = first.json()
    assert refreshed["refresh_token"] != tokens.refresh_token  # rotated, like Entra
    fresh_claims = jwt.decode(refreshed["id_token"], options={"verify_signature": False})
    assert fresh_claims["sub"] == tokens.claims["sub"]

    idp.disable("bob")
    try:
        resp = await idp_refresh(http, idp, client=CLIENT, refresh_token=refreshed["refresh_token"])
        assert resp.status_code == 400
        assert resp.json()["error"] == "invalid_grant"
        assert "AADSTS50057" in resp.json()["error_description"]
        # and they can no longer sign in
        with pytest.raises(AssertionError, match="AADSTS50057"):
            async with httpx2.AsyncClient(timeout=20) as fresh_browser:
                await idp_tokens(fresh_browser, idp, client=CLIENT, login="bob")
    finally:
        idp.enable("bob")


async def test_groups_overage(idp: IdpServer, http: httpx2.AsyncClient) -> None:
    claims = (await idp_tokens(http, idp, client=CLIENT, login="carol")).claims
    assert "groups" not in claims
    assert claims["_claim_names"] == {"groups": "src1"}
    assert "endpoint" in claims["_claim_sources"]["src1"]


async def test_password_cancel_and_unknown_user(idp: IdpServer, http: httpx2.AsyncClient) -> None:
    with pytest.raises(AssertionError, match="AADSTS50126"):
        await idp_tokens(http, idp, client=CLIENT, login="dave", password="wrong")
    tokens = await idp_tokens(http, idp, client=CLIENT, login="dave", password="hunter2")
    assert tokens.claims["email"] == "dave@contoso.test"
    async with httpx2.AsyncClient(timeout=20) as other:
        with pytest.raises(AssertionError, match="AADSTS50034"):
            await idp_tokens(other, idp, client=CLIENT, login="mallory")
    _, challenge = pkce_pair()
    url = idp_authorization_url(
        idp, client_id="bastion-app", redirect_uri=CALLBACK, code_challenge=challenge, state="s4", nonce="n4"
    )
    async with httpx2.AsyncClient(timeout=20) as other:
        q = query_params(await idp_sign_in(other, url, login="alice", stop_prefix=CALLBACK, cancel=True))
    assert q["error"] == "access_denied"
    assert q["state"] == "s4"


async def test_runtime_switches(idp: IdpServer, http: httpx2.AsyncClient) -> None:
    jwks = await idp_jwks(http, idp)
    with idp.changed(id_token_bad_signature=True):
        tokens = await idp_tokens(http, idp, client=CLIENT, login="alice")
        with pytest.raises(jwt.InvalidSignatureError):
            verify_id_token(tokens.id_token, jwks, issuer=idp.issuer, audience="bastion-app")
    with idp.changed(
        id_token_claims={"aud": "someone-else", "nonce": None}, authorization_response_iss=False
    ):
        tokens = await idp_tokens(http, idp, client=CLIENT, login="alice")
        assert "iss" not in tokens.callback
        with pytest.raises(jwt.InvalidAudienceError):
            verify_id_token(tokens.id_token, jwks, issuer=idp.issuer, audience="bastion-app")
        assert "nonce" not in tokens.claims
    with idp.changed(delay_ms=1500), pytest.raises(httpx2.TimeoutException):
        await http.get(idp.discovery_url, timeout=0.3)
    assert (await http.get(idp.discovery_url, timeout=2)).status_code == 200


async def test_second_idp_differently_configured(
    idp: IdpServer, flow_tmp: Path, http: httpx2.AsyncClient
) -> None:
    """A second IdP beside the first: issuer at the origin, `resource` honoured (JWT access token
    for it), admin-consented app (no consent page), short ID tokens, a user added at run time."""
    client = secret_client("other-app", [CALLBACK])
    with run_idp(
        flow_tmp,
        issuer_path="",
        clients=[client],
        users={"erin": {"email": "erin@fabrikam.test", "roles": ["Reader"]}},
        reject_resource=False,
        extra={"consent": False, "id_token_ttl": 120, "tenant_id": "fabrikam"},
    ) as other:
        assert other.issuer != idp.issuer
        assert other.metadata["issuer"] == other.issuer == other.base
        tokens = await idp_tokens(
            http,
            other,
            client=client,
            login="erin",
            scope="openid email offline_access api://bastion/.default",
            auth_params={"resource": "http://127.0.0.1:8000/mcp"},
            token_params={"resource": "http://127.0.0.1:8000/mcp"},
        )
        claims = tokens.claims
        assert claims["iss"] == other.issuer
        assert claims["exp"] - claims["iat"] == 120
        assert claims["tid"] == "fabrikam"
        assert claims["roles"] == ["Reader"]
        assert tokens.refresh_token
        access = jwt.decode(tokens.access_token, options={"verify_signature": False})
        assert access["aud"] == "http://127.0.0.1:8000/mcp"

        other.put_user("frank", {"email": "frank@fabrikam.test", "groups": ["ops"]})
        async with httpx2.AsyncClient(timeout=20) as browser:
            frank = await idp_tokens(browser, other, client=client, login="frank")
        assert frank.claims["groups"] == ["ops"]
