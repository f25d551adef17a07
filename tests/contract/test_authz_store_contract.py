"""The authorization-server stores, one contract for memory, SQLite and a real PostgreSQL:
signing key blob, users, single-use grants (RFC 6749 §4.1.2, and peeking at them),
refresh-token rotation (OAuth 2.1 §4.3.1) with reuse detection (RFC 9700 §4.14.2), revoking
one user's families (a consent withdrawn, a user disabled), consents; replicas racing on one
database; the 0001 → 0002 migration keeping the audit log, and 0004 → 0005 leaving the
families issued before it without an owner.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from bastion.audit.chain import verify_store
from bastion.core.errors import Conflict
from bastion.core.records import AuditRecord, ConsentRecord, RotateOutcome, UserRecord
from bastion.store import Store, open_store
from bastion.store.factory import MIGRATIONS_DIR, current_revision, head_revision
from bastion.store.sql import SqlStore, create_engine
from bastion.store.sql_engine import write_transaction

CODE = "authorization_code"


def user(uid: str = "u1", name: str = "alice", **kw: object) -> UserRecord:
    fields: dict[str, object] = {
        "user_id": uid,
        "username": name,
        "password_hash": "$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA",
        "display_name": "Alice Ü",
        "email": "alice@example.com",
        "groups": frozenset({"eng", "admins"}),
        "attributes": {"dept": "R&D", "levels": [1, 2], "nested": {"a": None}},
        "source": "local",
        "created_at": 1_700_000_000.5,
    }
    fields.update(kw)
    return UserRecord(**fields)  # type: ignore[arg-type]


def _sql_only(store_url: str) -> None:
    if store_url == "memory://":
        pytest.skip("a memory store cannot be shared between two instances")


# -- signing keys -----------------------------------------------------------------------------


async def test_key_blob_round_trips_and_is_replaced(store: Store) -> None:
    assert await store.signing_keys.load() is None
    blob = bytes(range(256)) * 4  # every byte value, NUL included
    await store.signing_keys.save(blob)
    assert await store.signing_keys.load() == blob
    await store.signing_keys.save(b"second")
    assert await store.signing_keys.load() == b"second"


# -- users ------------------------------------------------------------------------------------


async def test_user_round_trips_by_id_and_username(store: Store) -> None:
    alice = user()
    await store.users.add(alice)
    assert await store.users.get("u1") == alice
    assert await store.users.get_by_username("alice") == alice
    assert await store.users.get("nobody") is None
    assert await store.users.get_by_username("Alice") is None  # exact match: the idp normalizes


async def test_usernames_and_ids_are_unique(store: Store) -> None:
    await store.users.add(user())
    with pytest.raises(Conflict):
        await store.users.add(user("u2", "alice", display_name="Mallory"))
    with pytest.raises(Conflict):
        await store.users.add(user("u1", "bob"))
    assert [u.user_id for u in await store.users.list()] == ["u1"]
    assert (await store.users.get("u1")) == user()


async def test_users_list_in_username_order(store: Store) -> None:
    for uid, name in [("u1", "carol"), ("u2", "alice"), ("u3", "bob")]:
        await store.users.add(user(uid, name, groups=frozenset(), attributes={}, email=None))
    assert [u.username for u in await store.users.list()] == ["alice", "bob", "carol"]


async def test_disable_and_password_change(store: Store) -> None:
    await store.users.add(user())
    assert await store.users.set_disabled("u1", True) is True
    assert (await store.users.get("u1")) == user(disabled=True)
    assert await store.users.set_disabled("u1", False) is True
    assert (await store.users.get_by_username("alice")) == user(disabled=False)
    assert await store.users.set_password_hash("u1", "$argon2id$new") is True
    assert (await store.users.get("u1")) == user(password_hash="$argon2id$new")
    assert await store.users.set_password_hash("u1", None) is True
    assert (await store.users.get("u1")) == user(password_hash=None)
    assert await store.users.set_disabled("ghost", True) is False
    assert await store.users.set_password_hash("ghost", "x") is False


async def test_delete_frees_the_username(store: Store) -> None:
    await store.users.add(user())
    assert await store.users.delete("u1") is True
    assert await store.users.delete("u1") is False
    assert await store.users.get_by_username("alice") is None
    await store.users.add(user("u2", "alice"))
    assert (await store.users.get_by_username("alice")) == user("u2", "alice")


# -- single-use grants ------------------------------------------------------------------------


async def test_grant_is_consumed_exactly_once(store: Store) -> None:
    payload = {"client_id": "c1", "scopes": ["a", "b"], "pkce": {"method": "S256"}, "n": 1.5}
    await store.grants.put(CODE, "h1", payload, expires_at=200.0)
    assert await store.grants.consume(CODE, "h1", now=100.0) == payload
    assert await store.grants.consume(CODE, "h1", now=100.0) is None


async def test_kinds_are_separate_namespaces(store: Store) -> None:
    await store.grants.put(CODE, "h1", {"k": "code"}, 200.0)
    await store.grants.put("login_state", "h1", {"k": "login"}, 200.0)
    assert await store.grants.consume("login_state", "h1", 100.0) == {"k": "login"}
    assert await store.grants.consume(CODE, "h1", 100.0) == {"k": "code"}
    assert await store.grants.consume("other", "h1", 100.0) is None


async def test_expired_grant_is_never_returned_and_is_gone(store: Store) -> None:
    await store.grants.put(CODE, "h1", {}, expires_at=200.0)
    await store.grants.put(CODE, "h2", {}, expires_at=200.0)
    assert await store.grants.consume(CODE, "h1", now=200.0) is None  # expires_at is exclusive
    assert await store.grants.consume(CODE, "h1", now=100.0) is None  # and it was removed
    assert await store.grants.consume(CODE, "h2", now=199.9) == {}


async def test_duplicate_grant_key_conflicts(store: Store) -> None:
    await store.grants.put(CODE, "h1", {"v": 1}, 200.0)
    with pytest.raises(Conflict):
        await store.grants.put(CODE, "h1", {"v": 2}, 300.0)
    assert await store.grants.consume(CODE, "h1", 100.0) == {"v": 1}


async def test_peek_returns_a_copy_and_leaves_the_grant(store: Store) -> None:
    payload = {"client_id": "c1", "scopes": ["a"], "nested": {"n": None}}
    await store.grants.put(CODE, "h1", payload, expires_at=200.0)
    seen = await store.grants.peek(CODE, "h1", now=100.0)
    assert seen == payload
    assert seen is not None
    seen["scopes"].append("admin")  # changing what peek returned changes nothing stored
    assert await store.grants.peek(CODE, "h1", now=100.0) == payload
    assert await store.grants.peek("login_state", "h1", now=100.0) is None
    assert await store.grants.peek(CODE, "nope", now=100.0) is None
    assert await store.grants.peek(CODE, "h1", now=200.0) is None  # expires_at is exclusive
    assert await store.grants.consume(CODE, "h1", now=199.0) == payload  # peeking consumed nothing
    assert await store.grants.peek(CODE, "h1", now=100.0) is None


async def test_purge_expired(store: Store) -> None:
    for i, expires in enumerate([100.0, 150.0, 200.0, 300.0]):
        await store.grants.put(CODE, f"h{i}", {"i": i}, expires)
    assert await store.grants.purge_expired(now=150.0) == 2
    assert await store.grants.purge_expired(now=150.0) == 0
    assert await store.grants.consume(CODE, "h2", 120.0) == {"i": 2}
    assert await store.grants.consume(CODE, "h0", 50.0) is None


# -- refresh-token families -------------------------------------------------------------------


async def test_issue_and_get(store: Store) -> None:
    await store.refresh_tokens.issue("f1", "r1", {"sub": "alice", "scope": "a b"}, 1000.0)
    token = await store.refresh_tokens.get("r1")
    assert token is not None
    assert (token.family_id, token.payload, token.expires_at) == (
        "f1",
        {"sub": "alice", "scope": "a b"},
        1000.0,
    )
    assert (token.used_at, token.successor_hash, token.revoked) == (None, None, False)
    assert await store.refresh_tokens.get("nope") is None
    with pytest.raises(Conflict):
        await store.refresh_tokens.issue("f2", "r1", {}, 1000.0)


async def test_rotate_issues_a_successor_and_marks_the_old_token_used(store: Store) -> None:
    await store.refresh_tokens.issue("f1", "r1", {"sub": "alice"}, 1000.0)
    result = await store.refresh_tokens.rotate("r1", "r2", now=100.0, grace_s=10.0)
    assert result.outcome is RotateOutcome.ROTATED
    assert result.family_id == "f1"
    assert result.successor is not None
    assert (result.successor.token_hash, result.successor.payload) == ("r2", {"sub": "alice"})
    assert result.successor.expires_at == 1000.0  # inherited by default
    assert await store.refresh_tokens.get("r2") == result.successor
    old = await store.refresh_tokens.get("r1")
    assert old is not None
    assert (old.used_at, old.successor_hash) == (100.0, "r2")
    # a new expiry can be given (sliding lifetime)
    third = await store.refresh_tokens.rotate("r2", "r3", now=101.0, grace_s=10.0, expires_at=2000.0)
    assert third.successor is not None
    assert third.successor.expires_at == 2000.0


async def test_retry_within_grace_returns_the_same_successor(store: Store) -> None:
    await store.refresh_tokens.issue("f1", "r1", {}, 1000.0)
    first = await store.refresh_tokens.rotate("r1", "r2", now=100.0, grace_s=10.0)
    again = await store.refresh_tokens.rotate("r1", "r2-other", now=110.0, grace_s=10.0)
    assert again.outcome is RotateOutcome.RETRIED
    assert again.successor == first.successor
    assert await store.refresh_tokens.get("r2-other") is None  # the new hash is ignored
    ok = await store.refresh_tokens.rotate("r2", "r3", now=111.0, grace_s=10.0)
    assert ok.outcome is RotateOutcome.ROTATED  # the family is intact


async def test_reuse_after_grace_revokes_the_family(store: Store) -> None:
    await store.refresh_tokens.issue("f1", "r1", {}, 1000.0)
    await store.refresh_tokens.issue("f2", "other", {}, 1000.0)
    await store.refresh_tokens.rotate("r1", "r2", now=100.0, grace_s=10.0)
    result = await store.refresh_tokens.rotate("r1", "r3", now=110.5, grace_s=10.0)
    assert result.outcome is RotateOutcome.REUSE_DETECTED
    assert (result.family_id, result.successor) == ("f1", None)
    successor = await store.refresh_tokens.get("r2")
    assert successor is not None
    assert successor.revoked
    assert (await store.refresh_tokens.rotate("r2", "r4", 111.0, 10.0)).outcome is RotateOutcome.INVALID
    assert (await store.refresh_tokens.rotate("r1", "r5", 111.0, 10.0)).outcome is RotateOutcome.INVALID
    assert await store.refresh_tokens.get("r3") is None
    other = await store.refresh_tokens.get("other")
    assert other is not None
    assert not other.revoked  # other families are untouched


async def test_replay_after_the_successor_was_used_is_reuse_even_within_grace(store: Store) -> None:
    await store.refresh_tokens.issue("f1", "r1", {}, 1000.0)
    await store.refresh_tokens.rotate("r1", "r2", now=100.0, grace_s=60.0)
    await store.refresh_tokens.rotate("r2", "r3", now=101.0, grace_s=60.0)
    result = await store.refresh_tokens.rotate("r1", "r9", now=102.0, grace_s=60.0)
    assert result.outcome is RotateOutcome.REUSE_DETECTED
    current = await store.refresh_tokens.get("r3")
    assert current is not None
    assert current.revoked


async def test_unknown_expired_and_revoked_tokens_are_invalid(store: Store) -> None:
    unknown = await store.refresh_tokens.rotate("nope", "x", now=100.0, grace_s=10.0)
    assert (unknown.outcome, unknown.family_id) == (RotateOutcome.INVALID, None)
    await store.refresh_tokens.issue("f1", "r1", {}, 100.0)
    expired = await store.refresh_tokens.rotate("r1", "r2", now=100.0, grace_s=10.0)
    assert (expired.outcome, expired.family_id) == (RotateOutcome.INVALID, "f1")
    assert await store.refresh_tokens.get("r2") is None
    await store.refresh_tokens.issue("f2", "s1", {}, 1000.0)
    assert await store.refresh_tokens.revoke_family("f2") is True
    assert await store.refresh_tokens.revoke_family("ghost") is False
    assert (await store.refresh_tokens.rotate("s1", "s2", 100.0, 10.0)).outcome is RotateOutcome.INVALID


async def test_rotating_into_a_taken_hash_conflicts_and_changes_nothing(store: Store) -> None:
    await store.refresh_tokens.issue("f1", "r1", {}, 1000.0)
    await store.refresh_tokens.issue("f2", "taken", {}, 1000.0)
    with pytest.raises(Conflict):
        await store.refresh_tokens.rotate("r1", "taken", now=100.0, grace_s=10.0)
    old = await store.refresh_tokens.get("r1")
    assert old is not None
    assert (old.used_at, old.successor_hash) == (None, None)


# -- revoking one user's families -------------------------------------------------------------


async def _issue_owned(store: Store, family: str, user_id: str | None, client_id: str | None) -> None:
    payload = {"user_id": user_id, "client_id": client_id}
    await store.refresh_tokens.issue(
        family, f"{family}-r1", payload, 1000.0, user_id=user_id, client_id=client_id
    )


async def _rotatable(store: Store, family: str, now: float = 100.0) -> bool:
    """Whether the family's first token ``<family>-r1`` (never rotated yet) still rotates."""
    result = await store.refresh_tokens.rotate(f"{family}-r1", f"{family}-probe", now, grace_s=0.0)
    return result.outcome is RotateOutcome.ROTATED


