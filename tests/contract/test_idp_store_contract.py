"""The enterprise-IdP side of the stores, one contract for memory, SQLite and a real
PostgreSQL: a user's profile replaced at every sign-in, and IdP sessions (the sealed IdP
refresh token Bastion re-checks a user with, the sealed ID token it exchanges for ID-JAGs)
stored, re-checked, found as a user's latest at one provider, deleted per user and provider,
and purged at their maximum lifetime; replicas racing on one session id; the 0005 → 0006 and
0006 → 0007 migrations keeping users and sessions.
"""

from __future__ import annotations

import asyncio
import base64

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from bastion.core.errors import Conflict
from bastion.core.records import IdpSession, UserRecord
from bastion.store import Store, open_store
from bastion.store.factory import MIGRATIONS_DIR, current_revision, head_revision
from bastion.store.sql import SqlStore, create_engine
from bastion.store.sql_engine import write_transaction

# What AES-GCM sealing produces: nonce + ciphertext + tag, base64url text of a few KB
# (Entra refresh tokens are long).
SEALED = base64.urlsafe_b64encode(bytes(range(256)) * 12).decode()


def idp_user(**kw: object) -> UserRecord:
    fields: dict[str, object] = {
        "user_id": "u1",
        "username": "alice@contoso.example",
        "password_hash": None,
        "display_name": "Alice Ü",
        "email": "alice@contoso.example",
        "groups": frozenset({"eng"}),
        "attributes": {"tid": "t-1", "roles": ["Sales.Read"]},
        "disabled": False,
        "source": "entra",
        "created_at": 1_700_000_000.5,
    }
    fields.update(kw)
    return UserRecord(**fields)  # type: ignore[arg-type]


def session(sid: str = "s1", user_id: str = "u1", provider: str = "entra", **kw: object) -> IdpSession:
    fields: dict[str, object] = {
        "session_id": sid,
        "user_id": user_id,
        "provider": provider,
        "sealed_refresh_token": SEALED,
        "auth_time": 1_700_000_000.25,
        "expires_at": 1_700_086_400.25,
        "checked_at": 1_700_000_000.25,
    }
    fields.update(kw)
    return IdpSession(**fields)  # type: ignore[arg-type]


# -- user profiles ----------------------------------------------------------------------------


async def test_update_profile_replaces_the_four_fields_and_nothing_else(store: Store) -> None:
    await store.users.add(idp_user(password_hash="$argon2id$kept", disabled=True))
    attributes = {"tid": "t-1", "roles": ["Sales.Write"], "nested": {"a": None}}
    changed = await store.users.update_profile(
        "u1",
        display_name="Alice Smith",
        email="asmith@contoso.example",
        groups=frozenset({"sales", "admins"}),
        attributes=attributes,
    )
    assert changed is True
    expected = idp_user(
        password_hash="$argon2id$kept",
        disabled=True,
        display_name="Alice Smith",
        email="asmith@contoso.example",
        groups=frozenset({"sales", "admins"}),
        attributes={"tid": "t-1", "roles": ["Sales.Write"], "nested": {"a": None}},
    )
    assert await store.users.get("u1") == expected
    assert await store.users.get_by_username("alice@contoso.example") == expected
    attributes["roles"].append("Global.Admin")  # the caller's dict is not the stored one
    assert await store.users.get("u1") == expected


async def test_update_profile_can_empty_every_field(store: Store) -> None:
    await store.users.add(idp_user())
    await store.users.add(idp_user(user_id="u2", username="bob@contoso.example"))
    assert await store.users.update_profile(
        "u1", display_name="", email=None, groups=frozenset(), attributes={}
    )
    assert await store.users.get("u1") == idp_user(
        display_name="", email=None, groups=frozenset(), attributes={}
    )
    assert await store.users.get("u2") == idp_user(user_id="u2", username="bob@contoso.example")


