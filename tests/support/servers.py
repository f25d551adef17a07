"""Upstream servers the tests run for real: the conformance fixture, the hostile upstream."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path

from tests.support.procs import REPO_ROOT, free_port, http_process

FIXTURES = REPO_ROOT / "tests" / "fixtures"


@contextlib.contextmanager
def run_fixture_server(script: str, tmp: Path, *args: str, path: str = "/mcp") -> Iterator[str]:
    """Start ``tests/fixtures/<script>`` on a free port; yield its base URL + ``path``."""
    port = free_port()
    log_path = tmp / f"{Path(script).stem}-{port}.log"
    with http_process(
        [sys.executable, str(FIXTURES / script), "--port", str(port), *args],
        f"http://127.0.0.1:{port}/healthz",
        log_path,
    ):
        yield f"http://127.0.0.1:{port}{path}"
