"""Two Bastion replicas on one real PostgreSQL share the vault: alice connects her CRM account
through replica a, her token works through replica b, and when it has expired, 50 concurrent
calls spread over both replicas make exactly one refresh at the provider (the refresh lease is a
row in the database, so the rotated refresh token is never presented twice)."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from pathlib import Path

import asyncpg
import httpx2
import pytest
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client

from tests.support.connect import connect_account
from tests.support.gateway import Gateway, run_gateway
from tests.support.idp import SAAS_CLIENT_ID, SAAS_CLIENT_SECRET, run_saas_provider
from tests.support.oauth import REDIRECT_URI, user_token
from tests.support.postgres import PgServer
from tests.support.procs import free_port
from tests.support.saas import saas_upstream_for

PASSWORD = "replica-vault-password"
TOKEN_TTL_S = 120  # outlives the burst of calls even on a loaded machine (one refresh expected)


async def expire_tokens(database: str) -> None:
    conn = await asyncpg.connect(database)
    try:
        await conn.execute("UPDATE vault_records SET expires_at = $1", time.time() - 1)
    finally:
        await conn.close()


async def whoami(gateway: Gateway, token: str) -> str:
    async with (
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=60) as http,
        Client(streamable_http_client(gateway.url("crm"), http_client=http), mode="legacy") as client,
    ):
        result = await client.call_tool("whoami", {})
    text = "".join(getattr(c, "text", "") for c in result.content)
    assert not result.is_error, text
    return str(json.loads(text)["sub"])


@pytest.mark.postgres
@pytest.mark.timeout(180)
async def test_replicas_refresh_a_users_token_once(tmp_path: Path, pg_server: PgServer) -> None:
    database = pg_server.url(await pg_server.create_database())
    port = free_port()
    public = f"http://127.0.0.1:{port}"
    with (
        run_saas_provider(
            tmp_path, redirect_uris=[f"{public}/connect/callback"], access_token_ttl=TOKEN_TTL_S
        ) as saas,
        saas_upstream_for(saas, tmp_path) as upstream,
    ):
        connection = {
            "name": "crm",
            "type": "oauth",
            "label": "Acme CRM",
            "client_id": SAAS_CLIENT_ID,
            "client_secret": SAAS_CLIENT_SECRET,
            "issuer": saas.issuer,
            "scopes": ["crm:read", "crm:write", "offline_access"],
            "refresh_margin": 0,
        }
        common = {
            "public_url": public,
            "auth": {"enabled": True, "master_key": secrets.token_hex(32), "scopes": ["mcp"]},
            "clients": [{"client_id": "claude", "redirect_uris": [REDIRECT_URI], "trusted": True}],
            "connections": [connection],
        }
        upstreams = [
            {
                "name": "crm",
                "http": {"url": upstream.url},
                "auth": {"type": "user_oauth", "connection": "crm"},
            }
        ]
        with (
            run_gateway(
                tmp_path, upstreams, storage=database, extra=common, users={"alice": PASSWORD}, port=port
            ) as a,
            run_gateway(tmp_path, upstreams, storage=database, extra=common) as b,
        ):
            token = str(
                (
                    await user_token(
                        a.base,
                        client_id="claude",
                        resource=f"{public}/mcp/crm",
                        username="alice",
                        password=PASSWORD,
                    )
                )["access_token"]
            )
            connected = await connect_account(a.base, "crm", username="alice", password=PASSWORD)
            assert connected.status_code == 200, connected.text[:800]
            assert await whoami(b, token) == "crm-user-alice"  # connected at a, used through b

            await expire_tokens(database)  # as if the access token's lifetime had passed
            saas.reset_grants()
            subs = await asyncio.gather(*(whoami(a if i % 2 else b, token) for i in range(50)))
            assert set(subs) == {"crm-user-alice"}
            counts = saas.grant_counts()
            assert counts.requests["refresh_token"] == 1, (counts, a.tail(), b.tail())
            assert counts.succeeded["refresh_token"] == 1
