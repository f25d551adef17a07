"""Revoked access tokens and shared rate limits, one contract for memory, SQLite and a real
PostgreSQL: the deny list every replica polls (revocations by ``jti``, kept until the token
expires), attempt counters over a sliding window that stay exact when replicas hit the same
key at once, and the 0003 → 0004 migration keeping the registered clients.
"""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from bastion.core.records import ClientRecord
from bastion.store import Store, open_store
from bastion.store.factory import MIGRATIONS_DIR, current_revision, head_revision
from bastion.store.sql import SqlStore, create_engine
from bastion.store.sql_engine import write_transaction

LOGIN = "login:user:alice"


async def _two_replicas(store_url: str) -> list[Store]:
    first = await open_store(store_url)
    # memory: two handles on the same store (one process); SQL: two engines, two pools
    return [first, first] if store_url == "memory://" else [first, await open_store(store_url)]


async def _close(replicas: list[Store]) -> None:
    for replica in {id(r): r for r in replicas}.values():
        await replica.close()


# -- revoked access tokens --------------------------------------------------------------------


async def test_revocations_are_listed_in_revocation_order(store: Store) -> None:
    await store.revoked_tokens.revoke("jti-b", expires_at=500.0, now=120.0)
    await store.revoked_tokens.revoke("jti-a", expires_at=400.0, now=110.0)
    await store.revoked_tokens.revoke("jti-c", expires_at=600.0, now=130.0)
    assert await store.revoked_tokens.revoked_since(0.0, now=100.0) == [
        ("jti-a", 400.0, 110.0),
        ("jti-b", 500.0, 120.0),
        ("jti-c", 600.0, 130.0),
    ]
    # since is inclusive: a poller asking from its last revoked_at sees that row again
    assert [r[0] for r in await store.revoked_tokens.revoked_since(120.0, now=100.0)] == ["jti-b", "jti-c"]
    assert await store.revoked_tokens.revoked_since(130.5, now=100.0) == []


async def test_tokens_past_their_expiry_are_not_listed(store: Store) -> None:
    await store.revoked_tokens.revoke("short", expires_at=200.0, now=100.0)
    await store.revoked_tokens.revoke("long", expires_at=900.0, now=100.0)
    assert [r[0] for r in await store.revoked_tokens.revoked_since(0.0, now=199.9)] == ["long", "short"]
    # expires_at is exclusive: at 200 the signature check already refuses "short"
    assert [r[0] for r in await store.revoked_tokens.revoked_since(0.0, now=200.0)] == ["long"]


async def test_revoking_twice_keeps_the_first_revocation(store: Store) -> None:
    await store.revoked_tokens.revoke("j1", expires_at=500.0, now=100.0)
    await store.revoked_tokens.revoke("j1", expires_at=800.0, now=150.0)
    assert await store.revoked_tokens.revoked_since(0.0, now=0.0) == [("j1", 500.0, 100.0)]
    assert await store.revoked_tokens.revoked_since(101.0, now=0.0) == []  # it did not move


async def test_purge_removes_expired_revocations(store: Store) -> None:
    for i, expires in enumerate([100.0, 150.0, 200.0]):
        await store.revoked_tokens.revoke(f"j{i}", expires_at=expires, now=50.0)
    assert await store.revoked_tokens.purge_expired(now=150.0) == 2
    assert await store.revoked_tokens.purge_expired(now=150.0) == 0
    assert await store.revoked_tokens.revoked_since(0.0, now=0.0) == [("j2", 200.0, 50.0)]
    # a purged jti can be revoked again (a new row, with the new time)
    await store.revoked_tokens.revoke("j0", expires_at=1000.0, now=300.0)
    assert await store.revoked_tokens.revoked_since(300.0, now=0.0) == [("j0", 1000.0, 300.0)]


async def test_a_revocation_on_one_replica_reaches_the_other(store_url: str) -> None:
    replicas = await _two_replicas(store_url)
    try:
        await asyncio.gather(
            *(replicas[i % 2].revoked_tokens.revoke("j1", 500.0, now=100.0 + i) for i in range(6)),
            replicas[1].revoked_tokens.revoke("j2", 500.0, now=99.0),
        )
        rows = await replicas[0].revoked_tokens.revoked_since(0.0, now=200.0)
        assert [r[0] for r in rows] == ["j2", "j1"]
        assert 100.0 <= rows[1][2] <= 105.0  # exactly one of the racing revocations stuck
    finally:
        await _close(replicas)


# -- rate limits ------------------------------------------------------------------------------


async def test_hits_are_counted_over_a_sliding_window(store: Store) -> None:
    assert await store.throttle.hit(LOGIN, now=0.0, window_s=15.0) == 1
    assert await store.throttle.hit(LOGIN, now=10.0, window_s=15.0) == 2
    assert await store.throttle.hit(LOGIN, now=15.0, window_s=15.0) == 2  # (0, 15]: 0 has left
    assert await store.throttle.hit(LOGIN, now=15.0, window_s=15.0) == 3  # same instant counts twice
    assert await store.throttle.hit(LOGIN, now=100.0, window_s=15.0) == 1
    # a longer window over the same attempts (the caller picks the window per check)
    assert await store.throttle.hit(LOGIN, now=100.0, window_s=1000.0) == 6


