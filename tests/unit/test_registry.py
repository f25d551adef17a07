"""Per-session stdio processes: capped by max_processes, stopped when idle, reopened with the
client's own initialize parameters. Real processes (the bundled demo server)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from bastion.config.model import Upstream
from bastion.core.errors import UpstreamUnavailable
from bastion.core.records import NO_CREDENTIAL
from bastion.upstream.channel import LegacyChannel
from bastion.upstream.registry import UpstreamEntry
from bastion.upstream.routes import CallRoute

INIT = {
    "protocolVersion": "2025-11-25",
    "capabilities": {"elicitation": {}},
    "clientInfo": {"name": "unit", "version": "1"},
}


def demo_entry(tmp_path: Path, **stdio: object) -> UpstreamEntry:
    return UpstreamEntry(
        Upstream.model_validate(
            {
                "name": "demo",
                "stdio": {
                    "command": sys.executable,
                    "args": ["-m", "bastion.demo.server", "--notes-file", str(tmp_path / "notes.json")],
                    **stdio,
                },
            }
        )
    )


async def test_each_session_gets_its_own_initialized_process(tmp_path: Path) -> None:
    entry = demo_entry(tmp_path)
    try:
        first = await entry.session_link("session-a", INIT, NO_CREDENTIAL)
        second = await entry.session_link("session-b", INIT, NO_CREDENTIAL)
        assert isinstance(first, LegacyChannel)
        assert isinstance(second, LegacyChannel)
        assert first is not second
        assert first.init_params["clientInfo"] == {"name": "unit", "version": "1"}
        assert await entry.session_link("session-a", INIT, NO_CREDENTIAL) is first
        listed = await first.request({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, CallRoute(None))
        assert any(tool["name"] == "add_note" for tool in listed["result"]["tools"])
    finally:
        await entry.close()


async def test_max_processes_is_enforced(tmp_path: Path) -> None:
    entry = demo_entry(tmp_path, max_processes=1)
    try:
        await entry.session_link("session-a", INIT, NO_CREDENTIAL)
        with pytest.raises(UpstreamUnavailable, match="limit of 1 per-session processes"):
            await entry.session_link("session-b", INIT, NO_CREDENTIAL)
        await entry.close_session("session-a")
        await entry.session_link("session-b", INIT, NO_CREDENTIAL)  # a slot was freed
    finally:
        await entry.close()


async def test_idle_processes_are_stopped_and_reopened_on_use(tmp_path: Path) -> None:
    entry = demo_entry(tmp_path, idle_timeout=0.2)
    try:
        first = await entry.session_link("session-a", INIT, NO_CREDENTIAL)
        assert await entry.reap_idle() == 0
        await asyncio.sleep(0.4)
        assert await entry.reap_idle() == 1
        assert first.closed
        again = await entry.session_link("session-a", INIT, NO_CREDENTIAL)
        assert again is not first
        pong = await again.request({"jsonrpc": "2.0", "id": 2, "method": "ping"}, CallRoute(None))
        assert pong == {"jsonrpc": "2.0", "id": 2, "result": {}}
    finally:
        await entry.close()
