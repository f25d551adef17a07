"""Render one benchmark run as Markdown and splice it into docs/benchmarks.md between markers."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.loadgen import CellResult

LATEST_BEGIN = "<!-- bench:latest:begin -->"
LATEST_END = "<!-- bench:latest:end -->"
HISTORY_BEGIN = "<!-- bench:history:begin -->"
HISTORY_END = "<!-- bench:history:end -->"
X = "\u00d7"  # the multiplication sign of "0.45x"

DOC_HEADER = f"""# Benchmarks

`make bench` (= `python -m bench`) measures, in one run and on one machine, what it costs to put a
gateway in front of an MCP server. Every cell is `tools/call echo` as raw JSON-RPC over keep-alive
HTTP/1.1 from closed-loop workers at concurrency 1, 16 and 64, in both protocol eras (legacy
2025-11-25 with `initialize`; modern 2026-07-28 with the per-request `_meta` envelope and the
`MCP-Protocol-Version` / `Mcp-Method` / `Mcp-Name` headers).

- **direct**: the echo upstream alone (`bench/upstream.py`: official `mcp` 2.3.0 low-level
  server, one `echo` tool, stateless, JSON responses, uvicorn + uvloop + httptools);
- **floor**: `bench/floor.py`, a minimal hand-written pure-ASGI forwarder with one pyjwt HS256
  check per request and one pooled aiohttp session: the Python floor;
- **Bastion**: `bastion serve` with one HTTP upstream, authentication on (every call carries a
  Bastion ES256 access token from its own token endpoint, verified with audience, expiry and
  revocation checks), audit on, SQLite storage;
