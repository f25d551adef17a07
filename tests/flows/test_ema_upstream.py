"""Enterprise-Managed Authorization, role 3: Bastion as the EMA client of an upstream. Two
Bastions chained: A signs alice in through an Entra-like IdP (oidc-provider) and has upstream
``b`` = B's ``/mcp/notes`` declared ``auth: {type: ema, id_jag_issuer: bastion}``; B trusts A as an
ID-JAG issuer. alice's MCP client only ever holds A's token; A mints an ID-JAG for her (its
bridge), redeems it at B's /token, caches B's token and calls B with it.

Upstream ``b-idp`` = B's ``/mcp/tasks`` takes the enterprise-IdP path instead
(``id_jag_issuer: entra``): A exchanges the ID token of alice's sign-in at the IdP (oidc-provider
with its RFC 8693 ID-JAG grant on) and B trusts the IdP."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import pytest

from tests.support.federation import ALICE, Federation, callback_url, sign_in_via_idp
from tests.support.federation_checks import audit_records
from tests.support.gateway import Gateway, run_gateway
from tests.support.idp import IdpServer, run_idp, secret_client
from tests.support.oauth import (
    MCP_ACCEPT,
    REDIRECT_URI,
    authorize_url,
    browser,
    exchange_code,
    list_tools,
    pkce,
    post_initialize,
    query_of,
)
from tests.support.procs import free_port
from tests.support.recording import RecordingUpstream, recording_upstream

B_SECRET = secrets.token_urlsafe(32)
BOB = {**ALICE, "sub": "bob-pairwise", "oid": "00000000-0000-0000-0000-0000000000b2"}
BOB.update(email="bob@contoso.com", name="Bob", roles=[], groups=[])


@dataclass
class Chain:
    a: Federation
    b: Gateway
    behind_b: RecordingUpstream


def _b_config(a_base: str, idp: IdpServer) -> dict[str, Any]:
    """B trusts two ID-JAG issuers: Bastion A and the enterprise IdP; A's client there is gateway-a."""
    idp_jwks = httpx2.get(f"{idp.issuer}/.well-known/openid-configuration", timeout=10).json()["jwks_uri"]
    return {
        "auth": {"enabled": True, "scopes": ["mcp", "notes:read"]},
        "ema": {
            "trusted_issuers": [
                {
                    "issuer": a_base,
                    "jwks_uri": f"{a_base}/jwks",
                    "algorithms": ["ES256"],
                    "name": "bastion-a",
                },
                {"issuer": idp.issuer, "jwks_uri": idp_jwks, "algorithms": ["RS256"], "name": "entra"},
            ]
        },
        "clients": [
            {
                "client_id": "gateway-a",
                "secret_sha256": hashlib.sha256(B_SECRET.encode()).hexdigest(),
                "grant_types": ["client_credentials"],
            }
        ],
    }


def _a_config(idp: IdpServer, gateway_client: dict[str, Any], b_base: str, b_notes: str) -> dict[str, Any]:
    return {
        "auth": {"enabled": True},
        "identity_providers": [
            {
                "name": "entra",
                "preset": "entra",
                "issuer": idp.issuer,
                "client_id": gateway_client["client_id"],
                "client_secret": gateway_client["client_secret"],
                "grants": [{"role": "Sales.Write", "groups": ["sales"]}],
            }
        ],
        "clients": [
            {"client_id": "agent", "name": "Agent", "redirect_uris": [REDIRECT_URI], "trusted": True}
        ],
        "ema": {
            "bridge": {
                "enabled": True,
                "targets": [
                    {
                        "audience": b_base,
                        "resources": [b_notes],
                        "scopes": ["notes:read"],
                        "groups": ["sales"],
                        "include_email": True,
                    }
                ],
            }
        },
    }


@pytest.fixture(scope="module")
def chain(flow_tmp: Path) -> Iterator[Chain]:
    a_port, b_port = free_port(), free_port()
    a_base, b_base = f"http://127.0.0.1:{a_port}", f"http://127.0.0.1:{b_port}"
    b_notes, b_tasks = f"{b_base}/mcp/notes", f"{b_base}/mcp/tasks"
    gateway_client = secret_client("bastion-a", [callback_url(a_base, "entra")])
    users = {"alice": ALICE, "bob": BOB}
    idp_extra = {"id_jag_client_ids": {b_base: "gateway-a"}}
    with (
        run_idp(flow_tmp, clients=[gateway_client], users=users, id_jag=True, extra=idp_extra) as idp,
        recording_upstream() as behind_b,
    ):
        b_upstreams = [{"name": name, "http": {"url": behind_b.url}} for name in ("notes", "tasks")]
        auth = {"type": "ema", "client_id": "gateway-a", "client_secret": B_SECRET}
        a_upstreams = [
            {"name": "b", "http": {"url": b_notes}, "auth": {**auth, "id_jag_issuer": "bastion"}},
            {"name": "b-idp", "http": {"url": b_tasks}, "auth": {**auth, "id_jag_issuer": "entra"}},
        ]
        a_config = _a_config(idp, gateway_client, b_base, b_notes)
        with (
            run_gateway(flow_tmp, b_upstreams, extra=_b_config(a_base, idp), port=b_port) as b,
            run_gateway(flow_tmp, a_upstreams, extra=a_config, port=a_port) as a,
        ):
            yield Chain(Federation(a, idp, gateway_client["client_secret"]), b, behind_b)


