"""Two replicas on one real PostgreSQL (same public URL, same master key): an ID-JAG redeemed
at one replica is refused at the other, because the jti replay store is shared."""

from __future__ import annotations

import hashlib
import secrets
from pathlib import Path

import pytest

from tests.support.ema import id_jag, new_key, redeem, trusted_issuer
from tests.support.gateway import run_gateway
from tests.support.postgres import PgServer
from tests.support.procs import free_port
from tests.support.recording import recording_upstream

IDP_KEY = new_key()
SECRET = secrets.token_urlsafe(32)


@pytest.mark.postgres
async def test_an_id_jag_is_redeemed_once_across_replicas(tmp_path: Path, pg_server: PgServer) -> None:
    database = pg_server.url(await pg_server.create_database())
    port = free_port()
    public = f"http://127.0.0.1:{port}"
    common = {
        "public_url": public,
        "auth": {"enabled": True, "master_key": secrets.token_hex(32), "scopes": ["mcp"]},
        "ema": {"trusted_issuers": [trusted_issuer(IDP_KEY)]},
        "clients": [
            {
                "client_id": "agent",
                "secret_sha256": hashlib.sha256(SECRET.encode()).hexdigest(),
                "grant_types": ["client_credentials"],
            }
        ],
    }
    with recording_upstream() as upstream:
        upstreams = [{"name": "a", "http": {"url": upstream.url}}]
        with (
            run_gateway(tmp_path, upstreams, storage=database, extra=common, port=port) as a,
            run_gateway(tmp_path, upstreams, storage=database, extra=common) as b,
        ):
            assertion = id_jag(IDP_KEY, aud=public, resource=f"{public}/mcp/a")
            first = await redeem(a.base, assertion, client="agent", secret=SECRET)
            assert first.status_code == 200, first.text
            again = await redeem(b.base, assertion, client="agent", secret=SECRET)
            assert again.status_code == 400, again.text
            assert again.json()["error"] == "invalid_grant", again.text
            # and a fresh one is redeemed at b, so b's refusal is the replay, not b's setup
            fresh = await redeem(
                b.base, id_jag(IDP_KEY, aud=public, resource=f"{public}/mcp/a"), client="agent", secret=SECRET
            )
            assert fresh.status_code == 200, fresh.text
