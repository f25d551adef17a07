"""AuditRecorder: a deque on the hot path, a background task that writes batches.

``record()`` checks the event name and appends to a deque (a few µs, no I/O, no
await). One task wakes when a batch is full or ``flush_interval`` after the first
queued record, appends batches to the AuditStore (which extends the hash chain) and
then to the JSON Lines file. If the store fails, records stay queued and the task
retries with backoff, logging once per failure burst; past ``max_queue`` new records
are dropped, counted, logged loudly, and an ``audit.dropped`` record enters the chain
once the store is back, so the loss is visible where auditors look.

Log lines never contain a record's content beyond event and trace id; exception text
is cut to its first line and 500 characters (SQL errors may quote values).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from itertools import islice
from pathlib import Path
from typing import IO

import orjson

from bastion.audit.events import AUDIT_DROPPED, AUDIT_PURGED, EVENTS
from bastion.core.records import AuditRecord, StoredAuditRecord
from bastion.store.base import AuditStore
from bastion.store.hashing import record_fields

log = logging.getLogger(__name__)

MAX_LOGGED = 500  # characters of any free text that reaches a log line
MAX_DETAIL = 4000  # characters of detail stored; longer detail is cut at flush time
_RETENTION_EVERY = 3600.0  # seconds between retention purges
_MAX_BACKOFF = 5.0


def sanitize(text: str, limit: int = MAX_LOGGED) -> str:
    """First line only, control characters escaped, at most ``limit`` characters."""
    line = text.splitlines()[0] if text else ""
    line = (
        line.encode("unicode_escape", "backslashreplace").decode("ascii") if not line.isprintable() else line
    )
    return line if len(line) <= limit else line[: limit - 1] + "…"


def jsonl_line(item: StoredAuditRecord) -> bytes:
    """One JSON Lines entry: seq, prev_hash, hash and the record's fields (verifiable on its own)."""
    body = {"seq": item.seq, "prev_hash": item.prev_hash, "hash": item.hash, **record_fields(item.record)}
    return orjson.dumps(body, option=orjson.OPT_APPEND_NEWLINE)


