"""Small helpers for :mod:`bastion.upstream.stdio`: spawning, pipe reading and line
splitting, stderr rate limiting, child environments, process-group signals, log-safe keys."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
import signal
import time
from collections.abc import Callable, Mapping

from bastion.config.model import StdioUpstream
from bastion.core.errors import UpstreamUnavailable

READ_CHUNK = 256 * 1024  # bytes per pipe read
STDERR_LINE_CHARS = 2000  # a logged stderr line is cut here
LOGGED_LINE_CHARS = 200  # previews of bad stdout lines, stderr tail lines in error details

# Names copied from Bastion's environment when ``inherit_env`` is false.
MINIMAL_ENV_NAMES = ("PATH", "HOME", "LANG")

_PLAIN_KEY = re.compile(r"[A-Za-z0-9_.:@-]{1,15}")


def key_label(key: str) -> str:
    """How a process key appears in logs.

    Short plain names ("shared", "alice") are logged as is. Anything longer or
    stranger (session ids, opaque user ids) becomes a short hash, so a session id
    never reaches a log line.
    """
    if _PLAIN_KEY.fullmatch(key):
        return key
    return "h:" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:12]


def build_env(
    *,
    inherit: bool,
    base: Mapping[str, str],
    spec_env: Mapping[str, str],
    extra_env: Mapping[str, str],
) -> dict[str, str]:
    """The child's environment: ``base`` (all of it, or only PATH/HOME/LANG), then
    ``spec_env``, then ``extra_env``; later layers win."""
    env = dict(base) if inherit else {name: base[name] for name in MINIMAL_ENV_NAMES if name in base}
    env.update(spec_env)
    env.update(extra_env)
    return env


async def spawn_process(
    upstream: str, spec: StdioUpstream, env: Mapping[str, str], *, key: str, pipe_limit: int
) -> asyncio.subprocess.Process:
    """Start ``spec.command`` in a new session (its own process group) with piped stdio."""
    where = f"command={spec.command!r} cwd={spec.cwd!r} key={key}"
    try:
        return await asyncio.create_subprocess_exec(
            spec.command,
            *spec.args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            cwd=spec.cwd,
            start_new_session=True,
            limit=pipe_limit,
        )
    except FileNotFoundError as exc:  # subprocess names the cwd when chdir() failed
        reason = "working directory not found" if exc.filename == spec.cwd else "command not found"
        message, detail = f"could not start the server process ({reason})", where
    except PermissionError as exc:
        message, detail = "could not start the server process (not executable)", f"{where} {exc}"
    except OSError as exc:
        message, detail = "could not start the server process", f"{where} {exc!r}"
    raise UpstreamUnavailable(upstream, message, detail=detail)


async def pump_lines(
    log: logging.Logger,
    stream: asyncio.StreamReader | None,
    splitter: LineSplitter,
    handle: Callable[[bytes], None],
) -> None:
    """Read ``stream`` to EOF in chunks, handing each complete line to ``handle``."""
    assert stream is not None
    try:
        while chunk := await stream.read(READ_CHUNK):
            for line in splitter.feed(chunk):
                handle(line)
        last = splitter.finish()
        if last is not None:
            handle(last)
    except Exception:
        log.exception("pipe reader failed")


def signal_group(pgid: int, sig: signal.Signals) -> bool:
    """Send ``sig`` to a process group; False when the group no longer exists."""
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


class LineSplitter:
    """Splits a byte stream on ``\\n`` into lines (without the delimiter).

    A line longer than ``max_line`` bytes is either truncated to ``max_line``
    (``truncate=True``, for logs) or dropped whole (for messages, where half a JSON
    object is useless); ``on_oversize(total_bytes)`` is called once per such line.
    Memory stays bounded by ``max_line`` plus one chunk.
    """

    __slots__ = ("_buffered", "_discarding", "_dropped", "_max", "_on_oversize", "_parts", "_truncate")

    def __init__(
        self, max_line: int, *, truncate: bool = False, on_oversize: Callable[[int], None] | None = None
    ) -> None:
        self._max = max_line
        self._truncate = truncate
        self._on_oversize = on_oversize
        self._parts: list[bytes] = []
        self._buffered = 0
        self._discarding = False
        self._dropped = 0

    def feed(self, data: bytes) -> list[bytes]:
        lines: list[bytes] = []
        start = 0
        find = data.find
        while True:
            end = find(b"\n", start)
            if end < 0:
                if start < len(data):
                    self._hold(data[start:])
                return lines
            if self._discarding:
                self._dropped += end - start
                head = self._finish_oversized()
                if head is not None:
                    lines.append(head)
            elif self._parts:
                self._hold(data[start:end])
                if self._discarding:
                    head = self._finish_oversized()
                    if head is not None:
                        lines.append(head)
                else:
                    lines.append(b"".join(self._parts))
                    self._parts.clear()
                    self._buffered = 0
            elif end - start > self._max:
                self._dropped = end - start
                self._discarding = True
                if self._truncate:
                    self._parts.append(data[start : start + self._max])
                head = self._finish_oversized()
                if head is not None:
                    lines.append(head)
            else:
                lines.append(data[start:end])
            start = end + 1

    def finish(self) -> bytes | None:
        """At end of stream: the last line if it had no trailing newline."""
        if self._discarding:
            return self._finish_oversized()
        if not self._parts:
            return None
        line = b"".join(self._parts)
        self._parts.clear()
        self._buffered = 0
        return line

    def _hold(self, piece: bytes) -> None:
        if self._discarding:
            self._dropped += len(piece)
            return
        self._parts.append(piece)
        self._buffered += len(piece)
        if self._buffered > self._max:
            self._discarding = True
            self._dropped = self._buffered
            if self._truncate:
                head = b"".join(self._parts)[: self._max]
                self._parts[:] = [head]
            else:
                self._parts.clear()
            self._buffered = 0

    def _finish_oversized(self) -> bytes | None:
        if self._on_oversize is not None:
            self._on_oversize(self._dropped)
        self._discarding = False
        self._dropped = 0
        self._buffered = 0
        head = b"".join(self._parts) if self._truncate and self._parts else None
        self._parts.clear()
        return head


class RateLimiter:
    """At most ``per_second`` events per one-second window; counts what it refuses."""

    __slots__ = ("_clock", "_count", "_limit", "_window_start", "suppressed")

    def __init__(self, per_second: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._limit = per_second
        self._clock = clock
        self._window_start = clock()
        self._count = 0
        self.suppressed = 0

    def allow(self) -> bool:
        now = self._clock()
        if now - self._window_start >= 1.0:
            self._window_start = now
            self._count = 0
        self._count += 1
        if self._count <= self._limit:
            return True
        self.suppressed += 1
        return False

    def take_suppressed(self) -> int:
        count, self.suppressed = self.suppressed, 0
        return count


class StderrLog:
    """Logs a child's stderr lines at INFO, at most ``per_second`` of them; the rest are
    counted and reported as one "suppressed N lines" line about a second later."""

    def __init__(self, logger: logging.Logger, tag: str, per_second: int) -> None:
        self._log = logger
        self._tag = tag
        self._limit = RateLimiter(per_second)
        self._flush: asyncio.TimerHandle | None = None

    def __call__(self, raw: bytes) -> str:
        """Log one line (if the rate allows); returns its short form for an error detail."""
        text = raw.decode("utf-8", "replace").rstrip("\r")[:STDERR_LINE_CHARS]
        if self._limit.allow():
            self.flush()
            self._log.info("%s: stderr: %s", self._tag, text)
        elif self._flush is None:
            self._flush = asyncio.get_running_loop().call_later(1.0, self.flush)
        return text[:LOGGED_LINE_CHARS]

    def flush(self) -> None:
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        suppressed = self._limit.take_suppressed()
        if suppressed:
            self._log.info("%s: stderr: suppressed %d lines", self._tag, suppressed)


def preview(line: bytes) -> str:
    return line[:LOGGED_LINE_CHARS].decode("utf-8", "replace")
