"""``upstreams[].auth: {type: token_exchange}`` end to end: a real Bastion signs users in through
an Entra-like OpenID Provider (oidc-provider, ``tests/node/idp.mjs`` with its RFC 8693 token
exchange and on-behalf-of switches on); their MCP client calls ``whoami`` on a real MCP server
(``tests/fixtures/saas_upstream.py``) that only accepts JWTs the IdP signed for its audience.

Upstreams, all the same kind of server:

- ``crm``: RFC 8693 with the ID token of the sign-in as subject token, audience and scope;
- ``crm-at``: RFC 8693 with an IdP access token for Bastion's API (``api://bastion-gateway``)
  as subject token, got with the sign-in's refresh token;
- ``obo``: Entra on-behalf-of (jwt-bearer, requested_token_use=on_behalf_of) for
  ``api://crm-obo/.default``.

Checked: the upstream sees a token whose ``sub`` is the user, exchanged once and then cached
(exchanges counted at the IdP), what Bastion sent the IdP, that the MCP client sees none of it;
the IdP refusing → -32015 naming the error code, not its description; a password user without
an IdP sign-in, and a client acting for itself → -32015; the upstream refusing a cached token
(401) → the next call exchanges again."""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import pytest

from tests.support.federation import ALICE, Federation, callback_url, sign_in_via_idp
from tests.support.gateway import Gateway, run_gateway
from tests.support.idp import IdpServer, require_idp_packages, run_idp, secret_client
from tests.support.oauth import (
    MCP_ACCEPT,
    REDIRECT_URI,
    add_users,
    authorize_url,
    browser,
    exchange_code,
    pkce,
    query_of,
    user_token,
)
from tests.support.procs import free_port
from tests.support.saas import SaasUpstream, credential_hash, run_saas_upstream

TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
ID_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:id_token"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
CRM_AUDIENCE = "https://crm.contoso.test/api"
OBO_API = "api://crm-obo"
BASTION_API = "api://bastion-gateway"  # Bastion's own app at the IdP (its client id: bastion-gateway)
ROBOT_SECRET = secrets.token_urlsafe(24)
MODERN = "2026-07-28"
USERS = {
    login: {**ALICE, "sub": f"{login}-pairwise", "oid": f"oid-{login}", "email": f"{login}@contoso.com"}
    for login in ("bob", "carol", "dave", "erin")
} | {"alice": ALICE}


@dataclass
class Setup:
    fed: Federation
    crm: SaasUpstream  # accepts tokens for CRM_AUDIENCE
    obo: SaasUpstream  # accepts tokens for OBO_API

    @property
    def gateway(self) -> Gateway:
        return self.fed.gateway

    @property
    def idp(self) -> IdpServer:
        return self.fed.idp


def _upstreams(crm: SaasUpstream, obo: SaasUpstream) -> list[dict[str, Any]]:
    exchange = {"type": "token_exchange", "identity_provider": "entra"}
    return [
        {
            "name": "crm",
            "http": {"url": crm.url},
            "auth": {**exchange, "audience": CRM_AUDIENCE, "scopes": ["crm:read"]},
        },
        {
            "name": "crm-at",
            "http": {"url": crm.url},
            "auth": {
                **exchange,
                "subject_token": "access_token",
                "subject_scopes": [f"{BASTION_API}/.default"],
                "audience": CRM_AUDIENCE,
            },
        },
        {
            "name": "obo",
            "http": {"url": obo.url},
            "auth": {
                **exchange,
                "style": "entra_obo",
                "subject_scopes": [f"{BASTION_API}/.default"],
                "scopes": [f"{OBO_API}/.default"],
            },
        },
    ]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    require_idp_packages()
    tmp: Path = tmp_path_factory.mktemp("token-exchange")
    port = free_port()
    client = secret_client("bastion-gateway", [callback_url(f"http://127.0.0.1:{port}", "entra")])
    idp_extra = {"token_exchange": True, "obo": True}
    with (
        run_idp(tmp, clients=[client], users=USERS, extra=idp_extra) as idp,
        run_saas_upstream(tmp / "crm", issuer=idp.issuer, audience=CRM_AUDIENCE) as crm,
        run_saas_upstream(tmp / "obo", issuer=idp.issuer, audience=OBO_API) as obo,
    ):
        entra = {
            "name": "entra",
            "preset": "entra",
            "issuer": idp.issuer,
            "client_id": client["client_id"],
            "client_secret": client["client_secret"],
        }
        robot = {
            "client_id": "robot",
            "secret_sha256": hashlib.sha256(ROBOT_SECRET.encode()).hexdigest(),
            "grant_types": ["client_credentials"],
        }
        agent = {"client_id": "agent", "name": "Agent", "redirect_uris": [REDIRECT_URI], "trusted": True}
        config = {"auth": {"enabled": True}, "identity_providers": [entra], "clients": [agent, robot]}
        with run_gateway(tmp, _upstreams(crm, obo), extra=config, port=port) as gateway:
            yield Setup(Federation(gateway, idp, client["client_secret"]), crm, obo)


