"""The vault store, one contract for memory, SQLite and a real PostgreSQL (issue #7): records
stored by (user, connection) and replaced only by compare-and-set on their version; a new
connect moving the version past the old one; the refresh lease taken by exactly one of many
tasks and replicas, re-entered by its owner, taken over when it expires; uses recorded without
a new version; records found by master key for a rotation; the 0007 → 0008 migration.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from bastion.core.records import VaultRecord
from bastion.store import Store, open_store
from bastion.store.factory import MIGRATIONS_DIR, current_revision, head_revision
from bastion.store.sql import SqlStore, create_engine
from bastion.store.sql_engine import write_transaction

# What envelope sealing produces: base64url text, a few hundred bytes to a few KB
SEALED = "v1." + base64.urlsafe_b64encode(bytes(range(256)) * 8).decode()
WRAPPED = "v1." + base64.urlsafe_b64encode(bytes(60)).decode()


def record(user_id: str = "u1", connection: str = "salesforce", **kw: object) -> VaultRecord:
    fields: dict[str, object] = {
        "user_id": user_id,
        "connection": connection,
        "kind": "oauth",
        "key_id": "0123456789abcdef",
        "wrapped_key": WRAPPED,
        "sealed": SEALED,
        "scopes": ("api", "refresh_token", "openid"),  # the provider's order, kept
        "expires_at": 1_700_003_600.25,
        "account": "alice@example.my.salesforce.com",
        "created_at": 1_700_000_000.5,
        "updated_at": 1_700_000_000.5,
    }
    fields.update(kw)
    return VaultRecord(**fields)  # type: ignore[arg-type]


async def test_put_then_get_returns_every_field(store: Store) -> None:
    full = record(
        status="reconnect", version=3, last_used_at=1_700_000_100.75, lease_owner="r1", lease_until=99.5
    )
    await store.vault.put(full)
    assert await store.vault.get("u1", "salesforce") == full
    bare = record("u2", "github", kind="api_key", scopes=(), expires_at=None, account=None)
    await store.vault.put(bare)
    assert await store.vault.get("u2", "github") == bare
    assert await store.vault.get("u1", "github") is None
    assert await store.vault.get("u2", "salesforce") is None


async def test_list_for_user_is_ordered_by_connection(store: Store) -> None:
    for connection in ["zendesk", "github", "salesforce"]:
        await store.vault.put(record("u1", connection))
    await store.vault.put(record("u2", "asana"))
    listed = await store.vault.list_for_user("u1")
    assert [r.connection for r in listed] == ["github", "salesforce", "zendesk"]
    assert await store.vault.list_for_user("nobody") == []


async def test_a_new_connect_moves_the_version_past_the_old_one(store: Store) -> None:
    await store.vault.put(record(version=4))
    await store.vault.put(record(sealed="v1.new", version=1))  # the user connected again
    stored = await store.vault.get("u1", "salesforce")
    assert stored == record(sealed="v1.new", version=5)
    # a refresh prepared against the old credential cannot overwrite the new one
    assert not await store.vault.replace(record(sealed="v1.refreshed-old", version=5), expected_version=4)
    # a put with a version above the stored one keeps it
    await store.vault.put(record(version=9))
    assert (await store.vault.get("u1", "salesforce")) == record(version=9)


async def test_replace_is_compare_and_set_on_the_version(store: Store) -> None:
    await store.vault.put(record())
    assert await store.vault.replace(record(sealed="v1.second", version=2, updated_at=5.0), 1)
    assert await store.vault.get("u1", "salesforce") == record(sealed="v1.second", version=2, updated_at=5.0)
    # a stale writer (it read version 1) is refused and changes nothing
    assert not await store.vault.replace(record(sealed="v1.stale", version=2), 1)
    assert (await store.vault.get("u1", "salesforce")) == record(
        sealed="v1.second", version=2, updated_at=5.0
    )
    # gone: refused, not re-created
    assert not await store.vault.replace(record("u9", version=2), 1)
    assert await store.vault.get("u9", "salesforce") is None
    # the version must move forward, or a later compare-and-set could succeed twice
    with pytest.raises(ValueError, match="version"):
        await store.vault.replace(record(version=2), 2)


async def test_concurrent_replaces_of_one_version_have_exactly_one_winner(store_url: str) -> None:
    first = await open_store(store_url)
    replicas = [first, first] if store_url == "memory://" else [first, await open_store(store_url)]
    try:
        await first.vault.put(record())
        attempts = [
            replicas[i % 2].vault.replace(record(sealed=f"v1.{i}", version=2), expected_version=1)
            for i in range(8)
        ]
        results = await asyncio.gather(*attempts)
        assert results.count(True) == 1
        winner = results.index(True)
        assert await replicas[1].vault.get("u1", "salesforce") == record(sealed=f"v1.{winner}", version=2)
    finally:
        for replica in {id(r): r for r in replicas}.values():
            await replica.close()


# -- the refresh lease ------------------------------------------------------------------------


async def test_lease_is_exclusive_until_it_expires(store: Store) -> None:
    await store.vault.put(record())
    taken = await store.vault.take_lease("u1", "salesforce", "replica-a", until=130.0, now=100.0)
    assert taken == record(lease_owner="replica-a", lease_until=130.0)
    # someone else: refused while it runs, up to and excluding its end
    assert await store.vault.take_lease("u1", "salesforce", "replica-b", until=160.0, now=129.9) is None
    # the holder may take it again (and extend it)
    again = await store.vault.take_lease("u1", "salesforce", "replica-a", until=140.0, now=120.0)
    assert again == record(lease_owner="replica-a", lease_until=140.0)
    # expired (lease_until <= now): anyone may take it over
    later = await store.vault.take_lease("u1", "salesforce", "replica-b", until=170.0, now=140.0)
    assert later == record(lease_owner="replica-b", lease_until=170.0)
    # no record: no lease
    assert await store.vault.take_lease("u1", "github", "replica-a", until=200.0, now=100.0) is None
    assert await store.vault.get("u1", "github") is None


async def test_release_lease_only_by_its_owner(store: Store) -> None:
    await store.vault.put(record())
    assert await store.vault.take_lease("u1", "salesforce", "replica-a", until=130.0, now=100.0)
    await store.vault.release_lease("u1", "salesforce", "replica-b")  # not the owner: nothing
    assert await store.vault.take_lease("u1", "salesforce", "replica-b", until=130.0, now=101.0) is None
    await store.vault.release_lease("u1", "salesforce", "replica-a")
    assert await store.vault.get("u1", "salesforce") == record(lease_owner=None, lease_until=0.0)
    taken = await store.vault.take_lease("u1", "salesforce", "replica-b", until=131.0, now=102.0)
    assert taken is not None
    assert taken.lease_owner == "replica-b"
    await store.vault.release_lease("u1", "github", "replica-b")  # no record: nothing happens


async def test_a_refresh_under_the_lease_writes_and_releases_in_one_replace(store: Store) -> None:
    await store.vault.put(record(version=7))
    leased = await store.vault.take_lease("u1", "salesforce", "r1", until=130.0, now=100.0)
    assert leased is not None
    assert leased.version == 7
    refreshed = dataclasses.replace(leased, sealed="v1.fresh", version=8, lease_owner=None, lease_until=0.0)
    assert await store.vault.replace(refreshed, leased.version)
    assert await store.vault.take_lease("u1", "salesforce", "r2", until=131.0, now=101.0) is not None


@pytest.mark.parametrize("tasks", [2, 25])
async def test_many_tasks_taking_one_lease_have_exactly_one_winner(store_url: str, tasks: int) -> None:
    first = await open_store(store_url)
    replicas = [first, first] if store_url == "memory://" else [first, await open_store(store_url)]
    try:
        await first.vault.put(record())
        attempts = [
            replicas[i % 2].vault.take_lease("u1", "salesforce", f"owner-{i}", until=200.0, now=100.0)
            for i in range(tasks)
        ]
        results = await asyncio.gather(*attempts)
        winners = [r for r in results if r is not None]
        assert len(winners) == 1
        stored = await replicas[1].vault.get("u1", "salesforce")
        assert stored is not None
        assert stored.lease_owner == winners[0].lease_owner
        assert stored.lease_until == 200.0
    finally:
        for replica in {id(r): r for r in replicas}.values():
            await replica.close()


async def test_touch_records_a_use_without_a_new_version(store: Store) -> None:
    await store.vault.put(record(version=3))
    await store.vault.touch("u1", "salesforce", now=500.25)
    assert await store.vault.get("u1", "salesforce") == record(version=3, last_used_at=500.25)
    await store.vault.touch("u1", "salesforce", now=400.0)  # a replica with a slow clock
    assert await store.vault.get("u1", "salesforce") == record(version=3, last_used_at=500.25)
    await store.vault.touch("u1", "github", now=1.0)  # no record: nothing happens
    assert await store.vault.get("u1", "github") is None
    # a compare-and-set prepared before the touch still succeeds
    assert await store.vault.replace(record(version=4), 3)


# -- deletion and rotation --------------------------------------------------------------------


async def test_delete_and_delete_for_user(store: Store) -> None:
    for user_id, connection in [("u1", "github"), ("u1", "salesforce"), ("u2", "github")]:
        await store.vault.put(record(user_id, connection))
    assert await store.vault.delete("u1", "github") is True
    assert await store.vault.delete("u1", "github") is False
    assert await store.vault.get("u1", "github") is None
    await store.vault.put(record("u1", "zendesk"))
    assert await store.vault.delete_for_user("u1") == 2
    assert await store.vault.delete_for_user("u1") == 0
    assert await store.vault.list_for_user("u1") == []
    assert await store.vault.get("u2", "github") == record("u2", "github")


async def test_records_are_found_by_master_key(store: Store) -> None:
    assert await store.vault.key_ids() == set()
    assert await store.vault.count_by_key() == {}
    assert await store.vault.wrapped_under_other_than("new", 10) == []
    old = [record(f"u{i}", "github", key_id="old") for i in range(5)]
    for r in [*old, record("u0", "salesforce", key_id="older"), record("u1", "salesforce", key_id="new")]:
        await store.vault.put(r)
    assert await store.vault.key_ids() == {"old", "older", "new"}
    assert await store.vault.count_by_key() == {"old": 5, "older": 1, "new": 1}
    others = await store.vault.wrapped_under_other_than("new", 100)
    assert [(r.user_id, r.connection) for r in others] == [
        ("u0", "github"),
        ("u0", "salesforce"),
        ("u1", "github"),
        ("u2", "github"),
        ("u3", "github"),
        ("u4", "github"),
    ]
    assert others[0] == old[0]
    assert len(await store.vault.wrapped_under_other_than("new", 2)) == 2
    assert await store.vault.wrapped_under_other_than("new", 0) == []
    # once everything is under "new", nothing is left to rotate
    for r in others:
        assert await store.vault.replace(
            dataclasses.replace(r, key_id="new", version=r.version + 1), r.version
        )
    assert await store.vault.wrapped_under_other_than("new", 100) == []
    assert await store.vault.key_ids() == {"new"}


# -- migration --------------------------------------------------------------------------------


def _upgrade_to(revision: str) -> object:
    def run(connection: sa.Connection) -> None:
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
        config.attributes["connection"] = connection
        command.upgrade(config, revision)

    return run


async def test_a_0007_database_upgrades_to_an_indexed_vault(store_url: str) -> None:
    if store_url == "memory://":
        pytest.skip("a memory store has no schema to migrate")
    engine = create_engine(store_url)
    async with write_transaction(engine) as conn:
        await conn.run_sync(_upgrade_to("0007"))  # type: ignore[arg-type]
    assert await current_revision(engine) == "0007"
    await engine.dispose()

    store = await open_store(store_url)
    try:
        assert isinstance(store, SqlStore)
        assert await current_revision(store.engine) == head_revision()
        async with store.engine.connect() as conn:
            inspected = await conn.run_sync(
                lambda c: (
                    [ix["column_names"] for ix in sa.inspect(c).get_indexes("vault_records")],
                    sa.inspect(c).get_pk_constraint("vault_records")["constrained_columns"],
                )
            )
        assert ["key_id"] in inspected[0]
        assert inspected[1] == ["user_id", "connection"]
        await store.vault.put(record())
        assert await store.vault.get("u1", "salesforce") == record()
    finally:
        await store.close()
