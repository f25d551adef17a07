"""SQLite audit appends in one thread hop.

Through SQLAlchemy's async engine over aiosqlite, one append is about fifteen round trips
between the event loop and aiosqlite's worker thread (connect, BEGIN, SELECT, INSERT, UPDATE,
COMMIT, each with cursor set-up and teardown): measured ~3 ms of CPU per batch, which at the
default flush interval was the single largest cost on the request path. Here the whole
transaction runs on the standard library's ``sqlite3`` in one call to a worker thread, with
the same chain arithmetic as every other store (bastion.store.hashing).
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path

from bastion.core.records import AuditRecord, StoredAuditRecord
from bastion.store.hashing import extend_chain
from bastion.store.tables import HEAD_ID


class SqliteAuditWriter:
    def __init__(self, path: Path, insert_sql: str, busy_timeout: float) -> None:
        self._path = path
        self._insert_sql = insert_sql
        self._busy_timeout = busy_timeout
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()  # to_thread may use any pool thread: one append at a time

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = sqlite3.connect(
                self._path, timeout=self._busy_timeout, isolation_level=None, check_same_thread=False
            )
            conn.execute("PRAGMA synchronous=NORMAL")  # the file is already in WAL mode
            self._conn = conn
        return self._conn

    def _append(self, records: Sequence[AuditRecord]) -> list[StoredAuditRecord]:
        with self._lock:
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")  # the write lock first: appends never fork the chain
            try:
                row = conn.execute("SELECT seq, hash FROM audit_head WHERE id = ?", (HEAD_ID,)).fetchone()
                stored, rows, seq, prev = extend_chain(int(row[0]), str(row[1]), records)
                conn.executemany(self._insert_sql, rows)
                conn.execute("UPDATE audit_head SET seq = ?, hash = ? WHERE id = ?", (seq, prev, HEAD_ID))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            return stored

    async def append(self, records: Sequence[AuditRecord]) -> list[StoredAuditRecord]:
        return await asyncio.to_thread(self._append, records)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