async def signed_in(setup: Setup, login: str, endpoint: str) -> str:
    """``login`` signs in to Bastion through the IdP; their MCP client's token for ``endpoint``."""
    gateway = setup.gateway
    async with browser() as http:
        proof = pkce()
        url = authorize_url(
            gateway.base, client_id="agent", resource=gateway.url(endpoint), challenge=proof.challenge
        )
        final = await sign_in_via_idp(http, setup.fed, url, login=login)
        code = query_of(final.headers["location"])["code"]
        response = await exchange_code(
            http,
            gateway.base,
            code=code,
            verifier=proof.verifier,
            client_id="agent",
            resource=gateway.url(endpoint),
        )
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


async def whoami(setup: Setup, endpoint: str, token: str) -> dict[str, Any]:
    """A 2026-07-28 ``tools/call whoami`` at ``/mcp/<endpoint>``: the JSON-RPC answer."""
    meta = {
        "io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientCapabilities": {},
    }
    body = {
        "jsonrpc": "2.0",
        "id": 7,
        "method": "tools/call",
        "params": {"name": "whoami", "arguments": {}, "_meta": meta},
    }
    headers = {
        "accept": MCP_ACCEPT,
        "mcp-protocol-version": MODERN,
        "mcp-method": "tools/call",
        "mcp-name": "whoami",
        "authorization": f"Bearer {token}",
    }
    async with httpx2.AsyncClient(timeout=30) as http:
        response = await http.post(setup.gateway.url(endpoint), json=body, headers=headers)
    assert response.status_code == 200, response.text
    raw = response.text
    if raw.startswith(("event:", "data:", ":")):
        raw = [line[5:] for line in raw.splitlines() if line.startswith("data:")][-1]
    answer: dict[str, Any] = json.loads(raw)
    return answer


def seen_by(answer: dict[str, Any]) -> dict[str, Any]:
    """What whoami says the upstream saw (its ``sub``, ``scopes``, ``client_id``)."""
    assert "result" in answer, answer
    result = answer["result"]
    assert not result.get("isError"), result
    text = "".join(c.get("text", "") for c in result["content"])
    assert "eyJ" not in json.dumps(answer)  # no token of any kind reaches the MCP client
    seen: dict[str, Any] = json.loads(text)
    return seen


def exchanges_since(idp: IdpServer, before: int) -> list[dict[str, Any]]:
    return idp.exchange_requests()[before:]


# -- RFC 8693 --------------------------------------------------------------------------------------


async def test_the_id_token_is_exchanged_once_for_the_users_upstream_token(setup: Setup) -> None:
    before = len(setup.idp.exchange_requests())
    counts = setup.idp.grant_counts()
    token = await signed_in(setup, "alice", "crm")
    first = seen_by(await whoami(setup, "crm", token))
    assert first["sub"] == ALICE["sub"]  # the user, as the IdP knows them
    assert first["client_id"] == "bastion-gateway"  # issued to Bastion's app at the IdP
    assert first["scopes"] == ["crm:read"]
    assert seen_by(await whoami(setup, "crm", token))["sub"] == ALICE["sub"]

    sent = exchanges_since(setup.idp, before)
    assert sent == [
        {
            "grant_type": TOKEN_EXCHANGE,
            "requested_token_type": ACCESS_TOKEN_TYPE,
            "subject_token_type": ID_TOKEN_TYPE,
            "audience": CRM_AUDIENCE,
            "scope": "crm:read",
            "client_id": "bastion-gateway",
            "subject_token_present": True,
        }
    ], "one exchange, then the cached token"
    after = setup.idp.grant_counts()
    assert after.succeeded[TOKEN_EXCHANGE] - counts.succeeded[TOKEN_EXCHANGE] == 1
    assert after.requests["refresh_token"] == counts.requests["refresh_token"]  # the ID token was fresh

    # what the upstream got is the IdP's token, never Bastion's own
    seen = setup.crm.seen()[-2:]
    assert {s["sub"] for s in seen} == {ALICE["sub"]}
    assert credential_hash(token) not in {s["sha256"] for s in seen}
    assert len({s["sha256"] for s in seen}) == 1  # the same cached token twice
    log = setup.gateway.log()
    assert token not in log
    assert "eyJ" not in log


async def test_an_idp_access_token_can_be_the_subject_token(setup: Setup) -> None:
    """``subject_token: access_token``: the sign-in's refresh token gets an access token for
    Bastion's API at the IdP (Entra-style scope), which is then exchanged."""
    token = await signed_in(setup, "bob", "crm-at")
    before = len(setup.idp.exchange_requests())
    refreshes = setup.idp.grant_counts().succeeded["refresh_token"]
    assert seen_by(await whoami(setup, "crm-at", token))["sub"] == USERS["bob"]["sub"]
    assert seen_by(await whoami(setup, "crm-at", token))["sub"] == USERS["bob"]["sub"]
    sent = exchanges_since(setup.idp, before)
    assert len(sent) == 1
    assert sent[0]["subject_token_type"] == ACCESS_TOKEN_TYPE
    assert sent[0]["audience"] == CRM_AUDIENCE
    assert "scope" not in sent[0]
    assert setup.idp.grant_counts().succeeded["refresh_token"] - refreshes == 1


