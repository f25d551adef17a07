"""One contract for every Store: memory, SQLite (temp file) and a real PostgreSQL.

Each test takes the parametrized ``store`` fixture (tests/contract/conftest.py), so the
same assertions run against all three backends; tests that need two handles on one
database (concurrency, tampering) take ``store_url`` and skip the memory backend.
"""

from __future__ import annotations

import asyncio
import itertools
import math

import pytest
import sqlalchemy as sa

from bastion.audit.chain import verify, verify_store
from bastion.core.records import AuditRecord, SessionRecord
from bastion.store import GENESIS_HASH, Store, link_hash, open_store
from bastion.store.sql import SqlStore


def rec(i: int, **kw: object) -> AuditRecord:
    fields: dict[str, object] = {"ts": 1_700_000_000.0 + i, "event": "call.forwarded", "trace_id": f"t{i}"}
    fields.update(kw)
    return AuditRecord(**fields)  # type: ignore[arg-type]


def session(sid: str = "s1", **kw: object) -> SessionRecord:
    fields: dict[str, object] = {
        "session_id": sid,
        "endpoint": "time",
        "subject": "alice",
        "protocol_version": "2025-11-25",
        "mode": "passthrough",
        "upstream_session_id": "up-1",
        "client_capabilities": {"sampling": {}, "elicitation": {"form": {}}},
        "client_info": {"name": "claude", "version": "1.2"},
        "created_at": 100.0,
        "last_seen": 100.0,
        "replica": "r1",
    }
    fields.update(kw)
    return SessionRecord(**fields)  # type: ignore[arg-type]


# -- audit chain ------------------------------------------------------------------------------


async def test_append_assigns_seq_and_links_from_genesis(store: Store) -> None:
    first = await store.audit.append([rec(1), rec(2)])
    second = await store.audit.append([rec(3)])
    stored = first + second
    assert [s.seq for s in stored] == [1, 2, 3]
    assert stored[0].prev_hash == GENESIS_HASH
    for prev, item in itertools.pairwise(stored):
        assert item.prev_hash == prev.hash
    for item in stored:
        assert item.hash == link_hash(item.prev_hash, item.record)
    assert verify(stored).ok


async def test_append_nothing_is_a_no_op(store: Store) -> None:
    assert await store.audit.append([]) == []
    assert await store.audit.last() is None
    assert [s.seq for s in await store.audit.append([rec(1)])] == [1]


async def test_every_field_round_trips_and_hash_survives_storage(store: Store) -> None:
    full = AuditRecord(
        ts=1_712_345_678.123456,
        event="call.failed",
        trace_id="req-ü-☃",
        endpoint="github",
        upstream="github",
        era="legacy",
        method="tools/call",
        name="create_issue",
        request_id="42",
        status=502,
        error_code=-32012,
        latency_ms=12.345678901234,
        upstream_ms=0.1,
        subject="alice@example.com",
        client_id="https://client.example/meta.json",
        session="ab12cd34",
        detail="upstream said 'no' — 日本語 \U0001f600",
    )
    appended = await store.audit.append([full, rec(2)])
    assert appended[0].record == full
    read = await store.audit.tail(10)
    assert read == appended
    assert verify(read).ok


async def test_values_no_database_can_hold_are_normalized_identically(store: Store) -> None:
    odd = AuditRecord(
        ts=1_700_000_000,  # type: ignore[arg-type]  # an int where a float belongs
        event="call.failed",
        trace_id="t\x00nul",
        latency_ms=math.nan,
        upstream_ms=math.inf,
        status=2**70,
        detail="lone \ud800 surrogate",
    )
    [stored] = await store.audit.append([odd])
    assert type(stored.record.ts) is float
    assert stored.record.latency_ms is None
    assert stored.record.upstream_ms is None
    assert stored.record.status is None
    assert "\x00" not in stored.record.trace_id
    assert await store.audit.tail(1) == [stored]
    assert (await verify_store(store.audit)).ok


async def test_tail_newest_ascending_and_after_seq_pages_forward(store: Store) -> None:
    await store.audit.append([rec(i) for i in range(1, 11)])
    assert [s.seq for s in await store.audit.tail(3)] == [8, 9, 10]
    assert [s.seq for s in await store.audit.tail(50)] == list(range(1, 11))
    assert [s.seq for s in await store.audit.tail(3, after_seq=2)] == [3, 4, 5]
    assert [s.seq for s in await store.audit.tail(50, after_seq=8)] == [9, 10]
    assert await store.audit.tail(5, after_seq=10) == []
    assert await store.audit.tail(0) == []


async def test_last(store: Store) -> None:
    assert await store.audit.last() is None
    stored = await store.audit.append([rec(1), rec(2)])
    assert await store.audit.last() == stored[-1]


async def test_purge_removes_a_prefix_and_the_chain_continues(store: Store) -> None:
    # ts out of order on purpose: seq 3 is older than the cutoff but follows a newer record.
    stored = await store.audit.append([rec(1), rec(2), rec(50), rec(3), rec(60)])
    assert await store.audit.purge_before(1_700_000_000.0 + 10) == 2
    remaining = await store.audit.tail(50)
    assert [s.seq for s in remaining] == [3, 4, 5]
    result = verify(remaining)
    assert result.ok
    assert not result.anchored
    assert result.first_seq == 3
    assert await store.audit.purge_before(1_800_000_000.0) == 3
    assert await store.audit.last() is None
    [after] = await store.audit.append([rec(70)])
    # The head survives purges: no new genesis, no reused seq.
    assert after.seq == 6
    assert after.prev_hash == stored[-1].hash
    assert await store.audit.purge_before(0.0) == 0


