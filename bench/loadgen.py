"""Closed-loop load generator: raw JSON-RPC ``tools/call echo`` over keep-alive HTTP/1.1 (aiohttp).

``concurrency`` workers each send one request at a time for ``warmup`` seconds (discarded), then
for ``duration`` seconds or until ``max_requests`` in total, whichever comes first. Loopback only.
Legacy era: one ``initialize`` (+ ``notifications/initialized``) first, its ``Mcp-Session-Id``
reused if the server gives one. Modern era (2026-07-28): every request carries the ``_meta``
envelope and the ``MCP-Protocol-Version`` / ``Mcp-Method`` / ``Mcp-Name`` headers.
"""

from __future__ import annotations

import asyncio
import itertools
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

import aiohttp
import orjson

Era = Literal["legacy", "modern"]
LEGACY_VERSION = "2025-11-25"
MODERN_VERSION = "2026-07-28"
PROTOCOL_VERSION_META_KEY = "io.modelcontextprotocol/protocolVersion"
CLIENT_CAPABILITIES_META_KEY = "io.modelcontextprotocol/clientCapabilities"
CLIENT_INFO_META_KEY = "io.modelcontextprotocol/clientInfo"
CLIENT_INFO = {"name": "bastion-bench", "version": "1.0"}
ECHO_TEXT = "hello from the benchmark"
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


class LoadError(RuntimeError):
    """The target did not accept the setup requests (initialize)."""