- **FastMCP**: FastMCP 4.1.6 `create_proxy(url)` + its `JWTVerifier` (HS256), what a Python user
  would pick instead; and **FastMCP, reused session**: the same proxy built on one connected
  upstream `Client` (FastMCP's fastest mode).

The upstream and the gateway are pinned to core 0 and the load generator to core 1, so the gateway
competes with the upstream for one core. "gateway CPU µs per call" is the growth of the gateway
process tree's utime + stime (`/proc/<pid>/stat`) over the measured window divided by the calls;
for direct it is the upstream's. Shared machines are noisy: compare the ratios and CPU per call
within one run, not absolute numbers across runs. FastMCP runs from its own venv
(`bench/.venv-fastmcp`, made on demand from `bench/fastmcp-reference.lock`), never from Bastion's.

    make bench                                   # full run (~10 min), updates this file
    python -m bench --quick                      # ~2 min, prints Markdown, writes nothing
    python -m bench --targets direct,bastion --era modern --duration 5 --out docs/benchmarks.md

Bastion's targets: ≤ 500 µs gateway CPU per call, ≤ +1.5 ms p50 at c=1, ≥ 0.45{X} direct throughput
at c=16 (sharing a core with the upstream), ≥ 5{X} FastMCP's best mode, no timeouts at c=64.

"""


@dataclass(frozen=True)
class Target:
    key: str
    label: str


@dataclass
class RunResults:
    """Every cell of one run: results[era][target key][concurrency]."""

    targets: list[Target]
    eras: list[str]
    concurrencies: list[int]
    cells: dict[str, dict[str, dict[int, CellResult]]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    def cell(self, era: str, key: str, concurrency: int) -> CellResult | None:
        return self.cells.get(era, {}).get(key, {}).get(concurrency)


def _num(value: float, digits: int = 0) -> str:
    if value is None or math.isnan(value):
        return "—"
    return f"{value:,.{digits}f}"


def _gateway_cpu(cell: CellResult | None, key: str) -> float:
    if cell is None:
        return float("nan")
    return cell.cpu_us_per_call("upstream" if key == "direct" else "gateway")


def summary_table(run: RunResults, era: str) -> list[str]:
    c_lo, c_mid = run.concurrencies[0], run.concurrencies[len(run.concurrencies) // 2]
    rps_header = " / ".join(str(c) for c in run.concurrencies)
    lines = [
        f"| target | +p50 ms (c={c_lo}) | req/s c={rps_header} | vs direct (c={c_mid}) "
        f"| p99 ms (c={c_mid}) | gateway CPU µs per call (c={c_mid}) | timeouts / errors |",
        "|---|---|---|---|---|---|---|",
    ]
    direct_lo, direct_mid = run.cell(era, "direct", c_lo), run.cell(era, "direct", c_mid)
    for target in run.targets:
        if target.key in run.skipped:
            lines.append(f"| {target.label} | not available: {run.skipped[target.key]} | | | | | |")
            continue
        cells = [run.cell(era, target.key, c) for c in run.concurrencies]
        if not any(c and c.ok for c in cells):
            first = next((c.first_error for c in cells if c and c.first_error), "no response")
            lines.append(f"| {target.label} | every call failed: `{_clip(first)}` | | | | | |")
            continue
        lo, mid = run.cell(era, target.key, c_lo), run.cell(era, target.key, c_mid)
        if target.key == "direct" or not lo or not lo.ok or not direct_lo:
            plus = "—"
        else:
            plus = f"{lo.p50_ms - direct_lo.p50_ms:+.2f}"
        ratio = f"{mid.rps / direct_mid.rps:.2f}{X}" if mid and direct_mid and direct_mid.rps else "—"
        cpu = _num(_gateway_cpu(mid, target.key))
        if target.key == "direct":
            cpu = f"(upstream {cpu})"
        rps = " / ".join(_num(c.rps) if c else "—" for c in cells)
        bad = f"{sum(c.timeouts for c in cells if c)} / {sum(c.errors for c in cells if c)}"
        p99 = _num(mid.p99_ms, 1) if mid else "—"
        lines.append(f"| {target.label} | {plus} | {rps} | {ratio} | {p99} | {cpu} | {bad} |")
    return lines


def raw_table(run: RunResults) -> list[str]:
    lines = [
        "| era | target | c | calls | req/s | p50 ms | p99 ms | gateway CPU µs/call | upstream CPU µs/call "
        "| timeouts | errors |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for era in run.eras:
        for target in run.targets:
            for c in run.concurrencies:
                cell = run.cell(era, target.key, c)
                if cell is None:
                    continue
                gateway = "—" if target.key == "direct" else _num(cell.cpu_us_per_call("gateway"))
                lines.append(
                    f"| {era} | {target.key} | {c} | {cell.calls:,} | {_num(cell.rps)} "
                    f"| {_num(cell.p50_ms, 2)} "
                    f"| {_num(cell.p99_ms, 2)} | {gateway} | {_num(cell.cpu_us_per_call('upstream'))} "
                    f"| {cell.timeouts} | {cell.errors} |"
                )
    return lines


def _verdict(ok: bool | None, text: str) -> str:
    mark = "not measured" if ok is None else ("met" if ok else "NOT met")
    return f"- {text}: **{mark}**"


def bastion_targets(run: RunResults, era: str) -> list[str]:
    if "bastion" in run.skipped or not run.cells.get(era, {}).get("bastion"):
        return [f"- Bastion not measured in this run ({run.skipped.get('bastion', 'not selected')})."]
    cells = run.cells[era]["bastion"].values()
    if not any(cell.ok for cell in cells):
        first = next((cell.first_error for cell in cells if cell.first_error), "no response")
        return [f"- Bastion could not be measured: every call failed (`{_clip(first)}`)."]
    c_lo, c_mid, c_hi = (
        run.concurrencies[0],
        run.concurrencies[len(run.concurrencies) // 2],
        run.concurrencies[-1],
    )
    lo, mid, hi = (run.cell(era, "bastion", c) for c in (c_lo, c_mid, c_hi))
    d_lo, d_mid = run.cell(era, "direct", c_lo), run.cell(era, "direct", c_mid)
    cpu = _gateway_cpu(mid, "bastion")
    out = [
        _verdict(
            None if math.isnan(cpu) else cpu <= 500,
            f"gateway CPU ≤ 500 µs per call (c={c_mid}): {cpu:.0f} µs",
        )
    ]
    if lo and lo.ok and d_lo:
        added = lo.p50_ms - d_lo.p50_ms
        out.append(_verdict(added <= 1.5, f"p50 ≤ +1.5 ms at c={c_lo}: {added:+.2f} ms"))
    if mid and mid.ok and d_mid and d_mid.rps:
        ratio = mid.rps / d_mid.rps
        out.append(_verdict(ratio >= 0.45, f"≥ 0.45{X} direct throughput at c={c_mid}: {ratio:.2f}{X}"))
    fastmcp = [run.cell(era, key, c_mid) for key in ("fastmcp", "fastmcp-reuse")]
    best = max((c.rps for c in fastmcp if c is not None), default=0.0)
    if mid and best:
        out.append(
            _verdict(mid.rps >= 5 * best, f"≥ 5{X} FastMCP's best mode at c={c_mid}: {mid.rps / best:.1f}{X}")
        )
    else:
        out.append(_verdict(None, f"≥ 5{X} FastMCP's best mode"))
    if hi:
        clean = hi.timeouts == 0 and hi.errors == 0
        out.append(_verdict(clean, f"no timeouts at c={c_hi}: {hi.timeouts} timeouts, {hi.errors} errors"))
    return out


def render_run(run: RunResults, meta: Mapping[str, str], commands: Sequence[str]) -> str:
    lines = [f"## Run of {meta['date']}", ""]
    lines += [f"- {name}: {value}" for name, value in meta.items() if name != "date"]
    lines += ["", "Commands:", "", "```sh", *commands, "```", ""]
    for era in run.eras:
        lines += [f"### {era} era (`tools/call echo`)", "", *summary_table(run, era), ""]
        lines += ["Bastion against its targets:", "", *bastion_targets(run, era), ""]
    errors = list(_first_errors(run))
    if errors:
        lines += ["Failures:", "", *errors, ""]
    lines += ["<details><summary>Every cell</summary>", "", *raw_table(run), "", "</details>", ""]
    return "\n".join(lines)


def _first_errors(run: RunResults) -> Iterable[str]:
    for era, by_target in run.cells.items():
        for key, by_c in by_target.items():
            failed = [(c, cell) for c, cell in by_c.items() if cell.first_error]
            if failed:
                c, first = failed[0]
                errors = sum(cell.errors + cell.timeouts for _, cell in failed)
                detail = _clip(first.first_error or "")
                yield f"- {era} {key}: {errors} failed calls; first (c={c}): `{detail}`"


def _clip(text: str, limit: int = 160) -> str:
    text = " ".join(text.split()).removesuffix(" ^").replace("`", "'").replace("|", "/")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _between(text: str, begin: str, end: str) -> str | None:
    match = re.search(re.escape(begin) + r"\n?(.*?)" + re.escape(end), text, flags=re.S)
    return match.group(1) if match else None


def splice(path: Path, rendered: str) -> None:
    """Put ``rendered`` between the latest-run markers; the run it replaces moves to the history."""
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    if LATEST_BEGIN not in text or HISTORY_BEGIN not in text:
        kept = text.strip()
        text = (
            f"{DOC_HEADER}{LATEST_BEGIN}\n{LATEST_END}\n\n# Earlier runs\n\n{HISTORY_BEGIN}\n{HISTORY_END}\n"
        )
        if kept:
            text += f"\n{kept}\n"
    previous = (_between(text, LATEST_BEGIN, LATEST_END) or "").strip()
    history = (_between(text, HISTORY_BEGIN, HISTORY_END) or "").strip()
    if previous:
        history = f"{previous}\n\n{history}".strip()
    text = re.sub(
        re.escape(LATEST_BEGIN) + r".*?" + re.escape(LATEST_END),
        lambda _: f"{LATEST_BEGIN}\n{rendered.strip()}\n{LATEST_END}",
        text,
        flags=re.S,
    )
    text = re.sub(
        re.escape(HISTORY_BEGIN) + r".*?" + re.escape(HISTORY_END),
        lambda _: (
            f"{HISTORY_BEGIN}\n{history}\n{HISTORY_END}" if history else f"{HISTORY_BEGIN}\n{HISTORY_END}"
        ),
        text,
        flags=re.S,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
