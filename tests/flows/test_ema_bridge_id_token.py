"""The ID-JAG bridge with an ID token as the subject token (MCP EMA §4.3): the MCP client signs the
user in at the enterprise IdP itself (a real oidc-provider configured like Entra) and exchanges the
ID token it got, issued to the client's own application there, at Bastion for an ID-JAG. The ID
token must verify with the IdP's keys and be addressed to that client's id at the IdP, and it must
name a user who signed in to Bastion through that IdP before."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx2
import jwt
import pytest

from tests.support.ema import ID_JAG_TYPE, ID_TOKEN_TYPE, exchange
from tests.support.federation import ALICE, Federation, callback_url, idp_provider, sign_in_via_idp
from tests.support.gateway import run_gateway
from tests.support.idp import idp_tokens, run_idp, secret_client
from tests.support.oauth import REDIRECT_URI, authorize_url, browser, pkce
from tests.support.procs import free_port
from tests.support.recording import recording_upstream

SECRET = secrets.token_urlsafe(32)
TARGET = "https://as.example.test"
RESOURCE = "https://mcp.example.test/mcp"
APP_REDIRECT = "http://127.0.0.1:53999/app-callback"
BOB = {
    **ALICE,
    "sub": "bob-pairwise",
    "oid": "00000000-0000-0000-0000-0000000000b2",
    "email": "bob@contoso.com",
}


@pytest.fixture(scope="module")
def fed(flow_tmp: Path) -> Iterator[tuple[Federation, dict[str, Any]]]:
    port = free_port()
    gateway_client = secret_client("bastion-gateway", [callback_url(f"http://127.0.0.1:{port}", "entra")])
    app = secret_client("agent-app", [APP_REDIRECT])  # the MCP client's own application at the IdP
    with (
        run_idp(flow_tmp, clients=[gateway_client, app], users={"alice": ALICE, "bob": BOB}) as idp,
        recording_upstream() as upstream,
    ):
        extra = {
            "auth": {"enabled": True, "scopes": ["mcp"]},
            "identity_providers": [idp_provider("entra", idp, gateway_client)],
            "clients": [
                {
                    "client_id": "agent",
                    "secret_sha256": hashlib.sha256(SECRET.encode()).hexdigest(),
                    "redirect_uris": [REDIRECT_URI],
                    "trusted": True,
                }
            ],
            "ema": {
                "bridge": {
                    "enabled": True,
                    "targets": [{"audience": TARGET, "resources": [RESOURCE], "clients": ["agent"]}],
                    "idp_client_ids": {"agent": "agent-app"},
                }
            },
        }
        upstreams = [{"name": "a", "http": {"url": upstream.url}}]
        with run_gateway(flow_tmp, upstreams, extra=extra, port=port) as gateway:
            yield Federation(gateway, idp, gateway_client["client_secret"]), app


@pytest.fixture
async def http() -> AsyncIterator[httpx2.AsyncClient]:
    async with browser() as client:
        yield client


async def id_token(fed: Federation, client: dict[str, Any], login: str = "alice") -> str:
    async with browser() as http:
        tokens = await idp_tokens(http, fed.idp, client=client, login=login, redirect_uri=APP_REDIRECT)
    return tokens.id_token


async def swap(fed: Federation, token: str) -> httpx2.Response:
    return await exchange(
        fed.gateway.base,
        token,
        client="agent",
        secret=SECRET,
        audience=TARGET,
        subject_token_type=ID_TOKEN_TYPE,
    )


def refused(response: httpx2.Response) -> str:
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_grant", response.text
    return str(response.json()["error_description"])


async def test_an_id_token_from_the_idp_becomes_an_id_jag(
    fed: tuple[Federation, dict[str, Any]], http: httpx2.AsyncClient
) -> None:
    federation, app = fed
    gateway = federation.gateway
    token = await id_token(federation, app)
    # alice has not signed in to Bastion yet: the bridge never creates users
    assert "not signed in to Bastion" in refused(await swap(federation, token))

    proof = pkce()
    url = authorize_url(gateway.base, client_id="agent", resource=gateway.url("a"), challenge=proof.challenge)
    final = await sign_in_via_idp(http, federation, url)
    assert final.status_code in (302, 303), final.text[:500]

    response = await swap(federation, token)
    assert response.status_code == 200, response.text
    assert response.json()["issued_token_type"] == ID_JAG_TYPE
    claims = jwt.decode(response.json()["access_token"], options={"verify_signature": False})
    assert claims["aud"] == TARGET
    assert claims["resource"] == RESOURCE
    assert claims["client_id"] == "agent"
    assert claims["sub"].startswith("x_")  # the federated user's id at Bastion
    assert token not in gateway.log()


async def test_id_tokens_that_are_not_this_clients_are_refused(
    fed: tuple[Federation, dict[str, Any]],
) -> None:
    federation, app = fed
    # bob exists at the IdP but never signed in to Bastion
    assert "not signed in" in refused(await swap(federation, await id_token(federation, app, "bob")))
    # an ID token the IdP issued to another application (here: Bastion's own) is not this client's
    gateway_client = {
        "client_id": "bastion-gateway",
        "client_secret": federation.client_secret,
        "redirect_uris": [federation.callback],
        "token_endpoint_auth_method": "client_secret_basic",
    }
    async with browser() as http:
        other = (await idp_tokens(http, federation.idp, client=gateway_client, login="alice")).id_token
    refused(await swap(federation, other))
    assert "InvalidAudienceError" in federation.gateway.log()  # the private detail, logged only
    # a tampered signature, and something that is no JWT at all
    token = await id_token(federation, app)
    head, body, signature = token.split(".")
    flipped = signature[:-4] + ("AAAA" if signature[-4:] != "AAAA" else "BBBB")
    refused(await swap(federation, f"{head}.{body}.{flipped}"))
    refused(await swap(federation, "not-a-jwt"))
