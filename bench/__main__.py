"""``python -m bench``: measure direct / floor / Bastion / FastMCP in one run; see docs/benchmarks.md.

python -m bench [--quick] [--targets direct,floor,bastion,fastmcp] [--era legacy,modern]
                [--duration S] [--out docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import secrets
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import jwt

from bench import procs
from bench.floor import ISSUER
from bench.loadgen import CellResult, Era, run_cell_sync
from bench.report import RunResults, Target, render_run, splice

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
FASTMCP_VENV = BENCH_DIR / ".venv-fastmcp"
FASTMCP_LOCK = BENCH_DIR / "fastmcp-reference.lock"
BASTION = Path(sys.executable).with_name("bastion")
TARGETS = {
    "direct": Target("direct", "direct (upstream alone)"),
    "floor": Target("floor", "floor: minimal ASGI forwarder + pyjwt, aiohttp"),
    "bastion": Target("bastion", "Bastion (auth on: its own ES256 access token, SQLite)"),
    "fastmcp": Target("fastmcp", "FastMCP 4.1.6 `create_proxy(url)` + `JWTVerifier`"),
    "fastmcp-reuse": Target("fastmcp-reuse", "FastMCP proxy, one reused upstream session"),
}
BASTION_CONFIG = """public_url: http://127.0.0.1:{port}
listen: 127.0.0.1:{port}
storage: sqlite:///{tmp}/bastion.db
auth: {{master_key_file: {tmp}/master.key}}
clients:
  - client_id: bench
    secret_sha256: {secret_sha256}
    grant_types: [client_credentials]
upstreams:
  - name: echo
    http: {{url: {upstream}}}
"""


class Unavailable(RuntimeError):
    """A target cannot run on this machine; the run continues without it."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few seconds per cell (< 2 minutes in all)")
    parser.add_argument(
        "--targets", default="direct,floor,bastion,fastmcp", help="fastmcp = fresh + reuse modes"
    )
    parser.add_argument("--era", default="legacy,modern", help="legacy, modern or both")
    parser.add_argument("--concurrency", default="1,16,64")
    parser.add_argument("--duration", type=float, help="measured seconds per cell (default 3, quick 1.5)")
    parser.add_argument("--warmup", type=float, help="discarded seconds per cell (default 1, quick 0.5)")
    parser.add_argument(
        "--out", type=Path, help="Markdown file to update (default docs/benchmarks.md; quick: none)"
    )
    parser.add_argument("--repeat", type=int, help="rounds per cell, median kept (default 3, quick 1)")
    parser.add_argument("--no-pin", action="store_true", help="do not pin to cores (results not comparable)")
    args = parser.parse_args(argv)
    args.duration = args.duration or (1.5 if args.quick else 3.0)
    args.warmup = args.warmup if args.warmup is not None else (0.5 if args.quick else 1.0)
    args.request_timeout = 5.0 if args.quick else 10.0
    args.repeat = max(1, min(args.repeat or (1 if args.quick else 3), 9))
    if args.out is None and not args.quick:
        args.out = REPO / "docs" / "benchmarks.md"
    keys: list[str] = []
    for raw in args.targets.split(","):
        name = raw.strip()
        expanded = ["fastmcp", "fastmcp-reuse"] if name == "fastmcp" else [name]
        for key in expanded:
            if key not in TARGETS:
                parser.error(
                    f"unknown target {name!r}; choose from direct, floor, bastion, fastmcp, fastmcp-reuse"
                )
            keys.append(key)
    args.keys = ["direct", *[k for k in dict.fromkeys(keys) if k != "direct"]]  # direct is the reference
    args.eras = [e.strip() for e in args.era.split(",")]
    if not set(args.eras) <= {"legacy", "modern"}:
        parser.error("--era takes legacy, modern or legacy,modern")
    args.concurrencies = [int(c) for c in args.concurrency.split(",")]
    return args


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def token_for(audience: str, secret: str) -> str:
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "aud": audience,
        "sub": "bench-user",
        "iat": now,
        "exp": now + 4 * 3600,
        "scope": "mcp",
    }
    return jwt.encode(claims, secret, algorithm="HS256")


