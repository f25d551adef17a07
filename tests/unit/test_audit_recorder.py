"""AuditRecorder: vocabulary, batching, drain on close, JSON Lines, and a failing store.

The failing store is a real SQLite database whose write lock another connection holds
(``BEGIN EXCLUSIVE``), with a 50 ms busy timeout: appends fail with "database is
locked" exactly as they would behind a stuck writer, and recover when it lets go.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from bastion.audit import EVENTS, AuditRecorder, verify, verify_store
from bastion.audit import events as ev
from bastion.audit.recorder import MAX_DETAIL, sanitize
from bastion.core.records import AuditRecord, StoredAuditRecord
from bastion.store import Store, open_store
from bastion.store.memory import MemoryAuditStore

REQUIRED = {
    "call.forwarded", "call.failed", "call.rejected", "call.denied", "session.created", "session.deleted",
    "session.expired", "notification.forwarded", "response.forwarded", "stream.opened", "stream.closed",
    "upstream.started", "upstream.exited", "upstream.restarted", "config.loaded", "server.started",
    "server.stopped",
}  # fmt: skip


def rec(i: int = 0, event: str = ev.CALL_FORWARDED, **kw: object) -> AuditRecord:
    return AuditRecord(ts=1_700_000_000.0 + i, event=event, trace_id=f"t{i}", **kw)  # type: ignore[arg-type]


class BatchLog(MemoryAuditStore):
    """A real memory audit store that also remembers the size of every batch it got."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[int] = []

    async def append(self, records: Sequence[AuditRecord]) -> list[StoredAuditRecord]:
        self.batches.append(len(records))
        return await super().append(records)


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[tuple[Store, Path]]:
    path = tmp_path / "audit.db"
    store = await open_store(f"sqlite:///{path}?timeout=0.05")
    try:
        yield store, path
    finally:
        await store.close()


class WriteLock:
    """Hold SQLite's write lock from a second connection, like a stuck writer would."""

    def __init__(self, path: Path) -> None:
        self._conn = sqlite3.connect(path, isolation_level=None)
        self._conn.execute("BEGIN EXCLUSIVE")

    def release(self) -> None:
        self._conn.execute("COMMIT")
        self._conn.close()