async def test_update_profile_of_an_unknown_user_is_false(store: Store) -> None:
    assert (
        await store.users.update_profile(
            "ghost", display_name="G", email=None, groups=frozenset(), attributes={}
        )
        is False
    )
    assert await store.users.get("ghost") is None
    assert await store.users.list() == []


# -- idp sessions -----------------------------------------------------------------------------


async def test_idp_session_round_trips(store: Store) -> None:
    await store.idp_sessions.put(session())
    await store.idp_sessions.put(session("s2", sealed_refresh_token=None))  # the IdP gave no refresh token
    assert await store.idp_sessions.get("s1") == session()
    assert await store.idp_sessions.get("s2") == session("s2", sealed_refresh_token=None)
    assert await store.idp_sessions.get("nope") is None


async def test_an_expired_session_is_still_returned_until_purged(store: Store) -> None:
    await store.idp_sessions.put(session(expires_at=100.0))
    assert await store.idp_sessions.get("s1") == session(expires_at=100.0)  # the caller checks expires_at


async def test_duplicate_session_id_conflicts_and_changes_nothing(store: Store) -> None:
    await store.idp_sessions.put(session())
    with pytest.raises(Conflict):
        await store.idp_sessions.put(session(user_id="u2", provider="okta", sealed_refresh_token="other"))
    assert await store.idp_sessions.get("s1") == session()


async def test_update_token_replaces_the_token_and_the_check_time_only(store: Store) -> None:
    await store.idp_sessions.put(session())
    await store.idp_sessions.put(session("s2"))
    assert await store.idp_sessions.update_token("s1", "rotated-sealed", checked_at=1_700_003_600.75) is True
    assert await store.idp_sessions.get("s1") == session(
        sealed_refresh_token="rotated-sealed", checked_at=1_700_003_600.75
    )
    # the IdP stopped granting a refresh token: the sealed one is dropped
    assert await store.idp_sessions.update_token("s1", None, checked_at=1_700_007_200.0) is True
    assert await store.idp_sessions.get("s1") == session(
        sealed_refresh_token=None, checked_at=1_700_007_200.0
    )
    assert await store.idp_sessions.get("s2") == session("s2")
    assert await store.idp_sessions.update_token("ghost", "x", checked_at=1.0) is False
    assert await store.idp_sessions.get("ghost") is None


async def test_the_id_token_round_trips_and_is_replaced_only_when_given(store: Store) -> None:
    await store.idp_sessions.put(session(sealed_id_token=SEALED[::-1], id_token_expires_at=1_700_003_600.5))
    await store.idp_sessions.put(session("s2", sealed_id_token="other-id", id_token_expires_at=7))
    assert await store.idp_sessions.get("s1") == session(
        sealed_id_token=SEALED[::-1], id_token_expires_at=1_700_003_600.5
    )
    # a re-check without a new ID token keeps the stored one
    assert await store.idp_sessions.update_token("s1", "rotated", checked_at=1_700_001_000.0)
    assert await store.idp_sessions.get("s1") == session(
        sealed_refresh_token="rotated",
        checked_at=1_700_001_000.0,
        sealed_id_token=SEALED[::-1],
        id_token_expires_at=1_700_003_600.5,
    )
    # a refresh that brought a new ID token stores it with its expiry
    assert await store.idp_sessions.update_token(
        "s1",
        "rotated-again",
        checked_at=1_700_002_000.0,
        sealed_id_token="new-id",
        id_token_expires_at=1_700_005_600.25,
    )
    assert await store.idp_sessions.get("s1") == session(
        sealed_refresh_token="rotated-again",
        checked_at=1_700_002_000.0,
        sealed_id_token="new-id",
        id_token_expires_at=1_700_005_600.25,
    )
    assert await store.idp_sessions.get("s2") == session(
        "s2", sealed_id_token="other-id", id_token_expires_at=7.0
    )
    assert (
        await store.idp_sessions.update_token(
            "ghost", "x", checked_at=1.0, sealed_id_token="y", id_token_expires_at=2.0
        )
        is False
    )
    assert await store.idp_sessions.get("ghost") is None