def bastion_token(base: str, resource: str, secret: str) -> str:
    """A client_credentials token for ``resource`` from Bastion's token endpoint."""
    import httpx2

    response = httpx2.post(
        f"{base}/token",
        data={"grant_type": "client_credentials", "resource": resource},
        auth=("bench", secret),
        timeout=30,
    )
    if response.status_code != 200:
        raise Unavailable(f"Bastion refused the bench token request: {response.text[:200]}")
    return str(response.json()["access_token"])


def ensure_fastmcp_venv() -> Path:
    """Create bench/.venv-fastmcp from the lock file when missing or stale; return its python."""
    python = FASTMCP_VENV / "bin" / "python"
    stamp = FASTMCP_VENV / ".lock-sha256"
    digest = hashlib.sha256(FASTMCP_LOCK.read_bytes()).hexdigest()
    if python.exists() and stamp.exists() and stamp.read_text().strip() == digest:
        return python
    log(f"creating {FASTMCP_VENV.relative_to(REPO)} from {FASTMCP_LOCK.name} (once; takes a minute)")
    try:
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(FASTMCP_VENV)], check=True)
        pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps"]
        subprocess.run([*pip, "-r", str(FASTMCP_LOCK)], check=True)
        subprocess.run([str(python), "-c", "import fastmcp, uvloop, httptools"], check=True)
    except (subprocess.CalledProcessError, OSError) as exc:
        raise Unavailable(f"could not install FastMCP from {FASTMCP_LOCK.name}: {exc}") from exc
    stamp.write_text(digest)
    return python


def bastion_available() -> None:
    if not BASTION.exists():
        raise Unavailable(f"{BASTION} not found (is Bastion installed in this venv?)")
    probe = subprocess.run(
        [str(BASTION), "serve", "--help"], check=False, capture_output=True, text=True, timeout=60
    )
    if probe.returncode != 0:
        detail = (probe.stderr or probe.stdout).strip().splitlines()
        raise Unavailable(
            f"`bastion serve` does not exist yet ({detail[-1] if detail else probe.returncode})"
        )


@contextmanager
def gateway(
    key: str, upstream_url: str, tmp: Path, pin: bool, secret: str
) -> Iterator[tuple[str, str | None, procs.Service | None]]:
    """Start the gateway for ``key``; yield (its MCP URL, bearer token or None, its process)."""
    if key == "direct":
        yield upstream_url, None, None
        return
    port = procs.free_port()
    url = f"http://127.0.0.1:{port}/mcp"
    py = sys.executable
    if key == "floor":
        argv = [py, "-m", "bench.floor", "--port", str(port), "--upstream", upstream_url, "--secret", secret]
        argv += ["--audience", url]
    elif key == "bastion":
        bastion_available()
        config = tmp / "bastion.yaml"
        digest = hashlib.sha256(secret.encode()).hexdigest()
        config.write_text(
            BASTION_CONFIG.format(port=port, tmp=tmp, upstream=upstream_url, secret_sha256=digest)
        )
        argv, url = [str(BASTION), "serve", "-c", str(config)], f"{url}/echo"
    else:
        mode = "reuse" if key == "fastmcp-reuse" else "fresh"
        argv = [str(ensure_fastmcp_venv()), str(BENCH_DIR / "fastmcp_proxy.py"), "--port", str(port)]
        argv += ["--upstream", upstream_url, "--secret", secret, "--audience", url, "--mode", mode]
    service = procs.Service(key, argv, tmp, pin=pin, env={"PYTHONPATH": str(REPO)})
    try:
        try:
            service.wait_http(f"http://127.0.0.1:{port}/", timeout=60)
        except RuntimeError as exc:
            raise Unavailable(str(exc).splitlines()[0] + f" (log: {service.log_path})") from exc
        if key == "bastion":  # a real Bastion token, from its own token endpoint
            token = bastion_token(f"http://127.0.0.1:{port}", url, secret)
        else:
            token = token_for(url, secret)
        yield url, token, service
    finally:
        service.stop()


