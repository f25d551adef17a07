"""Every MCP request leaves one audit record (and no secret); responses stream as they come."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

import aiohttp
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client

from tests.support.gateway import Gateway, venv_env


def audit_records(gateway: Gateway, n: int = 500) -> list[dict[str, Any]]:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "bastion",
            "audit",
            "tail",
            "-n",
            str(n),
            "--json",
            "-c",
            str(gateway.config_path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=venv_env(),
        check=True,
    )
    return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]


def field(record: dict[str, Any], name: str) -> Any:
    return record.get(name, record.get("record", {}).get(name))


async def test_each_request_is_audited_without_secrets(gateway: Gateway) -> None:
    secret = "sk-live-" + "9" * 24
    async with Client(streamable_http_client(gateway.url("time")), mode="legacy") as c:
        await c.call_tool(
            "convert_time", {"source_timezone": "UTC", "time": "12:00", "target_timezone": secret}
        )
    async with aiohttp.ClientSession() as s:
        await s.post(
            gateway.url("time"),
            data=b"{not json",
            headers={"content-type": "application/json", "authorization": f"Bearer {secret}"},
        )
    deadline = time.monotonic() + 10  # records are written in batches (audit.flush_interval)
    while True:
        records = audit_records(gateway)
        calls = [
            r for r in records if field(r, "event") == "call.forwarded" and field(r, "name") == "convert_time"
        ]
        rejected = [
            r for r in records if field(r, "event") == "call.rejected" and field(r, "error_code") == -32700
        ]
        if (calls and rejected) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert calls, records[-5:]
    call = calls[-1]
    assert field(call, "endpoint") == "time"
    assert field(call, "method") == "tools/call"
    assert field(call, "era") == "legacy"
    assert field(call, "status") == 200
    assert field(call, "latency_ms") > 0
    assert any(field(r, "event") == "session.created" and field(r, "endpoint") == "time" for r in records)
    assert rejected
    assert secret not in json.dumps(records)  # argument values are never recorded
    # Bastion's own log lines never carry the caller's token (the upstream's stderr is its own business)
    assert not [line for line in gateway.log().splitlines() if secret in line and "stderr:" not in line]
    async with aiohttp.ClientSession() as s:
        await s.post(
            gateway.url("ev"),
            data=b"[]",
            headers={"content-type": "application/json", "authorization": f"Bearer {secret}-2"},
        )
    assert f"{secret}-2" not in gateway.log()
    verify = subprocess.run(
        [sys.executable, "-m", "bastion", "audit", "verify", "-c", str(gateway.config_path)],
        capture_output=True,
        text=True,
        timeout=60,
        env=venv_env(),
        check=False,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr


async def test_progress_streams_as_it_happens(gateway: Gateway) -> None:
    """count_down reports once a second: the client must see each report when it is sent,
    not all of them at the end (nothing is buffered on the way)."""
    seen: list[float] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append(time.monotonic())

    for endpoint in ("demo", None):
        seen.clear()
        tool = "count_down" if endpoint else "demo__count_down"
        async with Client(streamable_http_client(gateway.url(endpoint)), mode="legacy") as c:
            started = time.monotonic()
            await c.call_tool(tool, {"seconds": 3}, progress_callback=on_progress)
            finished = time.monotonic()
        assert len(seen) >= 3
        assert seen[0] - started < finished - started - 1.5  # the first report came well before the end
        assert seen[-1] - seen[0] > 1.5