async def wait_until(condition: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


def test_vocabulary_is_closed_and_complete() -> None:
    assert REQUIRED <= EVENTS
    assert all(e.count(".") == 1 and e == e.lower() for e in EVENTS)
    recorder = AuditRecorder(MemoryAuditStore())
    with pytest.raises(ValueError, match=r"unknown audit event 'call\.teleported'"):
        recorder.record(rec(event="call.teleported"))
    assert recorder.pending == 0


async def test_batches_of_batch_size_and_drain_on_close() -> None:
    store = BatchLog()
    recorder = AuditRecorder(store, batch_size=256, flush_interval=10.0)
    await recorder.start()
    for i in range(600):
        recorder.record(rec(i))
    await recorder.aclose()
    assert store.batches == [256, 256, 88]
    stored = await store.tail(1000)
    assert [s.record.trace_id for s in stored] == [f"t{i}" for i in range(600)]
    assert verify(stored).ok
    assert recorder.written == 600
    assert recorder.pending == 0


async def test_partial_batch_is_flushed_after_flush_interval() -> None:
    store = BatchLog()
    recorder = AuditRecorder(store, batch_size=256, flush_interval=0.05)
    await recorder.start()
    try:
        recorder.record(rec(1))
        recorder.record(rec(2))
        await wait_until(lambda: store.batches, timeout=1.0)
        assert store.batches == [2]
    finally:
        await recorder.aclose()


async def test_close_without_start_still_drains() -> None:
    store = BatchLog()
    recorder = AuditRecorder(store)
    recorder.record(rec(1))
    await recorder.aclose()
    assert len(await store.tail()) == 1


async def test_jsonl_lines_carry_the_chain(tmp_path: Path) -> None:
    store = MemoryAuditStore()
    path = tmp_path / "logs" / "audit.jsonl"
    recorder = AuditRecorder(store, jsonl_path=str(path), batch_size=3)
    await recorder.start()
    for i in range(7):
        recorder.record(rec(i, subject="alice", detail="ü"))
    await recorder.aclose()
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    stored = await store.tail(100)
    assert [line["seq"] for line in lines] == [s.seq for s in stored] == list(range(1, 8))
    assert [line["hash"] for line in lines] == [s.hash for s in stored]
    assert lines[0]["prev_hash"] == "0" * 64
    assert lines[3]["subject"] == "alice"
    assert lines[3]["detail"] == "ü"
    # The file alone verifies: rebuild the records from it.
    rebuilt = [
        StoredAuditRecord(
            seq=x.pop("seq"), prev_hash=x.pop("prev_hash"), hash=x.pop("hash"), record=AuditRecord(**x)
        )
        for x in lines
    ]
    assert verify(rebuilt).ok


async def test_long_detail_is_capped() -> None:
    store = MemoryAuditStore()
    recorder = AuditRecorder(store)
    recorder.record(rec(1, detail="x" * (MAX_DETAIL * 3)))
    await recorder.aclose()
    [stored] = await store.tail()
    assert len(stored.record.detail) == MAX_DETAIL


async def test_failing_store_keeps_records_logs_once_and_recovers(
    sqlite_store: tuple[Store, Path], caplog: pytest.LogCaptureFixture
) -> None:
    store, path = sqlite_store
    recorder = AuditRecorder(store.audit, batch_size=8, flush_interval=0.01)
    await recorder.start()
    lock = WriteLock(path)
    try:
        with caplog.at_level(logging.WARNING, logger="bastion.audit.recorder"):
            for i in range(20):
                recorder.record(rec(i, detail="SECRET-DETAIL-VALUE"))
            await wait_until(lambda: recorder.store_failures >= 3)
            assert recorder.pending == 20
            assert recorder.written == 0
        errors = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 1  # one line per failure burst, not one per retry
        assert "database is locked" in errors[0].getMessage()
    finally:
        lock.release()
    await wait_until(lambda: recorder.written == 20)
    assert any("recovered" in r.getMessage() for r in caplog.records)
    assert "SECRET-DETAIL-VALUE" not in caplog.text
    await recorder.aclose()
    result = await verify_store(store.audit)
    assert result.ok
    assert result.count == 20


async def test_full_queue_drops_loudly_and_the_chain_records_the_gap(
    sqlite_store: tuple[Store, Path], caplog: pytest.LogCaptureFixture
) -> None:
    store, path = sqlite_store
    recorder = AuditRecorder(store.audit, batch_size=4, max_queue=10, flush_interval=0.01)
    await recorder.start()
    lock = WriteLock(path)
    try:
        with caplog.at_level(logging.ERROR, logger="bastion.audit.recorder"):
            for i in range(25):
                recorder.record(rec(i))
        assert recorder.dropped == 15
        assert recorder.pending == 10
        loud = [r.getMessage() for r in caplog.records if "DROPPED" in r.getMessage()]
        assert len(loud) == 1
        assert "event=call.forwarded trace_id=t10" in loud[0]
    finally:
        lock.release()
    await recorder.aclose()
    stored = await store.audit.tail(100)
    assert [s.record.trace_id for s in stored[:10]] == [f"t{i}" for i in range(10)]
    assert stored[-1].record.event == ev.AUDIT_DROPPED
    assert stored[-1].record.detail == "15 records dropped"
    assert verify(stored).ok


async def test_close_gives_up_after_timeout_when_the_store_stays_down(
    sqlite_store: tuple[Store, Path], caplog: pytest.LogCaptureFixture
) -> None:
    store, path = sqlite_store
    recorder = AuditRecorder(store.audit, flush_interval=0.01)
    await recorder.start()
    lock = WriteLock(path)
    try:
        recorder.record(rec(1))
        recorder.record(rec(2))
        started = time.monotonic()
        with caplog.at_level(logging.ERROR, logger="bastion.audit.recorder"):
            await recorder.aclose(timeout=0.3)
        assert time.monotonic() - started < 2.0
        assert recorder.dropped == 2
        assert recorder.pending == 0
        assert "DROPPED ON SHUTDOWN: 2 records" in caplog.text
    finally:
        lock.release()


async def test_retention_purges_old_records_and_says_so() -> None:
    store = MemoryAuditStore()
    now = 1_700_000_000.0 + 10 * 86400
    await store.append([rec(0), rec(1)])  # ten days old
    recorder = AuditRecorder(store, retention_days=7, clock=lambda: now)
    await recorder.start()
    recorder.record(AuditRecord(ts=now, event=ev.SERVER_STARTED, trace_id=""))
    await wait_until(lambda: any(s.record.event == ev.AUDIT_PURGED for s in store._records))
    await recorder.aclose()
    events = [s.record.event for s in await store.tail()]
    assert events == [ev.SERVER_STARTED, ev.AUDIT_PURGED]
    assert (await store.tail())[-1].record.detail.startswith("2 records before")


def test_sanitize_cuts_to_one_short_printable_line() -> None:
    assert sanitize("first\nsecond") == "first"
    assert len(sanitize("y" * 2000)) == 500
    assert sanitize("bell\x07") == "bell\\x07"


def test_record_is_cheap() -> None:
    recorder = AuditRecorder(MemoryAuditStore(), max_queue=1_000_000, batch_size=1_000_000)
    item = rec(1)
    started = time.perf_counter()
    for _ in range(100_000):
        recorder.record(item)
    per_call_us = (time.perf_counter() - started) / 100_000 * 1e6
    assert per_call_us < 20, per_call_us  # typically < 1 µs; generous for slow CI machines