def measure(args: argparse.Namespace, tmp: Path, pin: bool) -> RunResults:
    run = RunResults(
        targets=[TARGETS[k] for k in args.keys], eras=args.eras, concurrencies=args.concurrencies
    )
    secret = secrets.token_hex(32)
    upstream_port = procs.free_port()
    upstream_url = f"http://127.0.0.1:{upstream_port}/mcp"
    upstream_argv = [sys.executable, "-m", "bench.upstream", "--port", str(upstream_port)]
    upstream = procs.Service("upstream", upstream_argv, tmp, pin=pin, env={"PYTHONPATH": str(REPO)})
    with ExitStack() as stack:
        stack.callback(upstream.stop)
        upstream.wait_http(f"http://127.0.0.1:{upstream_port}/")
        # Every gateway runs for the whole run (idle ones cost no CPU) so that the cells of all
        # targets interleave: noise from a shared machine then hits every target alike.
        running: dict[str, tuple[str, str | None, procs.Service | None]] = {}
        for key in args.keys:
            try:
                running[key] = stack.enter_context(gateway(key, upstream_url, tmp, pin, secret))
            except Unavailable as exc:
                run.skipped[key] = str(exc)
                log(f"  {key}: not available: {exc}")
        samples: dict[tuple[str, str, int], list[CellResult]] = {}
        for era in args.eras:
            for repeat in range(args.repeat):
                if args.repeat > 1:
                    log(f"  -- {era} era, round {repeat + 1} of {args.repeat}")
                for concurrency in args.concurrencies:
                    for key, (url, token, service) in running.items():
                        cell = one_cell(url, era, concurrency, token, args, upstream, service)
                        samples.setdefault((era, key, concurrency), []).append(cell)
        for (era, key, concurrency), cells in samples.items():
            median = sorted(cells, key=lambda cell: cell.rps)[len(cells) // 2]
            run.cells.setdefault(era, {}).setdefault(key, {})[concurrency] = median
    return run


def one_cell(
    url: str,
    era: str,
    concurrency: int,
    token: str | None,
    args: argparse.Namespace,
    upstream: procs.Service,
    service: procs.Service | None,
) -> CellResult:
    def probe() -> dict[str, float]:
        cpu = {"upstream": upstream.cpu_seconds()}
        if service is not None:
            cpu["gateway"] = service.cpu_seconds()
        return cpu

    era_name: Era = "modern" if era == "modern" else "legacy"
    cell = run_cell_sync(
        url,
        era=era_name,
        concurrency=concurrency,
        duration=args.duration,
        warmup=args.warmup,
        token=token,
        cpu_probe=probe,
        request_timeout=args.request_timeout,
    )
    name = service.name if service else "direct"
    cpu = cell.cpu_us_per_call("gateway" if service else "upstream")
    log(
        f"  {era:6} {name:14} c={concurrency:<3} {cell.rps:8.0f} req/s  p50 {cell.p50_ms:7.2f} ms  "
        f"p99 {cell.p99_ms:8.2f} ms  cpu {cpu:7.0f} µs/call  timeouts {cell.timeouts} errors {cell.errors}"
    )
    return cell


def machine_meta(args: argparse.Namespace, pin: bool) -> dict[str, str]:
    model = "unknown"
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        model = next(
            line.split(":", 1)[1].strip() for line in lscpu.splitlines() if line.startswith("Model name")
        )
    except (OSError, StopIteration):
        pass
    versions = ", ".join(f"{p} {_version(p)}" for p in ("mcp", "uvicorn", "uvloop", "aiohttp", "PyJWT"))
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{model}, {os.cpu_count()} cores, Linux {platform.release()}",
        "Python": platform.python_version(),
        "packages": f"{versions}; FastMCP 4.1.6 from bench/fastmcp-reference.lock",
        "pinning": "upstream + gateway on core 0, load generator on core 1" if pin else "none (--no-pin)",
        "cells": (
            f"{args.warmup:g} s warm-up + {args.duration:g} s measured, closed loop, keep-alive; "
            f"{args.repeat} interleaved round(s) per cell, median by req/s kept; "
            f"a call is a timeout after {args.request_timeout:g} s"
        ),
    }


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "?"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    pin = not args.no_pin and procs.can_pin()
    if pin:
        procs.pin_self_to_loadgen_core()
    log(f"bench: targets {', '.join(args.keys)}; eras {', '.join(args.eras)}; c={args.concurrencies}")
    with tempfile.TemporaryDirectory(prefix="bastion-bench-") as tmp:
        run = measure(args, Path(tmp), pin)
    command = "python -m bench " + shlex.join(sys.argv[1:] if argv is None else argv)
    rendered = render_run(run, machine_meta(args, pin), [command.strip()])
    if args.out:
        splice(args.out, rendered)
        log(f"bench: wrote {args.out}")
    else:
        print(rendered)
    return 0


if __name__ == "__main__":
    sys.exit(main())
