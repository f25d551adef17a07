"""The OAuth client store, one contract for memory, SQLite and a real PostgreSQL: registrations
from config and RFC 7591 DCR round-trip, are replaced by client_id, listed by source; DCR
registrations that are never used expire, and a use (``touch``) keeps them; and the
0002 → 0003 migration keeps what was stored before.
"""

from __future__ import annotations

import dataclasses

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from bastion.core.records import ClientRecord, UserRecord
from bastion.store import Store, open_store
from bastion.store.factory import MIGRATIONS_DIR, current_revision, head_revision
from bastion.store.sql import SqlStore, create_engine
from bastion.store.sql_engine import write_transaction


def client(cid: str = "c1", **kw: object) -> ClientRecord:
    fields: dict[str, object] = {
        "client_id": cid,
        "source": "config",
        "client_name": "Claude Ü",
        "redirect_uris": ("https://app.example.com/cb", "http://127.0.0.1/callback"),
        "grant_types": ("authorization_code", "refresh_token"),
        "token_endpoint_auth_method": "client_secret_basic",
        "secret_hash": "ab" * 32,
        "jwks": None,
        "jwks_uri": None,
        "scope": "mcp:read mcp:write",
        "application_type": "web",
        "trusted": True,
        "created_at": 1_700_000_000.25,
        "expires_at": None,
        "last_used_at": None,
        "metadata": {},
    }
    fields.update(kw)
    return ClientRecord(**fields)  # type: ignore[arg-type]


def dcr(cid: str, expires_at: float | None = 500.0, **kw: object) -> ClientRecord:
    fields: dict[str, object] = {
        "source": "dcr",
        "token_endpoint_auth_method": "none",
        "secret_hash": None,
        "trusted": False,
        "application_type": "native",
        "expires_at": expires_at,
        "metadata": {"client_uri": "https://x.example", "contacts": ["a@x.example"], "n": None},
    }
    fields.update(kw)
    return client(cid, **fields)


def _sql_only(store_url: str) -> None:
    if store_url == "memory://":
        pytest.skip("a memory store has no schema to migrate")


async def test_client_round_trips_every_field(store: Store) -> None:
    jwt_client = client(
        "c2",
        token_endpoint_auth_method="private_key_jwt",
        secret_hash=None,
        jwks={"keys": [{"kty": "EC", "crv": "P-256", "x": "eA", "y": "eQ"}]},
        grant_types=("client_credentials",),
        redirect_uris=(),
        scope=None,
        client_name=None,
        last_used_at=1_700_000_100.5,
        metadata={"software_id": "s", "nested": {"list": [1, 2.5, "ü"]}},
    )
    await store.clients.put(client())
    await store.clients.put(jwt_client)
    assert await store.clients.get("c1") == client()
    assert await store.clients.get("c2") == jwt_client
    assert await store.clients.get("nobody") is None


async def test_put_replaces_the_registration(store: Store) -> None:
    await store.clients.put(client())
    changed = client(redirect_uris=("https://new.example/cb",), trusted=False, jwks_uri="https://j.example")
    await store.clients.put(changed)
    assert await store.clients.get("c1") == changed
    assert [c.client_id for c in await store.clients.list()] == ["c1"]


async def test_stored_values_are_copies(store: Store) -> None:
    original = dcr("d1")
    await store.clients.put(original)
    original.metadata["contacts"].append("mallory@x.example")
    got = await store.clients.get("d1")
    assert got == dcr("d1")
    assert got is not None
    got.metadata["client_uri"] = "changed"
    assert await store.clients.get("d1") == dcr("d1")


async def test_list_is_ordered_and_filters_by_source(store: Store) -> None:
    for record in [dcr("d2"), client("c9"), dcr("d1"), client("c1")]:
        await store.clients.put(record)
    assert [c.client_id for c in await store.clients.list()] == ["c1", "c9", "d1", "d2"]
    assert [c.client_id for c in await store.clients.list("config")] == ["c1", "c9"]
    assert [c.client_id for c in await store.clients.list(source="dcr")] == ["d1", "d2"]
    assert await store.clients.list("cimd") == []


async def test_delete(store: Store) -> None:
    await store.clients.put(client())
    assert await store.clients.delete("c1") is True
    assert await store.clients.delete("c1") is False
    assert await store.clients.get("c1") is None


async def test_purge_removes_unused_expired_dcr_clients_only(store: Store) -> None:
    await store.clients.put(dcr("d-expired", expires_at=100.0))
    await store.clients.put(dcr("d-boundary", expires_at=200.0))
    await store.clients.put(dcr("d-later", expires_at=300.0))
    await store.clients.put(dcr("d-forever", expires_at=None))
    await store.clients.put(client("c1"))  # config clients never expire
    assert await store.clients.purge_expired(now=200.0) == 2  # expires_at <= now
    assert [c.client_id for c in await store.clients.list()] == ["c1", "d-forever", "d-later"]
    assert await store.clients.purge_expired(now=200.0) == 0


async def test_touch_keeps_a_used_registration(store: Store) -> None:
    await store.clients.put(dcr("d-used", expires_at=100.0))
    await store.clients.put(dcr("d-unused", expires_at=100.0))
    await store.clients.touch("d-used", now=50.0)
    assert await store.clients.get("d-used") == dcr("d-used", expires_at=None, last_used_at=50.0)
    assert await store.clients.purge_expired(now=1_000_000.0) == 1
    assert [c.client_id for c in await store.clients.list()] == ["d-used"]
    await store.clients.touch("d-used", now=60.0)
    got = await store.clients.get("d-used")
    assert got is not None
    assert got.last_used_at == 60.0
    await store.clients.touch("ghost", now=1.0)  # unknown: nothing happens
    assert await store.clients.get("ghost") is None


async def test_a_replaced_registration_can_expire_again(store: Store) -> None:
    await store.clients.put(dcr("d1", expires_at=None, last_used_at=5.0))
    await store.clients.put(dataclasses.replace(dcr("d1"), expires_at=10.0))
    assert await store.clients.purge_expired(now=10.0) == 1


def _upgrade_to(revision: str) -> object:
    def run(connection: sa.Connection) -> None:
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
        config.attributes["connection"] = connection
        command.upgrade(config, revision)

    return run


async def test_a_0002_database_upgrades_and_keeps_its_users(store_url: str) -> None:
    _sql_only(store_url)
    engine = create_engine(store_url)
    async with write_transaction(engine) as conn:
        await conn.run_sync(_upgrade_to("0002"))  # type: ignore[arg-type]
    assert await current_revision(engine) == "0002"
    old = SqlStore(engine)  # the user store only touches 0002's tables
    alice = UserRecord(user_id="u1", username="alice", password_hash=None, created_at=1.0)
    await old.users.add(alice)
    await old.close()

    store = await open_store(store_url)
    try:
        assert isinstance(store, SqlStore)
        assert await current_revision(store.engine) == head_revision()
        assert await store.users.get("u1") == alice
        await store.clients.put(client())
        assert await store.clients.get("c1") == client()
    finally:
        await store.close()
