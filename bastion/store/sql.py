"""SQLAlchemy 2 async Store for SQLite (aiosqlite, embedded default) and Postgres (asyncpg).

One code path for both. The audit chain is extended inside one transaction that
first locks the chain-head row: ``SELECT ... FOR UPDATE`` on Postgres (replicas
sharing the database queue up there) and ``BEGIN IMMEDIATE`` on SQLite (the
database-wide write lock, taken before the head is read). So concurrent writers
never read the same head, seq has no gaps, and a failed append leaves nothing behind.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from bastion.core.records import AuditRecord, SessionRecord, StoredAuditRecord
from bastion.store.hashing import FIELD_NAMES, link_hash, normalize
from bastion.store.sqlite_audit import SqliteAuditWriter
from bastion.store.tables import HEAD_ID, audit_head, audit_records, sessions

log = logging.getLogger(__name__)

_SQLITE_DRIVERS = {"sqlite", "sqlite+aiosqlite"}
_POSTGRES_DRIVERS = {"postgresql", "postgres", "postgresql+asyncpg"}
# Seconds a SQLite writer waits for the write lock (sqlite3's ``timeout`` is its busy timeout).
SQLITE_BUSY_TIMEOUT = 5.0
_BEGIN_OPTION = "bastion_sqlite_begin"


def normalize_url(url: str) -> URL:
    """``sqlite:///x`` → ``sqlite+aiosqlite:///x``, ``postgresql://`` → ``postgresql+asyncpg://``."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ValueError(f"storage URL is not a database URL: {exc}") from None
    if parsed.drivername in _SQLITE_DRIVERS:
        return parsed.set(drivername="sqlite+aiosqlite")
    if parsed.drivername in _POSTGRES_DRIVERS:
        return parsed.set(drivername="postgresql+asyncpg")
    raise ValueError(f"unsupported storage URL scheme {parsed.drivername!r}: use sqlite:/// or postgresql://")


def redact_url(url: str) -> str:
    """The URL with its password masked, for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<invalid URL>"


def _sqlite_file(url: URL) -> Path | None:
    database = url.database or ""
    if database in ("", ":memory:") or database.startswith("file:") or url.query.get("mode") == "memory":
        return None
    return Path(database)


def create_engine(url: str) -> AsyncEngine:
    """An AsyncEngine for ``url``; SQLite gets its directory, WAL, busy timeout and BEGIN control."""
    parsed = normalize_url(url)
    # hide_parameters: SQL errors end up in logs, and parameters are audit values and session data.
    if parsed.drivername.startswith("postgresql"):
        return create_async_engine(
            parsed,
            hide_parameters=True,
            connect_args={"server_settings": {"application_name": "bastion"}},
        )
    path = _sqlite_file(parsed)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    connect_args: dict[str, Any] = {}
    if "timeout" not in parsed.query:
        connect_args["timeout"] = SQLITE_BUSY_TIMEOUT
    engine = create_async_engine(parsed, hide_parameters=True, connect_args=connect_args)
    event.listen(engine.sync_engine, "connect", _sqlite_on_connect)
    event.listen(engine.sync_engine, "begin", _sqlite_on_begin)
    return engine


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    # Take BEGIN away from the sqlite3 module so _sqlite_on_begin can say IMMEDIATE
    # (SQLAlchemy's documented recipe for pysqlite/aiosqlite).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    # WAL: readers never block the writer. synchronous=NORMAL: in WAL mode a crash of the
    # process loses nothing and the file never corrupts; a power cut may lose the last
    # commits, the same order of loss as the recorder's in-memory queue (see the report
    # numbers: FULL costs an fsync per commit).
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _sqlite_on_begin(conn: sa.Connection) -> None:
    mode = conn.get_execution_options().get(_BEGIN_OPTION, "DEFERRED")
    conn.exec_driver_sql(f"BEGIN {mode}")


@asynccontextmanager
async def write_transaction(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A transaction that writes: on SQLite it holds the write lock from its first statement."""
    async with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            await conn.execution_options(**{_BEGIN_OPTION: "IMMEDIATE"})
        async with conn.begin():
            yield conn


def _stored(row: sa.RowMapping) -> StoredAuditRecord:
    fields = {name: row[name] for name in FIELD_NAMES}
    return StoredAuditRecord(
        seq=row["seq"], record=AuditRecord(**fields), prev_hash=row["prev_hash"], hash=row["hash"]
    )


