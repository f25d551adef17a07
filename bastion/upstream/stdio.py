"""Supervised local MCP servers over the stdio transport.

MCP stdio framing (https://modelcontextprotocol.io/specification/2025-11-25/basic/transports#stdio):
newline-delimited JSON-RPC on stdin/stdout, one UTF-8 object per line with no embedded
newlines; stderr is free-form logging. Shutdown follows the same section: close stdin, wait,
SIGTERM, wait, SIGKILL. Each child runs in its own session so the signals reach the whole
process group (``npx``/``uvx`` wrappers and their grandchildren).

Line reading: stdout is read in 256 KiB chunks and split on ``\\n`` here rather than with
``StreamReader.readline`` and a 64 MiB limit; on 1 KB messages that measured ~2.5-3.5 µs per
message end to end against ~4.5-5.8 µs for ``readline``, and it keeps the pipe buffer at
256 KiB instead of letting ``StreamReader`` hold up to 2 x 64 MiB.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import signal
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from bastion.config.model import StdioUpstream
from bastion.core.errors import UpstreamError, UpstreamFailed, UpstreamUnavailable
from bastion.upstream._procutil import (
    LineSplitter,
    StderrLog,
    build_env,
    key_label,
    preview,
    pump_lines,
    signal_group,
    spawn_process,
)

PIPE_LIMIT = 256 * 1024
MAX_MESSAGE_BYTES = 64 * 1024 * 1024  # a longer stdout line is dropped (and logged)
MAX_STDERR_BYTES = 8 * 1024  # stderr lines are cut here before decoding (and to 2000 chars after)
STDERR_LINES_PER_SECOND = 100
STDERR_TAIL_LINES = 5  # kept for the detail of a start failure
FAST_FAIL_WINDOW = 0.2  # a first start that dies this soon makes start() raise
READER_DRAIN_TIMEOUT = 1.0  # after exit, how long the pipes may take to reach EOF
KILL_WAIT = 5.0
BACKOFF_JITTER = 0.1  # up to +10 %


@dataclass(eq=False)
class _Child:
    """One spawned process and the tasks tied to its lifetime."""

    proc: asyncio.subprocess.Process
    started_at: float
    exited: asyncio.Task[int]
    readers: list[asyncio.Task[None]] = field(default_factory=list)
    stderr_tail: deque[str] = field(default_factory=lambda: deque(maxlen=STDERR_TAIL_LINES))


class StdioProcess:
    """One supervised child process speaking line-delimited JSON-RPC.

    States: ``start()`` spawns the process and runs ``on_started`` (the caller's MCP
    initialize handshake; ``send`` and ``on_message`` already work while it runs);
    ``running`` turns true once it completes. On an unexpected exit ``on_exited(returncode)``
    is called and, when ``supervise`` is set, the process is restarted after an exponential
    backoff and ``on_started`` runs again before ``running`` is true again. ``stop()`` ends
    everything. Callers that arrive during a restart use ``wait_running``.
    """

    def __init__(
        self,
        upstream: str,
        spec: StdioUpstream,
        *,
        key: str,
        extra_env: Mapping[str, str] | None = None,
        on_message: Callable[[dict[str, Any]], None],
        on_started: Callable[[], Awaitable[None]] | None = None,
        on_exited: Callable[[int | None], None] | None = None,
        supervise: bool = True,
        logger: logging.Logger | None = None,
    ) -> None:
        self._upstream = upstream
        self._spec = spec
        self._key = key_label(key)
        self._tag = f"upstream={upstream} key={self._key}"  # prefix of every log line
        self._extra_env = dict(extra_env or {})
        self._on_message = on_message
        self._on_started = on_started
        self._on_exited = on_exited
        self._supervise = supervise
        self._log = logger or logging.getLogger(f"bastion.upstream.{upstream}")
        self._child: _Child | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._stop_task: asyncio.Task[None] | None = None
        self._stopping = False
        self._restarts = 0
        self._ready = asyncio.Event()
        self._stopped = asyncio.Event()
        self._start_lock = asyncio.Lock()
        self._write_lock = asyncio.Lock()
        self._stderr = StderrLog(self._log, self._tag, STDERR_LINES_PER_SECOND)

    # -- public surface -------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """The process is alive and ``on_started`` has completed."""
        return self._ready.is_set() and self.pid is not None

    @property
    def pid(self) -> int | None:
        child = self._child
        if child is None or child.proc.returncode is not None:
            return None
        return child.proc.pid

    @property
    def restarts(self) -> int:
        """Restart attempts so far (each respawn after the first start, successful or not)."""
        return self._restarts

    async def start(self, *, fail_fast: bool = True) -> None:
        """Spawn the process and run ``on_started``; returns once it is running.

        Raises :class:`UpstreamUnavailable` when the command cannot be spawned, or the
        process exits before ``on_started`` completes or within ``FAST_FAIL_WINDOW``.
        With ``fail_fast=False`` (and ``supervise``) such a failure is logged instead and
        the supervisor keeps retrying with backoff until ``stop()``.
        """
        async with self._start_lock:
            if self._stopping:
                raise self._unavailable("the process was stopped")
            if self._active():
                return
            child: _Child | None = None
            try:
                child = self._child = await self._spawn()
                if not self._stopping:
                    await self._bring_up(child, window=FAST_FAIL_WINDOW)
                if self._stopping:  # stop() ran while we were starting
                    raise self._unavailable("the process was stopped")
            except UpstreamError as exc:
                if child is not None:
                    await self._kill(child)
                self._child = None
                if self._stopping:
                    raise self._unavailable("the process was stopped") from exc
                if fail_fast or not self._supervise:
                    raise
                self._log.warning("%s: start failed, will retry: %s (%s)", self._tag, exc.message, exc.detail)
                self._supervisor = asyncio.create_task(self._supervise_loop(None))
                return
            except BaseException:
                if child is not None:
                    await self._kill(child)
                self._child = None
                raise
            self._ready.set()
            self._supervisor = asyncio.create_task(self._supervise_loop(child))

    async def send(self, message: dict[str, Any] | bytes) -> None:
        """Write one message as one line.

        Raises :class:`UpstreamUnavailable` when no process is alive, and
        :class:`UpstreamFailed` when the process does not read its stdin within
        ``timeouts.request`` (the write buffer never grows past one message plus the
        transport's high-water mark).
        """
        if isinstance(message, bytes):
            # Raw newlines in valid JSON are insignificant whitespace; a pretty-printed body
            # must not break the framing (\r too: Python's text-mode stdin splits on it).
            data = message.rstrip(b"\r\n")
            if b"\n" in data or b"\r" in data:
                data = data.replace(b"\r", b" ").replace(b"\n", b" ")
        else:
            data = orjson.dumps(message)
        async with self._write_lock:
            child = self._child
            stdin = child.proc.stdin if child is not None else None
            if self._stopping or child is None or child.proc.returncode is not None or stdin is None:
                raise self._unavailable("the server process is not running")
            if stdin.is_closing():
                raise self._unavailable("the server process is not running")
            timeout = self._spec.timeouts.request
            try:
                async with asyncio.timeout(timeout):
                    await stdin.drain()  # room for this message first: the buffer stays bounded
                    stdin.write(data)
                    stdin.write(b"\n")
                    await stdin.drain()
            except TimeoutError:
                raise UpstreamFailed(
                    self._upstream,
                    "the server process is not reading its input",
                    detail=f"stdin not drained within {timeout}s; key={self._key}",
                ) from None
            except (ConnectionError, RuntimeError) as exc:
                raise self._unavailable("the server process is not running", detail=repr(exc)) from exc

    async def wait_running(self, timeout: float) -> None:
        """Return once the process is running; raise UpstreamUnavailable on timeout or stop."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self.running:
            if self._stopping:
                raise self._unavailable("the process was stopped")
            if not self._active():
                raise self._unavailable("the server process is not running")
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise self._unavailable(
                    "the server process is restarting",
                    detail=f"not running after {timeout}s; key={self._key}",
                )
            if self._ready.is_set():  # an exit not yet noticed by the supervisor
                await asyncio.sleep(min(0.01, remaining))
                continue
            waiters = {asyncio.ensure_future(self._ready.wait()), asyncio.ensure_future(self._stopped.wait())}
            try:
                await asyncio.wait(waiters, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()

    async def stop(self) -> None:
        """Stop supervision and the process group (stdin close, SIGTERM, SIGKILL). Idempotent."""
        if self._stop_task is None:
            self._stopping = True
            self._stop_task = asyncio.create_task(self._shutdown())
        await asyncio.shield(self._stop_task)

    # -- lifecycle ------------------------------------------------------------------------------

    def _unavailable(self, message: str, *, detail: str = "") -> UpstreamUnavailable:
        return UpstreamUnavailable(self._upstream, message, detail=detail)

    def _active(self) -> bool:
        if self._supervisor is not None and not self._supervisor.done():
            return True
        return self.pid is not None

    async def _spawn(self) -> _Child:
        spec = self._spec
        env = build_env(
            inherit=spec.inherit_env, base=os.environ, spec_env=spec.env, extra_env=self._extra_env
        )
        if self._log.isEnabledFor(logging.DEBUG):
            names = sorted({*spec.env, *self._extra_env})
            self._log.debug("%s: spawning %s; env names set: %s", self._tag, spec.command, ", ".join(names))
        proc = await spawn_process(self._upstream, spec, env, key=self._key, pipe_limit=PIPE_LIMIT)
        child = _Child(proc, asyncio.get_running_loop().time(), asyncio.create_task(proc.wait()))
        child.exited.add_done_callback(lambda _: self._ready.clear())
        stdout = LineSplitter(MAX_MESSAGE_BYTES, on_oversize=self._oversized)
        stderr = LineSplitter(MAX_STDERR_BYTES, truncate=True)
        child.readers.append(asyncio.create_task(pump_lines(self._log, proc.stdout, stdout, self._deliver)))
        child.readers.append(
            asyncio.create_task(
                pump_lines(
                    self._log, proc.stderr, stderr, lambda raw: child.stderr_tail.append(self._stderr(raw))
                )
            )
        )
        self._log.info("%s: started pid %d (%s)", self._tag, proc.pid, spec.command)
        return child

    async def _bring_up(self, child: _Child, *, window: float) -> None:
        """Run ``on_started`` against the live process; raise if the process dies first
        (or within ``window`` seconds of its spawn)."""
        loop = asyncio.get_running_loop()
        hook = asyncio.ensure_future(self._on_started()) if self._on_started is not None else None
        try:
            if hook is not None:
                await asyncio.wait({hook, child.exited}, return_when=asyncio.FIRST_COMPLETED)
            remaining = child.started_at + window - loop.time()
            if remaining > 0 and not child.exited.done():
                await asyncio.wait({child.exited}, timeout=remaining)
            if child.exited.done():
                await self._reap(child)
                code = child.exited.result()
                tail = " | ".join(child.stderr_tail) or "(no stderr output)"
                raise self._unavailable(
                    f"the server process exited at start (code {code})",
                    detail=f"command={self._spec.command!r} key={self._key} stderr: {tail}",
                )
            if hook is not None:
                try:
                    await hook
                except UpstreamError:
                    raise
                except Exception as exc:
                    raise self._unavailable(
                        "the server process failed to initialize", detail=repr(exc)
                    ) from exc
        finally:
            if hook is not None and not hook.done():
                hook.cancel()
                await asyncio.wait({hook})

    async def _supervise_loop(self, child: _Child | None) -> None:
        restart = self._spec.restart
        backoff = restart.initial_backoff
        while True:
            if child is not None:
                lived = await self._watch(child)
                if self._stopping or not self._supervise:
                    return
                if lived >= restart.stable_after:
                    backoff = restart.initial_backoff
            delay = min(backoff, restart.max_backoff) * (1 + random.uniform(0, BACKOFF_JITTER))
            backoff = min(backoff * 2, restart.max_backoff)
            self._log.info("%s: restarting in %.2fs", self._tag, delay)
            await asyncio.sleep(delay)
            self._restarts += 1
            try:
                child = self._child = await self._spawn()
            except UpstreamUnavailable as exc:
                self._log.warning("%s: restart failed: %s (%s)", self._tag, exc.message, exc.detail)
                child = None
                continue
            try:
                await self._bring_up(child, window=FAST_FAIL_WINDOW)
            except UpstreamError as exc:
                self._log.warning(
                    "%s: restarted process not usable: %s (%s)", self._tag, exc.message, exc.detail
                )
                await self._kill(child)
                continue  # _watch reports the exit and backs off
            self._ready.set()
            self._log.info("%s: running again after restart %d", self._tag, self._restarts)

    async def _watch(self, child: _Child) -> float:
        """Wait for ``child`` to exit; clean up; report an unexpected exit. Returns its lifetime."""
        await asyncio.wait({child.exited})
        self._ready.clear()
        lived = asyncio.get_running_loop().time() - child.started_at
        await self._reap(child)
        if self._child is child:
            self._child = None
        if not self._stopping:
            code = child.exited.result()
            self._log.warning(
                "%s: process %d exited with code %s after %.2fs", self._tag, child.proc.pid, code, lived
            )
            if self._on_exited is not None:
                try:
                    self._on_exited(code)
                except Exception:
                    self._log.exception("%s: on_exited callback failed", self._tag)
        return lived

    async def _shutdown(self) -> None:
        self._ready.clear()
        self._stopped.set()
        supervisor = self._supervisor
        if supervisor is not None and not supervisor.done():
            supervisor.cancel()
            await asyncio.wait({supervisor})
        child = self._child
        if child is not None:
            await self._terminate(child)
            self._child = None
        self._stderr.flush()
        self._log.info("%s: stopped", self._tag)

    async def _terminate(self, child: _Child) -> None:
        """Close stdin, wait ``shutdown_grace``, SIGTERM the group, wait, SIGKILL the group."""
        grace = self._spec.shutdown_grace
        pgid = child.proc.pid  # start_new_session: the child leads its own process group
        if not child.exited.done():
            stdin = child.proc.stdin
            if stdin is not None and not stdin.is_closing():
                stdin.close()
            await asyncio.wait({child.exited}, timeout=grace)
        if not child.exited.done():
            self._log.info("%s: process %d still running; sending SIGTERM", self._tag, pgid)
            signal_group(pgid, signal.SIGTERM)
            await asyncio.wait({child.exited}, timeout=grace)
        if not child.exited.done():
            self._log.warning("%s: process %d ignored SIGTERM; sending SIGKILL", self._tag, pgid)
        await self._kill(child)

    async def _kill(self, child: _Child) -> None:
        """SIGKILL whatever is left of the group, reap the process, finish the readers."""
        signal_group(child.proc.pid, signal.SIGKILL)
        await asyncio.wait({child.exited}, timeout=KILL_WAIT)
        await self._reap(child)

    async def _reap(self, child: _Child) -> None:
        """After the leader exited: kill stragglers (grandchildren) and drain the pipes."""
        if child.exited.done():
            signal_group(child.proc.pid, signal.SIGKILL)
        pending = [task for task in child.readers if not task.done()]
        if pending:
            _, still = await asyncio.wait(pending, timeout=READER_DRAIN_TIMEOUT)
            for task in still:
                task.cancel()
            if still:
                await asyncio.wait(still)
        stdin = child.proc.stdin
        if stdin is not None and not stdin.is_closing():
            stdin.close()

    # -- pipes ----------------------------------------------------------------------------------

    def _deliver(self, line: bytes) -> None:
        try:
            message = orjson.loads(line)
        except orjson.JSONDecodeError:
            if line.strip():
                self._log.warning("%s: skipping non-JSON stdout line: %r", self._tag, preview(line))
            return
        if not isinstance(message, dict):
            self._log.warning("%s: skipping non-object stdout line: %r", self._tag, preview(line))
            return
        try:
            self._on_message(message)
        except Exception:
            self._log.exception("%s: on_message callback failed", self._tag)

    def _oversized(self, size: int) -> None:
        self._log.error("%s: dropped a %d-byte stdout line (limit %d)", self._tag, size, MAX_MESSAGE_BYTES)
