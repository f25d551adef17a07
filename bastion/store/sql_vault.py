"""SQL store for per-user downstream credentials (SQLite and Postgres alike).

Secrets arrive sealed (``bastion.vault.envelope``) and are stored as that opaque text. Every
write that must not race is one conditional statement, so it is atomic on both databases and
across replicas without an explicit row lock:

- ``replace`` is ``UPDATE ... WHERE version = :expected`` (compare-and-set);
- ``take_lease`` is ``UPDATE ... WHERE lease_until <= :now OR lease_owner = :owner RETURNING *``:
  of many replicas asking at once, the database lets exactly one update match;
- ``put`` is an upsert whose update moves the version past the stored one.
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncEngine

from bastion.core.records import VaultRecord
from bastion.store.sql_engine import write_transaction
from bastion.store.tables import vault_records

_KEY_COLUMNS = ("user_id", "connection")


def _float_or_none(value: float | None) -> float | None:
    return float(value) if value is not None else None


def _row(record: VaultRecord) -> dict[str, Any]:
    return {
        "user_id": record.user_id,
        "connection": record.connection,
        "kind": record.kind,
        "key_id": record.key_id,
        "wrapped_key": record.wrapped_key,
        "sealed": record.sealed,
        "scopes": orjson.dumps(list(record.scopes)).decode(),
        "expires_at": _float_or_none(record.expires_at),
        "status": record.status,
        "account": record.account,
        "version": int(record.version),
        "created_at": float(record.created_at),
        "updated_at": float(record.updated_at),
        "last_used_at": _float_or_none(record.last_used_at),
        "lease_owner": record.lease_owner,
        "lease_until": float(record.lease_until),
    }


def _record(row: Mapping[Any, Any]) -> VaultRecord:
    return VaultRecord(
        user_id=row["user_id"],
        connection=row["connection"],
        kind=row["kind"],
        key_id=row["key_id"],
        wrapped_key=row["wrapped_key"],
        sealed=row["sealed"],
        scopes=tuple(orjson.loads(row["scopes"])),
        expires_at=row["expires_at"],
        status=row["status"],
        account=row["account"],
        version=int(row["version"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        last_used_at=row["last_used_at"],
        lease_owner=row["lease_owner"],
        lease_until=row["lease_until"],
    )


def _this(user_id: str, connection: str) -> sa.ColumnElement[bool]:
    return sa.and_(vault_records.c.user_id == user_id, vault_records.c.connection == connection)


class SqlVaultStore:
    """One row per (user_id, connection)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def get(self, user_id: str, connection: str) -> VaultRecord | None:
        query = sa.select(vault_records).where(_this(user_id, connection))
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).mappings().first()
        return _record(row) if row is not None else None

    async def list_for_user(self, user_id: str) -> builtins.list[VaultRecord]:
        query = (
            sa.select(vault_records)
            .where(vault_records.c.user_id == user_id)
            .order_by(vault_records.c.connection)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [_record(row) for row in rows]

    async def put(self, record: VaultRecord) -> None:
        row = _row(record)
        insert = pg_insert if self._engine.dialect.name == "postgresql" else sqlite_insert
        stmt = insert(vault_records).values(**row)
        updated: dict[str, sa.ColumnElement[Any]] = {
            name: stmt.excluded[name] for name in row if name not in _KEY_COLUMNS
        }
        # past the stored version, so a compare-and-set against the old credential fails
        updated["version"] = sa.case(
            (vault_records.c.version >= stmt.excluded.version, vault_records.c.version + 1),
            else_=stmt.excluded.version,
        )
        stmt = stmt.on_conflict_do_update(index_elements=list(_KEY_COLUMNS), set_=updated)
        async with write_transaction(self._engine) as conn:
            await conn.execute(stmt)

    async def replace(self, record: VaultRecord, expected_version: int) -> bool:
        if record.version <= expected_version:  # or a later compare-and-set could succeed twice
            raise ValueError("record.version must be above expected_version")
        values = {k: v for k, v in _row(record).items() if k not in _KEY_COLUMNS}
        stmt = (
            sa.update(vault_records)
            .where(_this(record.user_id, record.connection), vault_records.c.version == expected_version)
            .values(**values)
        )
        return bool(await self._rowcount(stmt))

    async def take_lease(
        self, user_id: str, connection: str, owner: str, until: float, now: float
    ) -> VaultRecord | None:
        stmt = (
            sa.update(vault_records)
            .where(
                _this(user_id, connection),
                sa.or_(vault_records.c.lease_until <= float(now), vault_records.c.lease_owner == owner),
            )
            .values(lease_owner=owner, lease_until=float(until))
            .returning(*vault_records.c)
        )
        async with write_transaction(self._engine) as conn:
            row = (await conn.execute(stmt)).mappings().first()
        return _record(row) if row is not None else None

    async def release_lease(self, user_id: str, connection: str, owner: str) -> None:
        stmt = (
            sa.update(vault_records)
            .where(_this(user_id, connection), vault_records.c.lease_owner == owner)
            .values(lease_owner=None, lease_until=0.0)
        )
        await self._rowcount(stmt)

    async def touch(self, user_id: str, connection: str, now: float) -> None:
        # last_used_at only moves forward: replicas with skewed clocks must not move it back
        last = vault_records.c.last_used_at
        stmt = (
            sa.update(vault_records)
            .where(_this(user_id, connection), sa.or_(last.is_(None), last < float(now)))
            .values(last_used_at=float(now))
        )
        await self._rowcount(stmt)

    async def delete(self, user_id: str, connection: str) -> bool:
        return bool(await self._rowcount(sa.delete(vault_records).where(_this(user_id, connection))))

    async def delete_for_user(self, user_id: str) -> int:
        return await self._rowcount(sa.delete(vault_records).where(vault_records.c.user_id == user_id))

    async def key_ids(self) -> set[str]:
        query = sa.select(vault_records.c.key_id).distinct()
        async with self._engine.connect() as conn:
            return set((await conn.execute(query)).scalars().all())

    async def count_by_key(self) -> dict[str, int]:
        query = sa.select(vault_records.c.key_id, sa.func.count()).group_by(vault_records.c.key_id)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return {str(key_id): int(count) for key_id, count in rows}

    async def wrapped_under_other_than(self, key_id: str, limit: int) -> builtins.list[VaultRecord]:
        query = (
            sa.select(vault_records)
            .where(vault_records.c.key_id != key_id)
            .order_by(vault_records.c.user_id, vault_records.c.connection)
            .limit(max(limit, 0))
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [_record(row) for row in rows]

    async def _rowcount(self, stmt: sa.Update | sa.Delete) -> int:
        async with write_transaction(self._engine) as conn:
            result = await conn.execute(stmt)
        return int(result.rowcount)
