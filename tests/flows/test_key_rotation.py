"""Signing-key rotation with a running server (`bastion keys rotate`): tokens signed with the
old key keep working until they expire, new tokens carry the new kid, the JWKS publishes both,
and the server notices the rotation without a restart (and audits it)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import httpx2
import jwt

from tests.support.gateway import BASTION, Gateway, run_gateway, venv_env
from tests.support.oauth import user_token
from tests.support.procs import REPO_ROOT

PASSWORD = "rotation-test-password"
INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "t", "version": "1"},
    },
}
HEADERS = {"accept": "application/json, text/event-stream", "content-type": "application/json"}


def _cli(gateway: Gateway, *args: str) -> str:
    done = subprocess.run(
        [*BASTION, *args, "-c", str(gateway.config_path)],
        capture_output=True,
        text=True,
        check=True,
        env=venv_env(),
        cwd=REPO_ROOT,
    )
    return done.stdout


async def _call(gateway: Gateway, token: str) -> int:
    async with httpx2.AsyncClient(timeout=30) as http:
        response = await http.post(
            gateway.url("demo"), json=INIT, headers={**HEADERS, "authorization": f"Bearer {token}"}
        )
        return response.status_code


async def test_rotation_keeps_old_tokens_valid_and_signs_new_ones_with_the_new_key(tmp_path: Path) -> None:
    demo = {"name": "demo", "stdio": {"command": sys.executable, "args": ["-m", "bastion.demo.server"]}}
    with run_gateway(
        tmp_path, [demo], extra={"auth": {"enabled": True}}, users={"alice": PASSWORD}
    ) as gateway:
        resource = gateway.url("demo")
        client_id = await _public_client(gateway)
        old = await user_token(
            gateway.base,
            client_id=client_id,
            resource=resource,
            username="alice",
            password=PASSWORD,
        )
        old_kid = jwt.get_unverified_header(str(old["access_token"]))["kid"]
        assert await _call(gateway, str(old["access_token"])) == 200

        printed = _cli(gateway, "keys", "rotate", "--alg", "EdDSA")
        assert "new active key" in printed
        listing = _cli(gateway, "keys", "list")
        assert old_kid in listing
        assert "retired" in listing

        deadline = time.monotonic() + 20
        async with httpx2.AsyncClient() as http:
            while len((await http.get(f"{gateway.base}/jwks")).json()["keys"]) < 2:
                assert time.monotonic() < deadline, gateway.tail()
                await asyncio.sleep(0.5)  # the server re-reads the ring every few seconds
        new = await user_token(
            gateway.base, client_id=client_id, resource=resource, username="alice", password=PASSWORD
        )
        header = jwt.get_unverified_header(str(new["access_token"]))
        new_kid = header["kid"]
        assert new_kid != old_kid, gateway.tail()
        assert header["alg"] == "EdDSA"
        assert await _call(gateway, str(new["access_token"])) == 200
        assert await _call(gateway, str(old["access_token"])) == 200  # still valid until it expires

        async with httpx2.AsyncClient() as http:
            jwks = (await http.get(f"{gateway.base}/jwks")).json()
        assert {k["kid"] for k in jwks["keys"]} == {old_kid, new_kid}
        assert all("d" not in k for k in jwks["keys"])  # never a private member
        audit = _cli(gateway, "audit", "tail", "-n", "200")
        assert "key.rotated" in audit


async def _public_client(gateway: Gateway) -> str:
    async with httpx2.AsyncClient() as http:
        response = await http.post(
            f"{gateway.base}/register",
            json={
                "redirect_uris": ["http://127.0.0.1:53682/callback"],
                "application_type": "native",
                "token_endpoint_auth_method": "none",
                "grant_types": ["authorization_code", "refresh_token"],
                "client_name": "rotation test",
            },
        )
    assert response.status_code == 201, response.text
    return str(response.json()["client_id"])