@dataclass
class CellResult:
    """What one (target, era, concurrency) cell measured."""

    concurrency: int
    duration: float = 0.0
    ok: int = 0
    errors: int = 0
    timeouts: int = 0
    latencies: list[float] = field(default_factory=list, repr=False)
    cpu_seconds: dict[str, float] = field(default_factory=dict)
    first_error: str | None = None

    @property
    def calls(self) -> int:
        return self.ok + self.errors + self.timeouts

    @property
    def rps(self) -> float:
        return self.ok / self.duration if self.duration > 0 else 0.0

    def percentile_ms(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
        return ordered[index] * 1000

    @property
    def p50_ms(self) -> float:
        return statistics.median(self.latencies) * 1000 if self.latencies else float("nan")

    @property
    def p99_ms(self) -> float:
        return self.percentile_ms(0.99)

    def cpu_us_per_call(self, name: str) -> float:
        seconds = self.cpu_seconds.get(name)
        if seconds is None or self.calls == 0:
            return float("nan")
        return seconds * 1e6 / self.calls


def _headers(era: Era, token: str | None, session_id: str | None) -> dict[str, str]:
    headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if era == "modern":
        headers.update(
            {"MCP-Protocol-Version": MODERN_VERSION, "Mcp-Method": "tools/call", "Mcp-Name": "echo"}
        )
    else:
        headers["MCP-Protocol-Version"] = LEGACY_VERSION
        if session_id:
            headers["Mcp-Session-Id"] = session_id
    return headers


def call_body(era: Era, request_id: int) -> bytes:
    params: dict[str, Any] = {"name": "echo", "arguments": {"text": ECHO_TEXT}}
    if era == "modern":
        params["_meta"] = {
            PROTOCOL_VERSION_META_KEY: MODERN_VERSION,
            CLIENT_CAPABILITIES_META_KEY: {},
            CLIENT_INFO_META_KEY: CLIENT_INFO,
        }
    return orjson.dumps({"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params})


def is_success(status: int, body: bytes) -> bool:
    """A 200 whose JSON-RPC message (plain JSON or the data of an SSE event) is a result."""
    if status != 200:
        return False
    if body.startswith((b"event:", b"data:", b"id:", b":")):
        data = [line[5:].strip() for line in body.splitlines() if line.startswith(b"data:")]
        body = data[-1] if data else b""
    try:
        message = orjson.loads(body)
    except orjson.JSONDecodeError:
        return False
    return isinstance(message, dict) and "result" in message and ECHO_TEXT in str(message["result"])


def describe(exc: BaseException) -> str:
    if isinstance(exc, aiohttp.ClientResponseError):
        return f"{type(exc).__name__}: HTTP {exc.status}, {' '.join(exc.message.split())}"
    return f"{type(exc).__name__}: {exc}"


async def _initialize(
    session: aiohttp.ClientSession, url: str, token: str | None, timeout: float
) -> str | None:
    body = orjson.dumps(
        {
            "jsonrpc": "2.0",
            "id": 0,
            "method": "initialize",
            "params": {"protocolVersion": LEGACY_VERSION, "capabilities": {}, "clientInfo": CLIENT_INFO},
        }
    )
    headers = _headers("legacy", token, None)
    del headers["MCP-Protocol-Version"]
    client_timeout = aiohttp.ClientTimeout(total=timeout)
    async with session.post(url, data=body, headers=headers, timeout=client_timeout) as resp:
        payload = await resp.read()
        if resp.status != 200 or b'"result"' not in payload:
            raise LoadError(f"initialize failed: HTTP {resp.status}: {payload[:300]!r}")
        session_id = resp.headers.get("Mcp-Session-Id")
    note = orjson.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"})
    async with session.post(
        url, data=note, headers=_headers("legacy", token, session_id), timeout=client_timeout
    ) as r:
        await r.read()
    return session_id


async def run_cell(
    url: str,
    *,
    era: Era,
    concurrency: int,
    duration: float,
    warmup: float,
    token: str | None = None,
    max_requests: int = 500_000,
    request_timeout: float = 10.0,
    cpu_probe: Callable[[], dict[str, float]] | None = None,
) -> CellResult:
    """Drive ``url`` with ``concurrency`` closed-loop workers; see the module docstring."""
    if urlsplit(url).hostname not in LOOPBACK_HOSTS:
        raise ValueError(f"the load generator only targets loopback, not {url}")
    if not (1 <= concurrency <= 1024 and 0 < duration <= 600 and 0 <= warmup <= 60):
        raise ValueError("concurrency must be 1..1024, duration 0..600 s and warmup 0..60 s")
    result = CellResult(concurrency=concurrency)
    ids = itertools.count(1)
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False, keepalive_timeout=60)
    async with aiohttp.ClientSession(connector=connector, skip_auto_headers=("User-Agent",)) as session:
        session_id = None
        if era == "legacy":
            try:
                session_id = await _initialize(session, url, token, request_timeout)
            except (LoadError, aiohttp.ClientError, TimeoutError) as exc:
                result.errors, result.first_error = 1, f"initialize: {describe(exc)}"
                return result
        headers = _headers(era, token, session_id)
        client_timeout = aiohttp.ClientTimeout(total=request_timeout)
        recording = False
        deadline = time.perf_counter() + warmup

        async def worker() -> None:
            while time.perf_counter() < deadline and (not recording or result.calls < max_requests):
                body = call_body(era, next(ids))
                started = time.perf_counter()
                try:
                    async with session.post(url, data=body, headers=headers, timeout=client_timeout) as resp:
                        payload = await resp.read()
                        status = resp.status
                except TimeoutError:
                    if recording:
                        result.timeouts += 1
                    continue
                except aiohttp.ClientError as exc:
                    if recording:
                        result.errors += 1
                        result.first_error = result.first_error or describe(exc)
                    await asyncio.sleep(0.01)
                    continue
                elapsed = time.perf_counter() - started
                if not recording:
                    continue
                if is_success(status, payload):
                    result.ok += 1
                    result.latencies.append(elapsed)
                else:
                    result.errors += 1
                    result.first_error = result.first_error or f"HTTP {status}: {payload[:200]!r}"

        if warmup > 0:
            # Warm-up requests still in flight a second after its end are abandoned, not awaited.
            tasks = [asyncio.ensure_future(worker()) for _ in range(concurrency)]
            _, stragglers = await asyncio.wait(tasks, timeout=warmup + 1.0)
            for task in stragglers:
                task.cancel()
            await asyncio.gather(*stragglers, return_exceptions=True)
        recording = True
        before = cpu_probe() if cpu_probe else {}
        started = time.perf_counter()
        deadline = started + duration
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        result.duration = time.perf_counter() - started
        if cpu_probe:
            after = cpu_probe()
            result.cpu_seconds = {name: after[name] - before.get(name, 0.0) for name in after}
    return result


def run_cell_sync(url: str, **kwargs: Any) -> CellResult:
    """``run_cell`` on a fresh event loop (uvloop when installed)."""
    try:
        import uvloop

        loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = uvloop.new_event_loop
    except ImportError:
        loop_factory = None
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(run_cell(url, **kwargs))
