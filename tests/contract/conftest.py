"""The parametrized ``store`` fixture (memory, SQLite, a real PostgreSQL from
``tests/support/postgres.py``); each test gets its own database."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from bastion.store import Store, open_store
from tests.support.postgres import PgServer


@pytest.fixture
async def pg_url(pg_server: PgServer) -> str:
    """The URL of a fresh, empty database on the throwaway server."""
    return pg_server.url(await pg_server.create_database())


StoreFactory = Callable[[], Awaitable[Store]]


@pytest.fixture(
    params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)],
)
async def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """One URL per backend: the contract suite runs once for each."""
    if request.param == "memory":
        return "memory://"
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/state/bastion.db"
    server: PgServer = request.getfixturevalue("pg_server")
    return server.url(await server.create_database())


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    opened = await open_store(store_url)
    try:
        yield opened
    finally:
        await opened.close()
