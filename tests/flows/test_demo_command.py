"""`bastion demo` (what `make run` starts): no configuration, no network, prints how to
connect and whom to sign in as; the Python SDK client signs in (OAuth, its own registration,
Bastion's login and consent pages) and calls a tool."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import httpx2
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client

from tests.support.gateway import venv_env
from tests.support.procs import free_port, http_process
from tests.support.sdk_oauth import HeadlessUser, sdk_auth


async def test_demo_serves_the_bundled_upstream(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "demo.log"
    state = str(tmp_path / "state")
    with http_process(
        [sys.executable, "-m", "bastion", "demo", "--port", str(port), "--state-dir", state],
        f"http://127.0.0.1:{port}/healthz",
        log,
        env=venv_env(),
        cwd=tmp_path,
    ):
        printed = log.read_text()
        url = re.search(r"http://127\.0\.0\.1:\d+/mcp/demo", printed)
        assert url is not None, printed
        assert "mcp-remote" in printed
        assert "Inspector" in printed
        password = re.search(r"Sign in as:\s+demo / (\S+)", printed)
        assert password is not None, printed
        user = HeadlessUser("demo", password.group(1))
        http = httpx2.AsyncClient(auth=sdk_auth(url.group(0), user), timeout=30)
        async with Client(streamable_http_client(url.group(0), http_client=http)) as client:
            result = await client.call_tool("add_note", {"title": "first", "body": "hello from the tour"})
            assert not result.is_error
            listed = await client.call_tool("list_notes", {})
            assert "first" in listed.content[0].text  # type: ignore[union-attr]
        assert user.sign_ins == 1
    assert (tmp_path / "state" / "bastion.db").is_file()
    assert "storage: sqlite:///" in (tmp_path / "state" / "demo.yaml").read_text()
    assert "hello from the tour" in (tmp_path / "state" / "demo-notes.json").read_text()