async def test_revoke_for_one_client_leaves_other_users_and_clients_alone(store: Store) -> None:
    await _issue_owned(store, "f1", "u1", "c1")
    await _issue_owned(store, "f2", "u1", "c1")
    await _issue_owned(store, "f3", "u1", "c2")
    await _issue_owned(store, "f4", "u2", "c1")
    await _issue_owned(store, "f5", None, None)  # issued before revision 0005: no owner
    assert await store.refresh_tokens.revoke_for("u1", "c1") == 2
    for family, revoked in [("f1", True), ("f2", True), ("f3", False), ("f4", False), ("f5", False)]:
        token = await store.refresh_tokens.get(f"{family}-r1")
        assert token is not None
        assert token.revoked is revoked, family
    assert (await store.refresh_tokens.rotate("f1-r1", "x", 100.0, 10.0)).outcome is RotateOutcome.INVALID
    assert await store.refresh_tokens.revoke_for("u1", "c1") == 0  # already revoked: not counted
    assert await store.refresh_tokens.revoke_for("u1", "c9") == 0
    assert await store.refresh_tokens.revoke_for("nobody") == 0
    assert [await _rotatable(store, f) for f in ("f3", "f4", "f5")] == [True, True, True]


async def test_revoke_for_a_user_revokes_every_client_and_every_token_of_the_family(store: Store) -> None:
    await _issue_owned(store, "f1", "u1", "c1")
    await _issue_owned(store, "f2", "u1", "c2")
    await _issue_owned(store, "f3", "u2", "c1")
    first = await store.refresh_tokens.rotate("f1-r1", "f1-r2", now=100.0, grace_s=30.0)
    assert first.outcome is RotateOutcome.ROTATED
    assert await store.refresh_tokens.revoke_family("f2") is True  # revoked already: not counted
    assert await store.refresh_tokens.revoke_for("u1") == 1
    # the current token, and a retry of the rotated one within grace, are both refused
    current = await store.refresh_tokens.rotate("f1-r2", "f1-r3", now=101.0, grace_s=30.0)
    assert (current.outcome, current.family_id) == (RotateOutcome.INVALID, "f1")
    retry = await store.refresh_tokens.rotate("f1-r1", "f1-r4", now=101.0, grace_s=30.0)
    assert (retry.outcome, retry.successor) == (RotateOutcome.INVALID, None)
    successor = await store.refresh_tokens.get("f1-r2")
    assert successor is not None
    assert successor.revoked
    assert successor.payload == {"user_id": "u1", "client_id": "c1"}  # the payload is unchanged
    assert await _rotatable(store, "f3")
    assert await store.refresh_tokens.revoke_for("u1") == 0


