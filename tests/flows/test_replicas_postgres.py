"""Two Bastion replicas on one real PostgreSQL: a legacy session opened on one replica is
served by the other, and both write one audit chain that verifies."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from tests.support.gateway import run_gateway, venv_env
from tests.support.postgres import PgServer
from tests.support.wire import ACCEPT, init_body


@pytest.mark.postgres
async def test_session_resolves_on_any_replica(
    tmp_path: Path, pg_server: PgServer, everything_url: str
) -> None:
    database = pg_server.url(await pg_server.create_database())
    upstreams = [{"name": "ev", "http": {"url": everything_url}}]
    with (
        run_gateway(tmp_path, upstreams, storage=database) as a,
        run_gateway(tmp_path, upstreams, storage=database) as b,
    ):
        async with aiohttp.ClientSession() as s:
            async with s.post(a.url("ev"), json=init_body(), headers={"accept": ACCEPT}) as r:
                assert r.status == 200
                await r.read()
                session = {
                    "mcp-session-id": r.headers["mcp-session-id"],
                    "mcp-protocol-version": "2025-11-25",
                }
            listing = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}
            async with s.post(b.url("ev"), json=listing, headers={"accept": ACCEPT, **session}) as r:
                assert r.status == 200  # replica b has never seen this session in memory
                assert b"test_simple_text" in await r.read()
        time.sleep(0.6)  # both recorders flush (audit.flush_interval)
        verify = subprocess.run(
            [sys.executable, "-m", "bastion", "audit", "verify", "-c", str(a.config_path)],
            capture_output=True,
            text=True,
            timeout=60,
            env=venv_env(),
            check=False,
        )
        assert verify.returncode == 0, verify.stdout + verify.stderr
