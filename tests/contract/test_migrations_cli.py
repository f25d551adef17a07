"""Schema migrations on SQLite and PostgreSQL, and the `bastion db` / `bastion audit` commands."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from bastion.cli.main import app
from bastion.core.records import AuditRecord
from bastion.store import SchemaOutOfDate, open_store, upgrade_async
from bastion.store.factory import current_revision, head_revision
from bastion.store.sql import SqlStore, create_engine, normalize_url

runner = CliRunner()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def sql_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/nested/dir/bastion.db"
    server = request.getfixturevalue("pg_server")  # conftest.PgServer
    url: str = server.url(asyncio.run(server.create_database()))
    return url


def test_urls_are_normalized_to_async_drivers() -> None:
    assert normalize_url("sqlite:///./x.db").drivername == "sqlite+aiosqlite"
    assert normalize_url("postgresql://u:p@h/db").drivername == "postgresql+asyncpg"
    assert normalize_url("postgresql+asyncpg://u@h/db").drivername == "postgresql+asyncpg"
    with pytest.raises(ValueError, match="unsupported"):
        normalize_url("mysql://h/db")


async def test_sqlite_file_gets_its_directory_and_wal(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "bastion.db"
    store = await open_store(f"sqlite:///{path}")
    try:
        assert path.exists()
        assert isinstance(store, SqlStore)
        async with store.engine.connect() as conn:
            assert (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar() == "wal"
    finally:
        await store.close()


async def test_migrations_are_idempotent(sql_url: str) -> None:
    for _ in range(2):
        store = await open_store(sql_url)
        await store.audit.append([AuditRecord(ts=1.0, event="server.started", trace_id="")])
        await store.close()
    assert await upgrade_async(sql_url) == head_revision()
    store = await open_store(sql_url, migrate=False)
    try:
        assert [s.seq for s in await store.audit.tail()] == [1, 2]
    finally:
        await store.close()


async def test_read_only_open_refuses_an_unmigrated_database(sql_url: str) -> None:
    with pytest.raises(SchemaOutOfDate, match="bastion db upgrade"):
        await open_store(sql_url, migrate=False)
    engine = create_engine(sql_url)
    try:
        assert await current_revision(engine) is None
    finally:
        await engine.dispose()


def _config(tmp_path: Path, url: str) -> Path:
    path = tmp_path / "bastion.yaml"
    path.write_text(f"storage: '{url}'\n")
    return path


# The CLI tests are sync: the commands start their own event loop with asyncio.run.


def test_db_upgrade_command(sql_url: str, tmp_path: Path) -> None:
    config = _config(tmp_path, sql_url)
    for _ in range(2):  # a second run finds nothing to do
        result = runner.invoke(app, ["db", "upgrade", "-c", str(config)])
        assert result.exit_code == 0, result.output
        assert f"schema revision {head_revision()}" in result.output

    async def inspect() -> tuple[str | None, set[str]]:
        engine = create_engine(sql_url)
        try:
            async with engine.connect() as conn:
                tables = await conn.run_sync(lambda c: set(sa.inspect(c).get_table_names()))
            return await current_revision(engine), tables
        finally:
            await engine.dispose()

    revision, tables = asyncio.run(inspect())
    assert revision == head_revision()
    assert {"audit_records", "audit_head", "sessions"} <= tables


async def _fill(url: str) -> None:
    store = await open_store(url)
    await store.audit.append(
        [
            AuditRecord(ts=1_700_000_000.0 + i, event="call.forwarded", trace_id=f"t{i}", name=f"tool_{i}")
            for i in range(1, 6)
        ]
    )
    await store.close()


async def _forge(url: str) -> None:
    engine = create_engine(url)
    async with engine.begin() as conn:
        await conn.execute(sa.text("UPDATE audit_records SET name = 'forged' WHERE seq = 2"))
    await engine.dispose()


def test_audit_tail_and_verify_commands(sql_url: str, tmp_path: Path) -> None:
    config = _config(tmp_path, sql_url)
    asyncio.run(_fill(sql_url))

    table = runner.invoke(app, ["audit", "tail", "-n", "2", "-c", str(config)])
    assert table.exit_code == 0, table.output
    assert "tool_5" in table.output
    assert "tool_4" in table.output
    assert "tool_3" not in table.output

    lines = runner.invoke(app, ["audit", "tail", "-n", "3", "--json", "-c", str(config)])
    assert lines.exit_code == 0, lines.output
    rows = [json.loads(line) for line in lines.stdout.splitlines()]
    assert [r["seq"] for r in rows] == [3, 4, 5]
    assert rows[-1]["name"] == "tool_5"
    assert len(rows[-1]["hash"]) == 64

    ok = runner.invoke(app, ["audit", "verify", "-c", str(config)])
    assert ok.exit_code == 0, ok.output
    assert "ok: 5 records" in ok.output

    asyncio.run(_forge(sql_url))
    broken = runner.invoke(app, ["audit", "verify", "-c", str(config)])
    assert broken.exit_code == 1
    assert "BROKEN at seq 2" in broken.output


def test_audit_tail_on_an_unmigrated_database_says_what_to_do(tmp_path: Path) -> None:
    db = tmp_path / "empty.db"
    sqlite3.connect(db).close()
    result = runner.invoke(app, ["audit", "tail", "-c", str(_config(tmp_path, f"sqlite:///{db}"))])
    assert result.exit_code == 2
    assert "bastiondbupgrade" in "".join(result.output.split())  # rich folds long paths anywhere
