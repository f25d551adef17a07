"""Two replicas of the authorization server on one real PostgreSQL, as behind a load balancer
(same public URL, same master key): a code issued by one is redeemed at the other exactly once,
tokens from either work at both, refresh-token reuse is detected across replicas, a revocation
made at one reaches the other within its sync interval, and the sign-in limit holds across them."""

from __future__ import annotations

import asyncio
import secrets
import time
from pathlib import Path

import httpx2
import pytest

from tests.support.gateway import Gateway, run_gateway
from tests.support.oauth import authorize_url, exchange_code, pkce, query_of, sign_in_and_consent
from tests.support.postgres import PgServer
from tests.support.procs import free_port
from tests.support.wire import ACCEPT, init_body

PASSWORD = "replica-test-password"


async def _register(http: httpx2.AsyncClient, base: str) -> str:
    response = await http.post(
        f"{base}/register",
        json={
            "redirect_uris": ["http://127.0.0.1:53682/callback"],
            "application_type": "native",
            "token_endpoint_auth_method": "none",
            "grant_types": ["authorization_code", "refresh_token"],
            "client_name": "replica test",
        },
    )
    assert response.status_code == 201, response.text
    return str(response.json()["client_id"])


async def _initialize(http: httpx2.AsyncClient, gateway: Gateway, token: str) -> int:
    response = await http.post(
        gateway.url("ev"),
        json=init_body(),
        headers={"accept": ACCEPT, "authorization": f"Bearer {token}"},
    )
    return response.status_code


async def _refresh(http: httpx2.AsyncClient, base: str, client_id: str, token: str) -> httpx2.Response:
    return await http.post(
        f"{base}/token", data={"grant_type": "refresh_token", "refresh_token": token, "client_id": client_id}
    )


@pytest.mark.postgres
async def test_replicas_share_codes_tokens_revocations_and_limits(
    tmp_path: Path, pg_server: PgServer, everything_url: str
) -> None:
    database = pg_server.url(await pg_server.create_database())
    port = free_port()
    public = f"http://127.0.0.1:{port}"
    auth = {"enabled": True, "master_key": secrets.token_hex(32), "refresh_grace": 1}
    common = {"public_url": public, "auth": auth}
    upstreams = [{"name": "ev", "http": {"url": everything_url}}]
    with (
        run_gateway(
            tmp_path, upstreams, storage=database, extra=common, users={"alice": PASSWORD}, port=port
        ) as a,
        run_gateway(tmp_path, upstreams, storage=database, extra=common) as b,
    ):
        resource = f"{public}/mcp/ev"
        async with httpx2.AsyncClient(follow_redirects=False, timeout=30) as http:
            client_id = await _register(http, a.base)
            proof = pkce()
            url = authorize_url(a.base, client_id=client_id, resource=resource, challenge=proof.challenge)
            final = await sign_in_and_consent(http, url, username="alice", password=PASSWORD)
            code = query_of(final.headers["location"])["code"]
            assert query_of(final.headers["location"])["iss"] == public

            # the code issued by a is redeemed at b, once
            redeemed = await exchange_code(
                http, b.base, code=code, verifier=proof.verifier, client_id=client_id, resource=resource
            )
            assert redeemed.status_code == 200, redeemed.text
            tokens = redeemed.json()
            again = await exchange_code(
                http, a.base, code=code, verifier=proof.verifier, client_id=client_id, resource=resource
            )
            assert again.json()["error"] == "invalid_grant"
            # ... and that replay revoked what the first redemption issued, on both replicas
            assert await _initialize(http, a, tokens["access_token"]) == 401
            deadline = time.monotonic() + 15
            while await _initialize(http, b, tokens["access_token"]) != 401:
                assert time.monotonic() < deadline, "replica b never learnt of the revocation"
                await asyncio.sleep(0.5)
            assert (await _refresh(http, b.base, client_id, tokens["refresh_token"])).status_code == 400

            # a fresh grant: tokens work on both replicas; refresh reuse is caught across them
            proof = pkce()
            url = authorize_url(a.base, client_id=client_id, resource=resource, challenge=proof.challenge)
            final = await sign_in_and_consent(http, url, username="alice", password=PASSWORD)
            code = query_of(final.headers["location"])["code"]
            tokens = (
                await exchange_code(
                    http, a.base, code=code, verifier=proof.verifier, client_id=client_id, resource=resource
                )
            ).json()
            assert await _initialize(http, a, tokens["access_token"]) == 200
            assert await _initialize(http, b, tokens["access_token"]) == 200
            rotated = await _refresh(http, b.base, client_id, tokens["refresh_token"])
            assert rotated.status_code == 200, rotated.text
            await asyncio.sleep(1.5)  # past auth.refresh_grace
            reused = await _refresh(http, a.base, client_id, tokens["refresh_token"])
            assert reused.json()["error"] == "invalid_grant"
            newest = await _refresh(http, b.base, client_id, rotated.json()["refresh_token"])
            assert newest.json()["error"] == "invalid_grant"  # the whole family went with it

        # the sign-in limit counts attempts on every replica together (5 per user by default)
        statuses = []
        for attempt in range(7):
            replica = (a, b)[attempt % 2]
            async with httpx2.AsyncClient(follow_redirects=False, timeout=30) as browser:
                page = await browser.get(f"{replica.base}/login")
                csrf = page.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
                response = await browser.post(
                    f"{replica.base}/login",
                    data={"csrf": csrf, "request": "", "username": "alice", "password": "wrong-password"},
                )
                statuses.append(response.status_code)
        assert statuses == [401] * 5 + [429] * 2