async def test_the_owner_is_recorded_when_the_family_starts(store: Store) -> None:
    await _issue_owned(store, "f1", "u1", "c1")
    # a later token of the same family does not move it to another owner
    await store.refresh_tokens.issue("f1", "f1-other", {}, 1000.0, user_id="u2", client_id="c2")
    await store.refresh_tokens.issue("f2", "f2-r1", {"user_id": "u1"}, 1000.0)  # no owner given
    assert await store.refresh_tokens.revoke_for("u2") == 0
    assert await store.refresh_tokens.revoke_for("u1", "c1") == 1
    other = await store.refresh_tokens.get("f1-other")
    assert other is not None
    assert other.revoked  # the family, every token of it
    assert await _rotatable(store, "f2")  # never matched by its payload


# -- consents ---------------------------------------------------------------------------------


def consent(uid: str, cid: str, scopes: set[str], at: float = 100.0) -> ConsentRecord:
    return ConsentRecord(uid, cid, frozenset(scopes), frozenset({"https://mcp.example/time"}), at)


async def test_consent_grant_get_list_revoke(store: Store) -> None:
    await store.consents.grant(consent("u2", "c1", {"read"}))
    await store.consents.grant(consent("u1", "c2", {"read", "write"}))
    await store.consents.grant(consent("u1", "c1", set()))
    assert await store.consents.get("u1", "c2") == consent("u1", "c2", {"read", "write"})
    assert await store.consents.get("u1", "c3") is None
    assert [(c.user_id, c.client_id) for c in await store.consents.list()] == [
        ("u1", "c1"),
        ("u1", "c2"),
        ("u2", "c1"),
    ]
    assert [c.client_id for c in await store.consents.list(user_id="u1")] == ["c1", "c2"]
    # a new grant replaces the old one as a whole
    await store.consents.grant(consent("u1", "c2", {"admin"}, at=200.0))
    assert await store.consents.get("u1", "c2") == consent("u1", "c2", {"admin"}, at=200.0)
    assert await store.consents.revoke("u1", "c2") is True
    assert await store.consents.revoke("u1", "c2") is False
    assert await store.consents.get("u1", "c2") is None
    assert len(await store.consents.list()) == 2


