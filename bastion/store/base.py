"""Storage protocols. Every implementation passes tests/contract (one suite for all)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from bastion.core.records import AuditRecord, SessionRecord, StoredAuditRecord


class AuditStore(Protocol):
    async def append(self, records: Sequence[AuditRecord]) -> list[StoredAuditRecord]:
        """Append in order, extending the hash chain; returns what was stored."""
        ...

    async def tail(self, limit: int = 50, after_seq: int | None = None) -> list[StoredAuditRecord]:
        """The newest ``limit`` records (ascending seq), or those after ``after_seq``."""
        ...

    async def last(self) -> StoredAuditRecord | None: ...

    async def purge_before(self, ts: float) -> int:
        """Delete records older than ``ts`` (retention); returns the count."""
        ...


class SessionStore(Protocol):
    async def put(self, session: SessionRecord) -> None: ...

    async def get(self, session_id: str) -> SessionRecord | None: ...

    async def touch(self, session_id: str, now: float) -> None: ...

    async def delete(self, session_id: str) -> bool: ...

    async def expire(self, older_than: float) -> int:
        """Delete sessions whose last_seen is before ``older_than``; returns the count."""
        ...


class Store(Protocol):
    @property
    def audit(self) -> AuditStore: ...

    @property
    def sessions(self) -> SessionStore: ...

    async def close(self) -> None: ...