async def test_latest_for_user_is_the_newest_live_session_at_that_provider(store: Store) -> None:
    sessions = store.idp_sessions
    assert await sessions.latest_for_user("u1", "entra", now=1000.0) is None
    await sessions.put(session("old", auth_time=100.0, expires_at=5000.0))
    await sessions.put(session("new", auth_time=300.0, expires_at=5000.0, sealed_id_token="id-new"))
    await sessions.put(session("newest-but-expired", auth_time=400.0, expires_at=1000.0))
    await sessions.put(session("other-provider", provider="okta", auth_time=500.0, expires_at=5000.0))
    await sessions.put(session("other-user", user_id="u2", auth_time=600.0, expires_at=5000.0))
    latest = await sessions.latest_for_user("u1", "entra", now=1000.0)  # expires_at == now: over
    assert latest == session("new", auth_time=300.0, expires_at=5000.0, sealed_id_token="id-new")
    assert (await sessions.latest_for_user("u1", "entra", now=999.0)) == session(
        "newest-but-expired", auth_time=400.0, expires_at=1000.0
    )
    okta = await sessions.latest_for_user("u1", "okta", now=1000.0)
    assert okta is not None
    assert okta.session_id == "other-provider"
    u2 = await sessions.latest_for_user("u2", "entra", now=1000.0)
    assert u2 is not None
    assert u2.session_id == "other-user"
    assert await sessions.latest_for_user("u1", "google", now=1000.0) is None
    assert await sessions.latest_for_user("u3", "entra", now=1000.0) is None
    assert await sessions.latest_for_user("u1", "entra", now=5000.0) is None
    await sessions.delete("new")
    fallback = await sessions.latest_for_user("u1", "entra", now=1000.0)
    assert fallback is not None
    assert fallback.session_id == "old"


async def test_delete_one_session(store: Store) -> None:
    await store.idp_sessions.put(session())
    await store.idp_sessions.put(session("s2"))
    assert await store.idp_sessions.delete("s1") is True
    assert await store.idp_sessions.delete("s1") is False
    assert await store.idp_sessions.get("s1") is None
    assert await store.idp_sessions.get("s2") == session("s2")
    await store.idp_sessions.put(session(checked_at=5.0))  # the id is free again
    assert await store.idp_sessions.get("s1") == session(checked_at=5.0)


async def test_delete_for_user_at_one_provider_or_all(store: Store) -> None:
    await store.idp_sessions.put(session("s1", "u1", "entra"))
    await store.idp_sessions.put(session("s2", "u1", "entra"))
    await store.idp_sessions.put(session("s3", "u1", "okta"))
    await store.idp_sessions.put(session("s4", "u2", "entra"))
    assert await store.idp_sessions.delete_for_user("u1", "entra") == 2
    assert [await store.idp_sessions.get(s) is not None for s in ("s1", "s2", "s3", "s4")] == [
        False,
        False,
        True,
        True,
    ]
    assert await store.idp_sessions.delete_for_user("u1", "entra") == 0
    assert await store.idp_sessions.delete_for_user("u1", "google") == 0
    assert await store.idp_sessions.delete_for_user("nobody") == 0
    await store.idp_sessions.put(session("s5", "u1", "google"))
    assert await store.idp_sessions.delete_for_user("u1") == 2
    assert await store.idp_sessions.get("s3") is None
    assert await store.idp_sessions.get("s5") is None
    assert await store.idp_sessions.get("s4") == session("s4", "u2", "entra")