# -- replicas racing on one database ----------------------------------------------------------


async def _two_replicas(store_url: str) -> list[Store]:
    first = await open_store(store_url)
    # memory: two handles on the same store (one process); SQL: two engines, two pools
    return [first, first] if store_url == "memory://" else [first, await open_store(store_url)]


async def test_concurrent_consumes_of_one_code_have_exactly_one_winner(store_url: str) -> None:
    replicas = await _two_replicas(store_url)
    try:
        for round_ in range(3):
            await replicas[0].grants.put(CODE, f"h{round_}", {"round": round_}, 1000.0)
            results = await asyncio.gather(
                *(replicas[i % 2].grants.consume(CODE, f"h{round_}", 100.0) for i in range(10))
            )
            assert [r for r in results if r is not None] == [{"round": round_}]
    finally:
        for replica in {id(r): r for r in replicas}.values():
            await replica.close()


async def test_concurrent_rotations_issue_one_successor(store_url: str) -> None:
    replicas = await _two_replicas(store_url)
    try:
        await replicas[0].refresh_tokens.issue("f1", "r1", {"sub": "alice"}, 1000.0)
        results = await asyncio.gather(
            *(replicas[i % 2].refresh_tokens.rotate("r1", f"new{i}", 100.0, grace_s=30.0) for i in range(10))
        )
        outcomes = sorted(r.outcome.value for r in results)
        assert outcomes == ["retried"] * 9 + ["rotated"]
        successors = {r.successor.token_hash for r in results if r.successor is not None}
        assert len(successors) == 1
        (winner,) = successors
        for i in range(10):
            stored = await replicas[1].refresh_tokens.get(f"new{i}")
            assert (stored is not None) == (f"new{i}" == winner)
    finally:
        for replica in {id(r): r for r in replicas}.values():
            await replica.close()


