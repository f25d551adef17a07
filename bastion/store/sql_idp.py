"""SQL store for sign-ins at enterprise IdPs (SQLite and Postgres alike).

The IdP's refresh and ID tokens arrive sealed (AES-GCM, by the caller) and are stored as that
opaque text: neither the store nor the database ever sees them in the clear.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from bastion.core.errors import Conflict
from bastion.core.records import IdpSession
from bastion.store.sql_engine import write_transaction
from bastion.store.tables import idp_sessions


def _float_or_none(value: float | None) -> float | None:
    return float(value) if value is not None else None


def _session(row: Mapping[Any, Any]) -> IdpSession:
    return IdpSession(
        session_id=row["session_id"],
        user_id=row["user_id"],
        provider=row["provider"],
        sealed_refresh_token=row["sealed_refresh_token"],
        auth_time=row["auth_time"],
        expires_at=row["expires_at"],
        checked_at=row["checked_at"],
        sealed_id_token=row["sealed_id_token"],
        id_token_expires_at=row["id_token_expires_at"],
    )


class SqlIdpSessionStore:
    """One row per IdP sign-in, keyed by Bastion's session id."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def put(self, session: IdpSession) -> None:
        row = {
            "session_id": session.session_id,
            "user_id": session.user_id,
            "provider": session.provider,
            "sealed_refresh_token": session.sealed_refresh_token,
            "auth_time": float(session.auth_time),
            "expires_at": float(session.expires_at),
            "checked_at": float(session.checked_at),
            "sealed_id_token": session.sealed_id_token,
            "id_token_expires_at": _float_or_none(session.id_token_expires_at),
        }
        try:
            async with write_transaction(self._engine) as conn:
                await conn.execute(sa.insert(idp_sessions).values(**row))
        except IntegrityError:
            raise Conflict("idp session id already stored") from None

    async def get(self, session_id: str) -> IdpSession | None:
        query = sa.select(idp_sessions).where(idp_sessions.c.session_id == session_id)
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).mappings().first()
        return _session(row) if row is not None else None

    async def latest_for_user(self, user_id: str, provider: str, now: float) -> IdpSession | None:
        query = (
            sa.select(idp_sessions)
            .where(
                idp_sessions.c.user_id == user_id,
                idp_sessions.c.provider == provider,
                idp_sessions.c.expires_at > float(now),
            )
            .order_by(idp_sessions.c.auth_time.desc(), idp_sessions.c.session_id.desc())
            .limit(1)
        )
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).mappings().first()
        return _session(row) if row is not None else None

    async def update_token(
        self,
        session_id: str,
        sealed_refresh_token: str | None,
        checked_at: float,
        *,
        sealed_id_token: str | None = None,
        id_token_expires_at: float | None = None,
    ) -> bool:
        values: dict[str, Any] = {
            "sealed_refresh_token": sealed_refresh_token,
            "checked_at": float(checked_at),
        }
        if sealed_id_token is not None:
            values |= {
                "sealed_id_token": sealed_id_token,
                "id_token_expires_at": _float_or_none(id_token_expires_at),
            }
        stmt = sa.update(idp_sessions).where(idp_sessions.c.session_id == session_id).values(**values)
        return bool(await self._rowcount(stmt))

    async def delete(self, session_id: str) -> bool:
        return bool(
            await self._rowcount(sa.delete(idp_sessions).where(idp_sessions.c.session_id == session_id))
        )

    async def delete_for_user(self, user_id: str, provider: str | None = None) -> int:
        stmt = sa.delete(idp_sessions).where(idp_sessions.c.user_id == user_id)
        if provider is not None:
            stmt = stmt.where(idp_sessions.c.provider == provider)
        return await self._rowcount(stmt)

    async def purge_expired(self, now: float) -> int:
        return await self._rowcount(sa.delete(idp_sessions).where(idp_sessions.c.expires_at <= now))

    async def _rowcount(self, stmt: sa.Update | sa.Delete) -> int:
        async with write_transaction(self._engine) as conn:
            result = await conn.execute(stmt)
        return int(result.rowcount)
