"""SQL stores for local users and their consents (SQLite and Postgres alike).

Sets (groups, scopes, resources) are stored as sorted JSON lists, so equal sets are
equal text and rows diff cleanly.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable, Mapping
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from bastion.core.errors import Conflict
from bastion.core.records import ConsentRecord, JsonObject, UserRecord
from bastion.store.sql_authz import dialect_insert, dumps
from bastion.store.sql_engine import write_transaction
from bastion.store.tables import consents, users


def _set_text(values: Iterable[str]) -> str:
    return dumps(sorted(values))


def _user(row: Mapping[Any, Any]) -> UserRecord:
    return UserRecord(
        user_id=row["user_id"],
        username=row["username"],
        password_hash=row["password_hash"],
        display_name=row["display_name"],
        email=row["email"],
        groups=frozenset(orjson.loads(row["groups"])),
        attributes=orjson.loads(row["attributes"]),
        disabled=bool(row["disabled"]),
        source=row["source"],
        created_at=row["created_at"],
    )


class SqlUserStore:
    """Users keyed by user_id; the database enforces the unique username."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def add(self, user: UserRecord) -> None:
        row = {
            "user_id": user.user_id,
            "username": user.username,
            "password_hash": user.password_hash,
            "display_name": user.display_name,
            "email": user.email,
            "groups": _set_text(user.groups),
            "attributes": dumps(user.attributes),
            "disabled": user.disabled,
            "source": user.source,
            "created_at": float(user.created_at),
        }
        try:
            async with write_transaction(self._engine) as conn:
                await conn.execute(sa.insert(users).values(**row))
        except IntegrityError:
            # Either key: the message must not say which (that would confirm a username exists).
            raise Conflict("the user id or username is taken") from None

    async def _one(self, where: sa.ColumnElement[bool]) -> UserRecord | None:
        async with self._engine.connect() as conn:
            row = (await conn.execute(sa.select(users).where(where))).mappings().first()
        return _user(row) if row is not None else None

    async def get(self, user_id: str) -> UserRecord | None:
        return await self._one(users.c.user_id == user_id)

    async def get_by_username(self, username: str) -> UserRecord | None:
        return await self._one(users.c.username == username)

    async def list(self) -> builtins.list[UserRecord]:
        async with self._engine.connect() as conn:
            rows = (await conn.execute(sa.select(users).order_by(users.c.username))).mappings().all()
        return [_user(row) for row in rows]

    async def _update(self, user_id: str, **values: object) -> bool:
        async with write_transaction(self._engine) as conn:
            result = await conn.execute(sa.update(users).where(users.c.user_id == user_id).values(**values))
        return bool(result.rowcount)

    async def set_disabled(self, user_id: str, disabled: bool) -> bool:
        return await self._update(user_id, disabled=disabled)

    async def set_password_hash(self, user_id: str, password_hash: str | None) -> bool:
        return await self._update(user_id, password_hash=password_hash)

    async def update_profile(
        self,
        user_id: str,
        *,
        display_name: str,
        email: str | None,
        groups: frozenset[str],
        attributes: JsonObject,
    ) -> bool:
        return await self._update(
            user_id,
            display_name=display_name,
            email=email,
            groups=_set_text(groups),
            attributes=dumps(attributes),
        )

    async def delete(self, user_id: str) -> bool:
        async with write_transaction(self._engine) as conn:
            result = await conn.execute(sa.delete(users).where(users.c.user_id == user_id))
        return bool(result.rowcount)


def _consent(row: Mapping[Any, Any]) -> ConsentRecord:
    return ConsentRecord(
        user_id=row["user_id"],
        client_id=row["client_id"],
        scopes=frozenset(orjson.loads(row["scopes"])),
        resources=frozenset(orjson.loads(row["resources"])),
        granted_at=row["granted_at"],
    )


class SqlConsentStore:
    """One row per (user, client); ``grant`` replaces it as a whole."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def grant(self, consent: ConsentRecord) -> None:
        row = {
            "user_id": consent.user_id,
            "client_id": consent.client_id,
            "scopes": _set_text(consent.scopes),
            "resources": _set_text(consent.resources),
            "granted_at": float(consent.granted_at),
        }
        stmt = dialect_insert(self._engine)(consents).values(**row)
        stmt = stmt.on_conflict_do_update(
            index_elements=[consents.c.user_id, consents.c.client_id],
            set_={name: stmt.excluded[name] for name in ("scopes", "resources", "granted_at")},
        )
        async with write_transaction(self._engine) as conn:
            await conn.execute(stmt)

    async def get(self, user_id: str, client_id: str) -> ConsentRecord | None:
        query = sa.select(consents).where(consents.c.user_id == user_id, consents.c.client_id == client_id)
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).mappings().first()
        return _consent(row) if row is not None else None

    async def list(self, user_id: str | None = None) -> builtins.list[ConsentRecord]:
        query = sa.select(consents).order_by(consents.c.user_id, consents.c.client_id)
        if user_id is not None:
            query = query.where(consents.c.user_id == user_id)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [_consent(row) for row in rows]

    async def revoke(self, user_id: str, client_id: str) -> bool:
        stmt = sa.delete(consents).where(consents.c.user_id == user_id, consents.c.client_id == client_id)
        async with write_transaction(self._engine) as conn:
            result = await conn.execute(stmt)
        return bool(result.rowcount)