async def test_verify_store_walks_in_pages(store: Store) -> None:
    for start in range(0, 25, 5):
        await store.audit.append([rec(i) for i in range(start, start + 5)])
    result = await verify_store(store.audit, page=7)
    assert result.ok
    assert result.count == 25
    assert result.anchored
    assert result.last_seq == 25


async def test_concurrent_appends_on_one_store_do_not_fork(store: Store) -> None:
    await asyncio.gather(*(store.audit.append([rec(i), rec(i + 1)]) for i in range(0, 40, 2)))
    everything = await store.audit.tail(100)
    assert [s.seq for s in everything] == list(range(1, 41))
    assert verify(everything).ok


# -- sessions ---------------------------------------------------------------------------------


async def test_session_put_get_round_trip(store: Store) -> None:
    original = session()
    await store.sessions.put(original)
    assert await store.sessions.get("s1") == original
    assert await store.sessions.get("nope") is None
    minimal = session("s2", endpoint=None, upstream_session_id=None, client_capabilities={}, client_info={})
    await store.sessions.put(minimal)
    assert await store.sessions.get("s2") == minimal


async def test_session_put_replaces(store: Store) -> None:
    await store.sessions.put(session())
    changed = session(upstream_session_id="up-2", replica="r2", client_info={"name": "cursor"})
    await store.sessions.put(changed)
    assert await store.sessions.get("s1") == changed


async def test_session_values_are_copies(store: Store) -> None:
    original = session()
    await store.sessions.put(original)
    original.client_info["name"] = "mutated after put"
    got = await store.sessions.get("s1")
    assert got is not None
    assert got.client_info["name"] == "claude"
    got.client_capabilities["roots"] = {}
    again = await store.sessions.get("s1")
    assert again is not None
    assert "roots" not in again.client_capabilities


async def test_session_touch_only_moves_forward(store: Store) -> None:
    await store.sessions.put(session(last_seen=100.0))
    await store.sessions.touch("s1", 150.5)
    got = await store.sessions.get("s1")
    assert got is not None
    assert got.last_seen == 150.5
    await store.sessions.touch("s1", 120.0)  # a replica with a slow clock
    got = await store.sessions.get("s1")
    assert got is not None
    assert got.last_seen == 150.5
    await store.sessions.touch("missing", 200.0)
    assert await store.sessions.get("missing") is None


async def test_session_delete_and_expire(store: Store) -> None:
    await store.sessions.put(session("a", last_seen=10.0))
    await store.sessions.put(session("b", last_seen=20.0))
    await store.sessions.put(session("c", last_seen=30.0))
    assert await store.sessions.delete("a") is True
    assert await store.sessions.delete("a") is False
    assert await store.sessions.expire(25.0) == 1
    assert await store.sessions.get("b") is None
    assert await store.sessions.get("c") is not None
    assert await store.sessions.expire(25.0) == 0


# -- two handles on one database (SQL backends) ---------------------------------------------------


def _sql_only(store_url: str) -> None:
    if store_url == "memory://":
        pytest.skip("a memory store cannot be shared between two instances")


async def test_two_replicas_appending_concurrently_keep_one_chain(store_url: str) -> None:
    _sql_only(store_url)
    replicas = [await open_store(store_url), await open_store(store_url)]
    try:

        async def writer(replica: Store, name: str) -> None:
            for i in range(25):
                await replica.audit.append([rec(i, trace_id=f"{name}-{i}-{j}") for j in range(1 + i % 3)])

        # Three concurrent writers per replica, six in all, with batches of 1-3 records.
        await asyncio.gather(*(writer(r, f"r{n}w{k}") for n, r in enumerate(replicas) for k in range(3)))
        everything = await replicas[0].audit.tail(10_000)
        expected = 2 * 3 * sum(1 + i % 3 for i in range(25))
        assert [s.seq for s in everything] == list(range(1, expected + 1))
        assert len({s.record.trace_id for s in everything}) == expected
        assert (await verify_store(replicas[1].audit)).ok
    finally:
        for replica in replicas:
            await replica.close()


@pytest.mark.parametrize("tamper", ["modify", "delete", "relink"])
async def test_verify_finds_the_first_broken_link(store_url: str, tamper: str) -> None:
    _sql_only(store_url)
    store = await open_store(store_url)
    try:
        await store.audit.append([rec(i) for i in range(1, 8)])
        assert isinstance(store, SqlStore)
        async with store.engine.begin() as conn:
            if tamper == "modify":
                await conn.execute(sa.text("UPDATE audit_records SET detail = 'edited' WHERE seq = 4"))
            elif tamper == "delete":
                await conn.execute(sa.text("DELETE FROM audit_records WHERE seq = 4"))
            else:  # recompute seq 4's hash after an edit: seq 5 no longer links to it
                row = (await conn.execute(sa.text("SELECT prev_hash FROM audit_records WHERE seq = 4"))).one()
                forged = rec(4)._replace(detail="edited")
                await conn.execute(
                    sa.text("UPDATE audit_records SET detail = 'edited', hash = :h WHERE seq = 4"),
                    {"h": link_hash(row.prev_hash, forged)},
                )
        result = await verify_store(store.audit)
        assert not result.ok
        assert result.broken_seq == {"modify": 4, "delete": 5, "relink": 5}[tamper]
        assert result.last_seq == {"modify": 3, "delete": 3, "relink": 4}[tamper]
    finally:
        await store.close()
