"""SQL deny list of revoked JWT access tokens, by ``jti`` (SQLite and Postgres alike).

A signed access token cannot be recalled, so every replica refuses revoked ones itself:
it polls ``revoked_since`` and keeps the answer in memory. Rows are kept only until the
token expires; after that the signature check refuses it anyway.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from bastion.store.sql_authz import dialect_insert
from bastion.store.sql_engine import write_transaction
from bastion.store.tables import revoked_tokens


class SqlRevokedTokenStore:
    """One row per revoked ``jti``; a second revocation leaves the first row as it was."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def revoke(self, jti: str, expires_at: float, now: float) -> None:
        # DO NOTHING, not an update: pollers page by revoked_at, which must not move.
        stmt = (
            dialect_insert(self._engine)(revoked_tokens)
            .values(jti=jti, expires_at=float(expires_at), revoked_at=float(now))
            .on_conflict_do_nothing(index_elements=[revoked_tokens.c.jti])
        )
        async with write_transaction(self._engine) as conn:
            await conn.execute(stmt)

    async def revoked_since(self, since: float, now: float) -> list[tuple[str, float, float]]:
        query = (
            sa.select(revoked_tokens.c.jti, revoked_tokens.c.expires_at, revoked_tokens.c.revoked_at)
            .where(revoked_tokens.c.revoked_at >= since, revoked_tokens.c.expires_at > now)
            .order_by(revoked_tokens.c.revoked_at, revoked_tokens.c.jti)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [(row.jti, row.expires_at, row.revoked_at) for row in rows]

    async def purge_expired(self, now: float) -> int:
        async with write_transaction(self._engine) as conn:
            result = await conn.execute(sa.delete(revoked_tokens).where(revoked_tokens.c.expires_at <= now))
        return int(result.rowcount)