class AuditRecorder:
    """Queue audit records synchronously; write them to the store (and JSONL) in batches."""

    def __init__(
        self,
        store: AuditStore,
        *,
        jsonl_path: str | None = None,
        batch_size: int = 256,
        flush_interval: float = 0.05,
        retention_days: int | None = None,
        max_queue: int = 100_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if batch_size < 1 or max_queue < batch_size:
            raise ValueError("need 1 <= batch_size <= max_queue")
        self._store = store
        self._jsonl_path = Path(jsonl_path) if jsonl_path else None
        self._batch_size = batch_size
        self._flush_interval = flush_interval
        self._retention = retention_days * 86400.0 if retention_days else None
        self._max_queue = max_queue
        self._clock = clock
        self._queue: deque[AuditRecord] = deque()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._file: IO[bytes] | None = None
        self._closing = False
        self._failing = False
        self._jsonl_failing = False
        self._dropped_unreported = 0
        self._next_purge = 0.0
        self.dropped = 0  # records lost since start (store down too long, or not drained on close)
        self.written = 0  # records the store accepted
        self.store_failures = 0  # failed append attempts

    # -- hot path ---------------------------------------------------------------------------

    def record(self, rec: AuditRecord) -> None:
        """Queue ``rec``; raises ValueError for an event outside the vocabulary. Never blocks."""
        if rec.event not in EVENTS:
            raise ValueError(f"unknown audit event {rec.event!r}: add it to bastion.audit.events")
        queue = self._queue
        size = len(queue)
        if size >= self._max_queue:
            self._drop(rec)
            return
        queue.append(rec)
        # Wake the writer for the first record (it then waits flush_interval to fill a
        # batch) and when a batch is full; other appends cost nothing more.
        if size == 0 or size + 1 == self._batch_size:
            self._wakeup.set()

    def _drop(self, rec: AuditRecord) -> None:
        self.dropped += 1
        self._dropped_unreported += 1
        if self._dropped_unreported == 1:
            log.error(
                "AUDIT RECORDS ARE BEING DROPPED: the queue is full (%d) because the audit store is "
                "failing; first dropped: event=%s trace_id=%s",
                self._max_queue,
                rec.event,
                sanitize(rec.trace_id, 100),
            )

    @property
    def pending(self) -> int:
        """Records queued and not yet in the store."""
        return len(self._queue)

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the JSONL file and start the writer task (call from the running loop)."""
        if self._task is not None:
            return
        if self._jsonl_path is not None:
            self._jsonl_path.parent.mkdir(parents=True, exist_ok=True)
            self._file = await asyncio.to_thread(self._jsonl_path.open, "ab")
        self._closing = False
        self._task = asyncio.create_task(self._run(), name="bastion-audit-writer")

    async def aclose(self, timeout: float = 10.0) -> None:
        """Write everything queued, then stop. Records still queued after ``timeout``
        seconds (the store is down) are dropped with a loud log line."""
        if self._task is None:  # never started: start, so queued records are drained too
            await self.start()
        self._closing = True
        self._wakeup.set()
        task, self._task = self._task, None
        assert task is not None
        try:
            await asyncio.wait_for(task, timeout)
        except TimeoutError:
            lost = len(self._queue)
            self._queue.clear()
            self.dropped += lost
            log.error(
                "AUDIT RECORDS DROPPED ON SHUTDOWN: %d records could not be written in %.1fs", lost, timeout
            )
        finally:
            if self._file is not None:
                file, self._file = self._file, None
                await asyncio.to_thread(file.close)

    # -- writer task ------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
            if len(self._queue) < self._batch_size and not self._closing:
                # Give a partial batch flush_interval to fill up; a full batch wakes us early.
                self._wakeup.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), self._flush_interval)
            await self._drain()
            if self._retention is not None:
                await self._maybe_purge()

    async def _drain(self) -> None:
        backoff = min(self._flush_interval, 0.05) or 0.01
        while self._queue:
            batch = [self._capped(r) for r in islice(self._queue, 0, self._batch_size)]
            try:
                stored = await self._store.append(batch)
            except Exception as exc:
                self.store_failures += 1
                if not self._failing:
                    self._failing = True
                    log.error(
                        "audit store append failed (%s: %s); %d records queued, retrying",
                        type(exc).__name__,
                        sanitize(str(exc)),
                        len(self._queue),
                    )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF)
                continue
            for _ in batch:
                self._queue.popleft()
            self.written += len(stored)
            if self._failing:
                self._failing = False
                log.warning("audit store recovered after %d failed attempts", self.store_failures)
            self._report_drops()
            await self._write_jsonl(stored)

    @staticmethod
    def _capped(rec: AuditRecord) -> AuditRecord:
        if len(rec.detail) <= MAX_DETAIL:
            return rec
        return rec._replace(detail=rec.detail[: MAX_DETAIL - 1] + "…")

    def _report_drops(self) -> None:
        if not self._dropped_unreported:
            return
        count, self._dropped_unreported = self._dropped_unreported, 0
        log.error("audit store is back; %d audit records were dropped while it was failing", count)
        # Bypasses the bound on purpose: this one record is what tells auditors about the gap.
        self._queue.append(
            AuditRecord(ts=self._clock(), event=AUDIT_DROPPED, trace_id="", detail=f"{count} records dropped")
        )

    async def _write_jsonl(self, stored: list[StoredAuditRecord]) -> None:
        if self._file is None or not stored:
            return
        data = b"".join(jsonl_line(item) for item in stored)
        try:
            # A thread, so a slow disk never stalls the event loop that serves requests.
            await asyncio.to_thread(self._write_file, data)
        except OSError as exc:
            if not self._jsonl_failing:
                log.error("audit JSONL write to %s failed: %s", self._jsonl_path, sanitize(str(exc)))
            self._jsonl_failing = True
        else:
            self._jsonl_failing = False

    def _write_file(self, data: bytes) -> None:
        assert self._file is not None
        self._file.write(data)
        self._file.flush()

    async def _maybe_purge(self) -> None:
        assert self._retention is not None
        now = self._clock()
        if now < self._next_purge:
            return
        self._next_purge = now + _RETENTION_EVERY
        cutoff = now - self._retention
        try:
            count = await self._store.purge_before(cutoff)
        except Exception as exc:
            log.error("audit retention purge failed (%s: %s)", type(exc).__name__, sanitize(str(exc)))
            return
        if count:
            log.info("audit retention: purged %d records older than %d days", count, self._retention // 86400)
            self.record(
                AuditRecord(
                    ts=now, event=AUDIT_PURGED, trace_id="", detail=f"{count} records before {cutoff:.0f}"
                )
            )
