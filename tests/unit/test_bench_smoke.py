"""Keeps the benchmark harness from rotting: ~1 s of real load against the echo upstream, no gateway.

The benchmark itself never runs under pytest (``make bench`` / ``python -m bench``).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:  # `bench/` is a top-level folder of the repo, not an installed package
    sys.path.insert(0, str(REPO_ROOT))

from bench import procs  # noqa: E402
from bench.loadgen import Era, run_cell  # noqa: E402
from bench.report import LATEST_BEGIN, RunResults, Target, render_run, splice  # noqa: E402


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, procs.Service]]:
    port = procs.free_port()
    service = procs.Service(
        "upstream",
        [sys.executable, "-m", "bench.upstream", "--port", str(port)],
        tmp_path_factory.mktemp("bench"),
        pin=False,
        env={"PYTHONPATH": str(REPO_ROOT)},
    )
    try:
        service.wait_http(f"http://127.0.0.1:{port}/", timeout=30)
        yield f"http://127.0.0.1:{port}/mcp", service
    finally:
        service.stop()


@pytest.mark.parametrize("era", ["legacy", "modern"])
async def test_loadgen_against_the_echo_upstream(upstream: tuple[str, procs.Service], era: Era) -> None:
    url, service = upstream
    cell = await run_cell(
        url,
        era=era,
        concurrency=4,
        duration=0.5,
        warmup=0.2,
        request_timeout=5,
        cpu_probe=lambda: {"upstream": service.cpu_seconds()},
    )
    assert cell.first_error is None
    assert cell.errors == 0
    assert cell.timeouts == 0
    assert cell.ok >= 1  # a smoke test: it runs (rates are for make bench, on a quiet machine)
    assert 0.4 < cell.duration < 6
    assert cell.rps > 0
    assert 0 < cell.p50_ms <= cell.p99_ms < 5_000
    assert 0 < cell.cpu_us_per_call("upstream") < 1_000_000

    run = RunResults(targets=[Target("direct", "direct")], eras=[era], concurrencies=[4])
    run.cells[era] = {"direct": {4: cell}}
    rendered = render_run(run, {"date": "today", "machine": "test"}, ["python -m bench --quick"])
    assert f"| direct | — | {cell.rps:,.0f} | 1.00\u00d7 |" in rendered


async def test_loadgen_refuses_non_loopback_targets() -> None:
    with pytest.raises(ValueError, match="loopback"):
        await run_cell("http://example.com/mcp", era="modern", concurrency=1, duration=1, warmup=0)


def test_splice_keeps_earlier_runs(tmp_path: Path) -> None:
    doc = tmp_path / "benchmarks.md"
    doc.write_text("hand-written notes\n", encoding="utf-8")
    splice(doc, "## Run of day one\n")
    splice(doc, "## Run of day two\n")
    text = doc.read_text(encoding="utf-8")
    latest = text.split(LATEST_BEGIN, 1)[1]
    assert latest.index("day two") < latest.index("Earlier runs") < latest.index("day one")
    assert text.count("day one") == 1
    assert "hand-written notes" in text