class SqlAuditStore:
    """The audit chain in ``audit_records`` with its head in ``audit_head``."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        columns = ("seq", *FIELD_NAMES, "prev_hash", "hash")
        if engine.dialect.paramstyle == "qmark":
            marks = ", ".join("?" for _ in columns)
        else:  # asyncpg: numeric_dollar
            marks = ", ".join(f"${i}" for i in range(1, len(columns) + 1))
        # built from constant column names only: no value is ever formatted into SQL
        self._sqlite: SqliteAuditWriter | None = None
        path = _sqlite_file(engine.url) if engine.dialect.name == "sqlite" else None
        self._insert_sql = f"INSERT INTO audit_records ({', '.join(columns)}) VALUES ({marks})"  # noqa: S608
        if path is not None:
            timeout = float(engine.url.query.get("timeout", SQLITE_BUSY_TIMEOUT))  # type: ignore[arg-type]
            self._sqlite = SqliteAuditWriter(path, self._insert_sql, timeout)

    def close(self) -> None:
        if self._sqlite is not None:
            self._sqlite.close()

    async def append(self, records: Sequence[AuditRecord]) -> list[StoredAuditRecord]:
        if not records:
            return []
        cleaned = [normalize(r) for r in records]
        if self._sqlite is not None:
            return await self._sqlite.append(cleaned)
        async with write_transaction(self._engine) as conn:
            head = (
                await conn.execute(
                    sa.select(audit_head.c.seq, audit_head.c.hash)
                    .where(audit_head.c.id == HEAD_ID)
                    .with_for_update()
                )
            ).one()
            seq, prev = int(head.seq), str(head.hash)
            stored: list[StoredAuditRecord] = []
            rows: list[tuple[object, ...]] = []
            for record in cleaned:
                seq += 1
                digest = link_hash(prev, record)
                stored.append(StoredAuditRecord(seq=seq, record=record, prev_hash=prev, hash=digest))
                rows.append((seq, *record, prev, digest))
                prev = digest
            # Straight to the driver: SQLAlchemy's per-row parameter processing cost more than
            # the hashing and the insert together (measured ~25 µs per record).
            await conn.exec_driver_sql(self._insert_sql, rows)
            await conn.execute(
                sa.update(audit_head).where(audit_head.c.id == HEAD_ID).values(seq=seq, hash=prev)
            )
        return stored

    async def tail(self, limit: int = 50, after_seq: int | None = None) -> list[StoredAuditRecord]:
        if limit <= 0:
            return []
        query = sa.select(audit_records)
        if after_seq is None:
            query = query.order_by(audit_records.c.seq.desc()).limit(limit)
        else:
            query = query.where(audit_records.c.seq > after_seq).order_by(audit_records.c.seq).limit(limit)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        stored = [_stored(row) for row in rows]
        return stored[::-1] if after_seq is None else stored

    async def last(self) -> StoredAuditRecord | None:
        query = sa.select(audit_records).order_by(audit_records.c.seq.desc()).limit(1)
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).mappings().first()
        return _stored(row) if row is not None else None

    async def purge_before(self, ts: float) -> int:
        # Delete the prefix up to the first record at/after ts (records are appended in
        # roughly, not strictly, ts order): what remains is still one contiguous chain.
        first_kept = sa.select(sa.func.min(audit_records.c.seq)).where(audit_records.c.ts >= ts)
        async with write_transaction(self._engine) as conn:
            keep_from = (await conn.execute(first_kept)).scalar_one_or_none()
            query = sa.delete(audit_records)
            if keep_from is not None:
                query = query.where(audit_records.c.seq < keep_from)
            result = await conn.execute(query)
        return int(result.rowcount)


def _dumps(value: dict[str, Any]) -> str:
    return orjson.dumps(value).decode()


class SqlSessionStore:
    """Sessions keyed by session_id; capability/info objects stored as JSON text."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def put(self, session: SessionRecord) -> None:
        row = {
            "session_id": session.session_id,
            "endpoint": session.endpoint,
            "subject": session.subject,
            "protocol_version": session.protocol_version,
            "mode": session.mode,
            "upstream_session_id": session.upstream_session_id,
            "client_capabilities": _dumps(session.client_capabilities),
            "client_info": _dumps(session.client_info),
            "created_at": float(session.created_at),
            "last_seen": float(session.last_seen),
            "replica": session.replica,
        }
        insert = pg_insert if self._engine.dialect.name == "postgresql" else sqlite_insert
        stmt = insert(sessions).values(**row)
        stmt = stmt.on_conflict_do_update(
            index_elements=[sessions.c.session_id],
            set_={name: stmt.excluded[name] for name in row if name != "session_id"},
        )
        async with write_transaction(self._engine) as conn:
            await conn.execute(stmt)

    async def get(self, session_id: str) -> SessionRecord | None:
        query = sa.select(sessions).where(sessions.c.session_id == session_id)
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).mappings().first()
        if row is None:
            return None
        return SessionRecord(
            session_id=row["session_id"],
            endpoint=row["endpoint"],
            subject=row["subject"],
            protocol_version=row["protocol_version"],
            mode=row["mode"],
            upstream_session_id=row["upstream_session_id"],
            client_capabilities=orjson.loads(row["client_capabilities"]),
            client_info=orjson.loads(row["client_info"]),
            created_at=row["created_at"],
            last_seen=row["last_seen"],
            replica=row["replica"],
        )

    async def touch(self, session_id: str, now: float) -> None:
        # last_seen only moves forward: replicas with skewed clocks must not shorten a session.
        query = (
            sa.update(sessions)
            .where(sessions.c.session_id == session_id, sessions.c.last_seen < now)
            .values(last_seen=now)
        )
        async with write_transaction(self._engine) as conn:
            await conn.execute(query)

    async def delete(self, session_id: str) -> bool:
        async with write_transaction(self._engine) as conn:
            result = await conn.execute(sa.delete(sessions).where(sessions.c.session_id == session_id))
        return bool(result.rowcount)

    async def expire(self, older_than: float) -> int:
        async with write_transaction(self._engine) as conn:
            result = await conn.execute(sa.delete(sessions).where(sessions.c.last_seen < older_than))
        return int(result.rowcount)


class SqlStore:
    """The Store protocol over one AsyncEngine (owned: ``close()`` disposes it)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._audit = SqlAuditStore(engine)
        self._sessions = SqlSessionStore(engine)

    @property
    def audit(self) -> SqlAuditStore:
        return self._audit

    @property
    def sessions(self) -> SqlSessionStore:
        return self._sessions

    async def close(self) -> None:
        self._audit.close()
        await self.engine.dispose()