async def test_concurrent_replays_after_grace_revoke_and_never_rotate(store_url: str) -> None:
    replicas = await _two_replicas(store_url)
    try:
        await replicas[0].refresh_tokens.issue("f1", "r1", {}, 1000.0)
        await replicas[0].refresh_tokens.rotate("r1", "r2", 100.0, grace_s=5.0)
        replays = [replicas[i % 2].refresh_tokens.rotate("r1", f"x{i}", 200.0, grace_s=5.0) for i in range(5)]
        uses = [replicas[i % 2].refresh_tokens.rotate("r2", f"y{i}", 200.0, grace_s=5.0) for i in range(5)]
        results = await asyncio.gather(*replays, *uses)
        assert any(r.outcome is RotateOutcome.REUSE_DETECTED for r in results)
        current = await replicas[1].refresh_tokens.get("r2")
        assert current is not None
        assert current.revoked
        # whatever won the race, no token of the family can be rotated any more
        for r in results:
            if r.successor is not None:
                after = await replicas[0].refresh_tokens.rotate(r.successor.token_hash, "z", 201.0, 5.0)
                assert after.outcome is RotateOutcome.INVALID
    finally:
        for replica in {id(r): r for r in replicas}.values():
            await replica.close()


async def test_concurrent_revocations_and_rotations_leave_no_family_usable(store_url: str) -> None:
    replicas = await _two_replicas(store_url)
    try:
        families = [f"f{i}" for i in range(6)]
        for i, family in enumerate(families):
            await _issue_owned(replicas[0], family, "u1", f"c{i % 2}")
        await _issue_owned(replicas[0], "bob", "u2", "c0")
        rotations = [
            replicas[i % 2].refresh_tokens.rotate(f"{f}-r1", f"{f}-r2", 100.0, grace_s=30.0)
            for i, f in enumerate(families)
        ]
        # overlapping revocations from both replicas: each family is counted exactly once
        revocations = [
            replicas[0].refresh_tokens.revoke_for("u1"),
            replicas[1].refresh_tokens.revoke_for("u1", "c0"),
        ]
        results = await asyncio.gather(*revocations, *rotations)
        assert results[0] + results[1] == len(families)
        for family in families:
            for token in (f"{family}-r1", f"{family}-r2"):
                after = await replicas[1].refresh_tokens.rotate(token, f"{token}-z", 101.0, grace_s=30.0)
                assert after.outcome is RotateOutcome.INVALID, token
        assert await _rotatable(replicas[1], "bob")
    finally:
        for replica in {id(r): r for r in replicas}.values():
            await replica.close()


