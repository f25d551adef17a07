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
    """Start ``tests/fixtures/<script>`` on a free port; yield its base URL + ``path``.

    Retried on another port when the first does not come up: a free port can be taken
    between the probe and the child's bind.
    """
    last_error: RuntimeError | None = None
    for _attempt in range(3):
        port = free_port()
        log_path = tmp / f"{Path(script).stem}-{port}.log"
        try:
            server = http_process(
                [sys.executable, str(FIXTURES / script), "--port", str(port), *args],
                f"http://127.0.0.1:{port}/healthz",
                log_path,
            )
            server.__enter__()
        except RuntimeError as exc:
            last_error = exc
            continue
        try:
            yield f"http://127.0.0.1:{port}{path}"
        finally:
            server.__exit__(None, None, None)
        return
    raise RuntimeError(f"could not start {script}: {last_error}")