async def test_purge_expired_is_inclusive_of_now(store: Store) -> None:
    for i, expires in enumerate([100.0, 150.0, 150.5, 300.0]):
        await store.idp_sessions.put(session(f"s{i}", expires_at=expires))
    assert await store.idp_sessions.purge_expired(now=150.0) == 2
    assert await store.idp_sessions.purge_expired(now=150.0) == 0
    assert [await store.idp_sessions.get(f"s{i}") is not None for i in range(4)] == [False, False, True, True]
    # a re-check never extends the maximum lifetime
    assert await store.idp_sessions.update_token("s2", "fresh", checked_at=150.4)
    assert await store.idp_sessions.purge_expired(now=200.0) == 1
    assert await store.idp_sessions.get("s2") is None


# -- replicas racing on one session id --------------------------------------------------------


async def test_concurrent_puts_of_one_session_id_have_exactly_one_winner(store_url: str) -> None:
    first = await open_store(store_url)
    replicas = [first, first] if store_url == "memory://" else [first, await open_store(store_url)]
    try:
        attempts = [replicas[i % 2].idp_sessions.put(session(user_id=f"u{i}")) for i in range(8)]
        results = await asyncio.gather(*attempts, return_exceptions=True)
        winners = [i for i, r in enumerate(results) if r is None]
        assert len(winners) == 1
        assert all(isinstance(r, Conflict) for r in results if r is not None)
        assert await replicas[1].idp_sessions.get("s1") == session(user_id=f"u{winners[0]}")
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


async def test_a_0005_database_upgrades_and_keeps_its_users(store_url: str) -> None:
    if store_url == "memory://":
        pytest.skip("a memory store has no schema to migrate")
    engine = create_engine(store_url)
    async with write_transaction(engine) as conn:
        await conn.run_sync(_upgrade_to("0005"))  # type: ignore[arg-type]
    assert await current_revision(engine) == "0005"
    old = SqlStore(engine)  # the user store only touches 0002's tables
    await old.users.add(idp_user())
    await old.close()

    store = await open_store(store_url)
    try:
        assert isinstance(store, SqlStore)
        assert await current_revision(store.engine) == head_revision()
        async with store.engine.connect() as conn:
            indexes = await conn.run_sync(
                lambda c: [ix["column_names"] for ix in sa.inspect(c).get_indexes("idp_sessions")]
            )
        assert ["user_id"] in indexes
        assert ["expires_at"] in indexes
        assert await store.users.get("u1") == idp_user()
        assert await store.users.update_profile(
            "u1", display_name="Alice", email=None, groups=frozenset(), attributes={}
        )
        await store.idp_sessions.put(session())
        assert await store.idp_sessions.get("s1") == session()
    finally:
        await store.close()


async def test_a_0006_database_upgrades_and_keeps_its_sessions(store_url: str) -> None:
    if store_url == "memory://":
        pytest.skip("a memory store has no schema to migrate")
    engine = create_engine(store_url)
    async with write_transaction(engine) as conn:
        await conn.run_sync(_upgrade_to("0006"))  # type: ignore[arg-type]
        await conn.execute(
            sa.text(
                "INSERT INTO idp_sessions (session_id, user_id, provider, sealed_refresh_token, "
                "auth_time, expires_at, checked_at) VALUES ('s1', 'u1', 'entra', :sealed, "
                "1700000000.25, 1700086400.25, 1700000000.25)"
            ),
            {"sealed": SEALED},
        )
    assert await current_revision(engine) == "0006"
    await engine.dispose()

    store = await open_store(store_url)
    try:
        assert isinstance(store, SqlStore)
        assert await current_revision(store.engine) == head_revision()
        assert await store.idp_sessions.get("s1") == session()  # no ID token until the next refresh
        assert await store.idp_sessions.latest_for_user("u1", "entra", now=1_700_000_001.0) == session()
        assert await store.idp_sessions.update_token(
            "s1", SEALED, checked_at=1_700_000_000.25, sealed_id_token="id", id_token_expires_at=9.5
        )
        assert await store.idp_sessions.get("s1") == session(sealed_id_token="id", id_token_expires_at=9.5)
    finally:
        await store.close()