@pytest.fixture
async def http() -> AsyncIterator[httpx2.AsyncClient]:
    async with browser() as client:
        yield client


async def a_token(chain: Chain, login: str, endpoint: str = "b") -> str:
    """``login`` signs in to A through the IdP; their MCP client gets A's token for ``endpoint``."""
    a = chain.a.gateway
    async with browser() as http:
        proof = pkce()
        url = authorize_url(a.base, client_id="agent", resource=a.url(endpoint), challenge=proof.challenge)
        final = await sign_in_via_idp(http, chain.a, url, login=login)
        code = query_of(final.headers["location"])["code"]
        response = await exchange_code(
            http, a.base, code=code, verifier=proof.verifier, client_id="agent", resource=a.url(endpoint)
        )
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def redemptions(b: Gateway, issuer: str) -> list[dict[str, object]]:
    return [
        r
        for r in audit_records(b)
        if r.get("event") == "token.issued" and f"ID-JAG from {issuer}" in str(r.get("detail"))
    ]


async def test_a_tool_call_reaches_b_as_the_same_user(chain: Chain, http: httpx2.AsyncClient) -> None:
    a, b = chain.a.gateway, chain.b
    token = await a_token(chain, "alice")
    first = await list_tools(http, a.url("b"), token)
    assert first.status_code == 200, first.text
    assert [t["name"] for t in first.json()["result"]["tools"]] == ["echo"]
    assert (await list_tools(http, a.url("b"), token)).status_code == 200

    issued = redemptions(b, a.base)
    assert len(issued) == 1, "A must cache B's token, not redeem an ID-JAG per call"
    assert issued[0]["client_id"] == "gateway-a"
    b_user = str(issued[0]["subject"])
    forwarded = [
        r for r in audit_records(b) if r.get("event") == "call.forwarded" and r.get("subject") == b_user
    ]
    assert forwarded, "B's audit shows the call as the user A signed in"
    a_calls = [r for r in audit_records(a) if r.get("event") == "call.forwarded" and r.get("endpoint") == "b"]
    assert a_calls
    assert a_calls[-1]["client_id"] == "agent"

    # never token passthrough: B's upstream sees no credential, B's log no token, A's log none of B's
    assert all("authorization" not in r.headers for r in chain.behind_b.requests)
    assert token not in b.log()
    assert token not in a.log()


async def test_a_user_the_bridge_refuses_gets_a_json_rpc_error(
    chain: Chain, http: httpx2.AsyncClient
) -> None:
    """bob has no Sales.Write role, so he is not in group sales: A's bridge mints nothing for him,
    and his call gets -32015 naming the upstream, without anything reaching B."""
    a, b = chain.a.gateway, chain.b
    before = len(redemptions(b, a.base))
    token = await a_token(chain, "bob")
    response = await list_tools(http, a.url("b"), token)
    assert response.status_code == 200, response.text
    error = response.json()["error"]
    assert error["code"] == -32015, error
    assert "upstream 'b'" in error["message"]
    assert len(redemptions(b, a.base)) == before


async def test_the_enterprise_idp_mints_the_id_jag(chain: Chain, http: httpx2.AsyncClient) -> None:
    """``id_jag_issuer: entra``: the ID token of alice's sign-in at A goes to the IdP in an RFC 8693
    exchange; the IdP's ID-JAG (audience B, resource B's /mcp/tasks, client_id gateway-a) is
    redeemed at B; B sees the IdP as the issuer."""
    a, b, idp = chain.a.gateway, chain.b, chain.a.idp
    token = await a_token(chain, "alice", "b-idp")
    response = await list_tools(http, a.url("b-idp"), token)
    assert response.status_code == 200, response.text
    assert [t["name"] for t in response.json()["result"]["tools"]] == ["echo"]
    exchanges = idp.id_jag_requests()
    assert len(exchanges) == 1, exchanges
    sent = exchanges[0]
    assert sent["audience"] == b.base
    assert sent["resource"] == b.url("tasks")
    assert sent["subject_token_type"] == "urn:ietf:params:oauth:token-type:id_token"
    assert sent["client_id"] == "bastion-a"  # Bastion's own application at the IdP
    issued = redemptions(b, idp.issuer)
    assert len(issued) == 1
    assert issued[0]["client_id"] == "gateway-a"


async def test_legacy_sessions_and_the_aggregate_use_the_users_upstream_token(
    chain: Chain, http: httpx2.AsyncClient
) -> None:
    """A 2025-11-25 session on /mcp/b (passthrough to B, the session's requests each carry the
    user's B token) and the aggregate /mcp (B's tools among the others) work the same way."""
    a = chain.a.gateway
    token = await a_token(chain, "alice")
    opened = await post_initialize(http, a.url("b"), token)
    assert opened.status_code == 200, opened.text
    session = opened.headers["mcp-session-id"]
    legacy = {"accept": MCP_ACCEPT, "authorization": f"Bearer {token}", "mcp-session-id": session}
    legacy["mcp-protocol-version"] = "2025-11-25"
    listed = await http.post(
        a.url("b"), json={"jsonrpc": "2.0", "id": 2, "method": "tools/list"}, headers=legacy
    )
    assert listed.status_code == 200, listed.text
    assert "echo" in listed.text

    everything = await a_token(chain, "alice", endpoint="")
    merged = await list_tools(http, a.url(), everything)
    assert merged.status_code == 200, merged.text
    names = {t["name"] for t in merged.json()["result"]["tools"]}
    assert {"b__echo", "b-idp__echo"} <= names