# -- migration --------------------------------------------------------------------------------


def _upgrade_to(revision: str) -> object:
    def run(connection: sa.Connection) -> None:
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
        config.attributes["connection"] = connection
        command.upgrade(config, revision)

    return run


async def test_a_0001_database_upgrades_with_its_audit_log_intact(store_url: str, tmp_path: Path) -> None:
    _sql_only(store_url)
    engine = create_engine(store_url)
    async with write_transaction(engine) as conn:
        await conn.run_sync(_upgrade_to("0001"))  # type: ignore[arg-type]
    assert await current_revision(engine) == "0001"
    old = SqlStore(engine)  # the audit store only touches 0001's tables
    records = [
        AuditRecord(ts=1.0 + i, event="call.forwarded", trace_id=f"t{i}", detail="ü") for i in range(5)
    ]
    before = await old.audit.append(records)
    await old.close()

    store = await open_store(store_url)
    try:
        assert isinstance(store, SqlStore)
        assert await current_revision(store.engine) == head_revision()
        assert await store.audit.tail(100) == before
        assert (await verify_store(store.audit)).ok
        more = await store.audit.append([AuditRecord(ts=9.0, event="server.started", trace_id="")])
        assert more[0].seq == 6
        assert more[0].prev_hash == before[-1].hash
        await store.users.add(user())
        assert await store.users.get("u1") == user()
    finally:
        await store.close()


async def test_a_0004_database_upgrades_and_its_families_keep_no_owner(store_url: str) -> None:
    _sql_only(store_url)
    engine = create_engine(store_url)
    async with write_transaction(engine) as conn:
        await conn.run_sync(_upgrade_to("0004"))  # type: ignore[arg-type]
        # the 0004 schema has no owner columns: rows as the 0004 store wrote them
        await conn.execute(sa.text("INSERT INTO refresh_families (family_id, revoked) VALUES ('old', false)"))
        await conn.execute(
            sa.text(
                "INSERT INTO refresh_tokens (token_hash, family_id, payload, expires_at) "
                """VALUES ('old-r1', 'old', '{"user_id": "u1", "client_id": "c1"}', 1000.0)"""
            )
        )
    assert await current_revision(engine) == "0004"
    await engine.dispose()

    store = await open_store(store_url)
    try:
        assert isinstance(store, SqlStore)
        assert await current_revision(store.engine) == head_revision()
        async with store.engine.connect() as conn:
            owners = (await conn.execute(sa.text("SELECT user_id, client_id FROM refresh_families"))).all()
            indexes = await conn.run_sync(
                lambda c: [ix["column_names"] for ix in sa.inspect(c).get_indexes("refresh_families")]
            )
        assert [tuple(row) for row in owners] == [(None, None)]
        assert ["user_id", "client_id"] in indexes
        await _issue_owned(store, "new", "u1", "c1")
        assert await store.refresh_tokens.revoke_for("u1") == 1  # only the new family
        old = await store.refresh_tokens.get("old-r1")
        assert old is not None
        assert (old.revoked, old.payload) == (False, {"user_id": "u1", "client_id": "c1"})
        assert await _rotatable(store, "old")
    finally:
        await store.close()
