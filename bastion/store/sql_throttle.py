"""SQL rate-limit counters shared by every replica (SQLite and Postgres alike).

``hit`` inserts the attempt and counts the window in one transaction, and hits on the
same key never overlap: on SQLite ``BEGIN IMMEDIATE`` holds the database write lock, on
Postgres a transaction-scoped advisory lock on the key's hash is taken first. Without it,
READ COMMITTED would let two parallel attempts each miss the other's uncommitted row and
both report the same count.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from bastion.store.sql_engine import write_transaction
from bastion.store.tables import throttle_hits

# The first half of the two-int advisory lock key ("bast"); the second is hashtext(key).
# Two-int keys never collide with the one-bigint key of the migration lock.
_LOCK_CLASS = 0x62617374


def _window(key: str, now: float, window_s: float) -> sa.Select[int]:
    """Count ``key``'s attempts in ``(now - window_s, now]`` (the (key, ts) index covers it)."""
    return (
        sa.select(sa.func.count())
        .select_from(throttle_hits)
        .where(throttle_hits.c.key == key, throttle_hits.c.ts > now - window_s, throttle_hits.c.ts <= now)
    )


class SqlThrottleStore:
    """One row per attempt."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def hit(self, key: str, now: float, window_s: float) -> int:
        async with write_transaction(self._engine) as conn:
            if self._engine.dialect.name == "postgresql":
                # Keys that collide in hashtext only share a lock; they are still counted apart.
                await conn.execute(
                    sa.select(sa.func.pg_advisory_xact_lock(_LOCK_CLASS, sa.func.hashtext(key)))
                )
            await conn.execute(sa.insert(throttle_hits).values(key=key, ts=float(now)))
            return int((await conn.execute(_window(key, now, window_s))).scalar_one())

    async def count(self, key: str, now: float, window_s: float) -> int:
        async with self._engine.connect() as conn:
            return int((await conn.execute(_window(key, now, window_s))).scalar_one())

    async def reset(self, key: str) -> None:
        async with write_transaction(self._engine) as conn:
            await conn.execute(sa.delete(throttle_hits).where(throttle_hits.c.key == key))

    async def purge_before(self, ts: float) -> int:
        async with write_transaction(self._engine) as conn:
            result = await conn.execute(sa.delete(throttle_hits).where(throttle_hits.c.ts < ts))
        return int(result.rowcount)
