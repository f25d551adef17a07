"""Engines and write transactions for the SQL stores (SQLite via aiosqlite, Postgres via asyncpg).

Split out of ``sql.py`` so that every SQL store module (``sql``, ``sql_authz``,
``sql_users``) shares one engine setup without importing each other.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

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


def sqlite_file(url: URL) -> Path | None:
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
    path = sqlite_file(parsed)
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