async def test_count_records_nothing(store: Store) -> None:
    assert await store.throttle.count(LOGIN, now=10.0, window_s=15.0) == 0
    await store.throttle.hit(LOGIN, now=0.0, window_s=15.0)
    await store.throttle.hit(LOGIN, now=10.0, window_s=15.0)
    assert await store.throttle.count(LOGIN, now=10.0, window_s=15.0) == 2
    assert await store.throttle.count(LOGIN, now=10.0, window_s=15.0) == 2
    assert await store.throttle.count(LOGIN, now=15.0, window_s=15.0) == 1  # (0, 15]
    assert await store.throttle.count(LOGIN, now=5.0, window_s=15.0) == 1  # 10 is after now
    assert await store.throttle.count("login:user:bob", now=10.0, window_s=15.0) == 0
    assert await store.throttle.hit(LOGIN, now=11.0, window_s=15.0) == 3


async def test_keys_are_counted_apart(store: Store) -> None:
    keys = [LOGIN, "login:user:bob", "login:ip:127.0.0.1", "dcr:ip:::1", "login:user:ü " + "x" * 300]
    for key in keys:
        assert await store.throttle.hit(key, now=1.0, window_s=60.0) == 1
    assert await store.throttle.hit(LOGIN, now=2.0, window_s=60.0) == 2
    assert await store.throttle.hit("login:user:bob", now=2.0, window_s=60.0) == 2


async def test_attempts_after_now_are_not_counted(store: Store) -> None:
    # another replica with a clock ahead recorded 100; this one says it is 50
    await store.throttle.hit(LOGIN, now=100.0, window_s=60.0)
    assert await store.throttle.hit(LOGIN, now=50.0, window_s=60.0) == 1
    assert await store.throttle.hit(LOGIN, now=101.0, window_s=60.0) == 3


async def test_reset_forgets_one_key(store: Store) -> None:
    for now in (1.0, 2.0, 3.0):
        await store.throttle.hit(LOGIN, now=now, window_s=60.0)
        await store.throttle.hit("login:ip:10.0.0.1", now=now, window_s=60.0)
    await store.throttle.reset(LOGIN)
    await store.throttle.reset("never-seen")
    assert await store.throttle.hit(LOGIN, now=4.0, window_s=60.0) == 1
    assert await store.throttle.hit("login:ip:10.0.0.1", now=4.0, window_s=60.0) == 4


async def test_purge_before_drops_old_attempts(store: Store) -> None:
    for now in (10.0, 20.0, 30.0):
        await store.throttle.hit(LOGIN, now=now, window_s=5.0)
    await store.throttle.hit("other", now=15.0, window_s=5.0)
    assert await store.throttle.purge_before(20.0) == 2  # ts < 20
    assert await store.throttle.purge_before(20.0) == 0
    assert await store.throttle.hit(LOGIN, now=30.0, window_s=1000.0) == 3  # 20, 30, 30


async def test_parallel_hits_from_two_replicas_get_distinct_counts(store_url: str) -> None:
    replicas = await _two_replicas(store_url)
    try:
        await replicas[0].throttle.hit(LOGIN, now=99.0, window_s=60.0)
        for round_ in range(2):
            counts = await asyncio.gather(
                *(replicas[i % 2].throttle.hit(LOGIN, now=100.0 + round_, window_s=60.0) for i in range(12))
            )
            # nobody saw a count someone else saw: each burst is counted exactly
            first = 2 + 12 * round_
            assert sorted(counts) == list(range(first, first + 12))
    finally:
        await _close(replicas)


# -- migration --------------------------------------------------------------------------------


def _upgrade_to(revision: str) -> object:
    def run(connection: sa.Connection) -> None:
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
        config.attributes["connection"] = connection
        command.upgrade(config, revision)

    return run


def _indexes(connection: sa.Connection) -> dict[str, list[list[str | None]]]:
    inspector = sa.inspect(connection)
    return {
        table: [list(ix["column_names"]) for ix in inspector.get_indexes(table)]
        for table in ("revoked_tokens", "throttle_hits")
    }


async def test_a_0003_database_upgrades_and_keeps_its_clients(store_url: str) -> None:
    if store_url == "memory://":
        pytest.skip("a memory store has no schema to migrate")
    engine = create_engine(store_url)
    async with write_transaction(engine) as conn:
        await conn.run_sync(_upgrade_to("0003"))  # type: ignore[arg-type]
    assert await current_revision(engine) == "0003"
    old = SqlStore(engine)  # the client store only touches 0003's tables
    registered = ClientRecord("c1", "dcr", "App", ("http://127.0.0.1/cb",), ("authorization_code",), "none")
    await old.clients.put(registered)
    await old.close()

    store = await open_store(store_url)
    try:
        assert isinstance(store, SqlStore)
        assert await current_revision(store.engine) == head_revision()
        assert await store.clients.get("c1") == registered
        async with store.engine.connect() as conn:
            indexes = await conn.run_sync(_indexes)
        assert ["revoked_at"] in indexes["revoked_tokens"]
        assert ["key", "ts"] in indexes["throttle_hits"]
        await store.revoked_tokens.revoke("j1", 500.0, now=100.0)
        assert await store.throttle.hit(LOGIN, now=1.0, window_s=1.0) == 1
    finally:
        await store.close()
