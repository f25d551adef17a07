"""Open a Store from the ``storage`` URL and keep its schema at the newest revision.

Alembic runs programmatically (no alembic.ini): the script location points into
this package. Migrations run on the store's own async engine through
``AsyncConnection.run_sync``: asyncpg is the only Postgres driver Bastion ships,
and a second, sync driver (psycopg) would be one more dependency to install and keep
in step for a command that runs a few DDL statements once per release.

Replicas that start together must not both create the tables, so the migration runs
in one transaction that first takes a lock: ``pg_advisory_xact_lock`` on Postgres,
``BEGIN IMMEDIATE`` on SQLite. Both databases have transactional DDL, so the lock,
the schema change and the version row commit together.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.ext.asyncio import AsyncEngine

from bastion.store.base import Store
from bastion.store.memory import MemoryStore
from bastion.store.sql import SqlStore, create_engine, redact_url
from bastion.store.sql_engine import write_transaction
from bastion.store.tables import VERSION_TABLE

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
MEMORY_URL = "memory://"
# Any constant works; it only has to be the same for every replica (it spells "bastion").
_MIGRATION_LOCK_KEY = 0x62617374696F6E


class SchemaOutOfDate(RuntimeError):
    """The database schema is not at this version's revision; run ``bastion db upgrade``."""


def _alembic_config(connection: sa.Connection | None = None) -> Config:
    config = Config()
    # ConfigParser interpolation would read a '%' in the path as a placeholder.
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The newest revision shipped with this version of Bastion."""
    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    if head is None:
        raise RuntimeError("no migrations found in the package")
    return head


def _current_revision(connection: sa.Connection) -> str | None:
    context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
    return context.get_current_revision()


def _upgrade_on(connection: sa.Connection) -> None:
    command.upgrade(_alembic_config(connection), "head")


async def upgrade_engine(engine: AsyncEngine) -> str:
    """Bring the schema to head under the migration lock; returns the revision."""
    async with write_transaction(engine) as conn:
        if engine.dialect.name == "postgresql":
            await conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_MIGRATION_LOCK_KEY)))
        before = await conn.run_sync(_current_revision)
        target = head_revision()
        if before != target:
            await conn.run_sync(_upgrade_on)
            log.info("database schema upgraded from %s to %s", before or "empty", target)
    return target


async def current_revision(engine: AsyncEngine) -> str | None:
    """The revision the database is at, or None for an empty database."""
    async with engine.connect() as conn:
        return await conn.run_sync(_current_revision)


async def open_store(url: str, *, migrate: bool = True) -> Store:
    """Open the store at ``url`` (``memory://``, ``sqlite:///...``, ``postgresql://...``).

    With ``migrate`` the schema is brought to head first; without it a database that
    is not at head raises SchemaOutOfDate (so read-only commands never change the schema).
    """
    if url == MEMORY_URL:
        log.warning("using the in-memory store: every record is lost when the process exits (tests only)")
        return MemoryStore()
    engine = create_engine(url)
    try:
        if migrate:
            await upgrade_engine(engine)
        else:
            revision = await current_revision(engine)
            if revision != head_revision():
                raise SchemaOutOfDate(
                    f"database {redact_url(url)} is at schema revision {revision or 'none'}, "
                    f"this version needs {head_revision()}: run `bastion db upgrade`"
                )
    except BaseException:
        await engine.dispose()
        raise
    return SqlStore(engine)


async def upgrade_async(url: str) -> str:
    """Bring the database at ``url`` to the newest schema; returns the revision."""
    if url == MEMORY_URL:
        return head_revision()
    engine = create_engine(url)
    try:
        return await upgrade_engine(engine)
    finally:
        await engine.dispose()


def upgrade(url: str) -> str:
    """Synchronous :func:`upgrade_async` for the CLI (starts its own event loop)."""
    return asyncio.run(upgrade_async(url))