# -- Entra on-behalf-of ----------------------------------------------------------------------------


async def test_entra_on_behalf_of(setup: Setup) -> None:
    token = await signed_in(setup, "alice", "obo")
    before = len(setup.idp.exchange_requests())
    first = seen_by(await whoami(setup, "obo", token))
    assert first["sub"] == ALICE["sub"]
    assert first["client_id"] == "bastion-gateway"
    assert seen_by(await whoami(setup, "obo", token))["sub"] == ALICE["sub"]
    assert exchanges_since(setup.idp, before) == [
        {
            "grant_type": JWT_BEARER,
            "requested_token_use": "on_behalf_of",
            "scope": f"{OBO_API}/.default",
            "client_id": "bastion-gateway",
            "subject_token_present": True,
        }
    ]
    assert {s["sub"] for s in setup.obo.seen()} == {ALICE["sub"]}


# -- when there is no token ------------------------------------------------------------------------


def credentials_error(answer: dict[str, Any], upstream: str) -> str:
    assert "error" in answer, answer
    error = answer["error"]
    assert error["code"] == -32015, error
    message = str(error["message"])
    assert f"upstream '{upstream}'" in message
    return message


async def test_the_idp_refusing_is_named_by_its_error_code(setup: Setup) -> None:
    token = await signed_in(setup, "carol", "crm")
    seen = len(setup.crm.seen())
    description = "AADSTS50013: <b>policy</b> forbids tenant 1234"
    with setup.idp.changed(exchange_error="invalid_grant", exchange_error_description=description):
        message = credentials_error(await whoami(setup, "crm", token), "crm")
    assert "Microsoft refused the token exchange for this server (invalid_grant)" in message
    assert "AADSTS50013" not in message
    assert "<b>" not in message
    with setup.idp.changed(exchange_error="interaction_required"):
        stronger = credentials_error(await whoami(setup, "crm", token), "crm")
    assert "(interaction_required)" in stronger
    assert "sign in to Bastion again through Microsoft" in stronger
    assert len(setup.crm.seen()) == seen  # nothing reached the upstream
    # a refusal is not cached: once the IdP agrees, the call works
    assert seen_by(await whoami(setup, "crm", token))["sub"] == USERS["carol"]["sub"]
    assert (
        "the token exchange was refused: token endpoint HTTP 400 error=invalid_grant" in setup.gateway.log()
    )


async def test_a_password_user_without_an_idp_sign_in_is_told_to_sign_in_through_it(setup: Setup) -> None:
    await add_users(setup.gateway, {"pat": "pat-password-1"})
    tokens = await user_token(
        setup.gateway.base,
        client_id="agent",
        resource=setup.gateway.url("crm"),
        username="pat",
        password="pat-password-1",
    )
    before = len(setup.idp.exchange_requests())
    message = credentials_error(await whoami(setup, "crm", str(tokens["access_token"])), "crm")
    assert "Sign in to Bastion again through Microsoft" in message
    assert len(setup.idp.exchange_requests()) == before


async def test_a_client_acting_for_itself_gets_no_token(setup: Setup) -> None:
    async with httpx2.AsyncClient(timeout=30) as http:
        response = await http.post(
            f"{setup.gateway.base}/token",
            data={"grant_type": "client_credentials", "resource": setup.gateway.url("crm")},
            auth=("robot", ROBOT_SECRET),
        )
    assert response.status_code == 200, response.text
    before = len(setup.idp.exchange_requests())
    message = credentials_error(await whoami(setup, "crm", str(response.json()["access_token"])), "crm")
    assert "client acting for itself" in message
    assert len(setup.idp.exchange_requests()) == before


# -- the upstream refuses a cached token -------------------------------------------------------------


async def test_an_upstream_401_makes_the_next_call_exchange_again(setup: Setup) -> None:
    """The IdP says the token lives an hour but makes it expire in 3 seconds: Bastion's cached
    token is refused by the upstream (401), forgotten, and the next call exchanges anew."""
    token = await signed_in(setup, "dave", "crm")
    before = len(setup.idp.exchange_requests())
    with setup.idp.changed(exchange_ttl=3, exchange_expires_in=3600):
        assert seen_by(await whoami(setup, "crm", token))["sub"] == USERS["dave"]["sub"]
    await asyncio.sleep(3.5)
    refused = await whoami(setup, "crm", token)
    assert "error" in refused or refused["result"].get("isError"), refused
    assert setup.crm.seen()[-1]["status"] == 401
    assert len(exchanges_since(setup.idp, before)) == 1  # the refused token came from the cache
    assert seen_by(await whoami(setup, "crm", token))["sub"] == USERS["dave"]["sub"]
    assert len(exchanges_since(setup.idp, before)) == 2
