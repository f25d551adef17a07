"""Legacy-era sessions: Bastion's own ``Mcp-Session-Id`` values, bound to a principal.

The client never sees an upstream's session id. Records live in the store so any replica can
resolve them; a process-local cache keeps lookups off the database on the hot path, and
``last_seen`` is written back in batches by :meth:`SessionManager.maintain`.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from bastion.core.errors import SessionNotFound
from bastion.core.records import SessionRecord
from bastion.store.base import SessionStore


def new_session_id() -> str:
    # 256 bits from the CSPRNG, visible ASCII only (the spec's constraint on session ids)
    return secrets.token_urlsafe(32)


def session_tag(session_id: str | None) -> str | None:
    """A short, non-reversible tag for logs and audit: never log the session id itself."""
    if session_id is None:
        return None
    return hashlib.sha256(session_id.encode()).hexdigest()[:12]


class SessionManager:
    def __init__(
        self,
        store: SessionStore,
        *,
        idle_ttl: float,
        replica: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._idle_ttl = idle_ttl
        self._replica = replica
        self._clock = clock
        self._cache: dict[str, SessionRecord] = {}
        self._touched: dict[str, float] = {}
        self.on_expired: list[Callable[[str], None]] = []

    @property
    def replica(self) -> str:
        return self._replica

    async def create_relay(
        self, endpoint: str, subject: str, params: dict[str, Any], version: str
    ) -> SessionRecord:
        """A relay session for a client's ``initialize`` (its ``params``), at ``version``."""
        return await self.create(
            endpoint=endpoint,
            subject=subject,
            protocol_version=version,
            mode="relay",
            client_capabilities=params.get("capabilities") or {},
            client_info=params.get("clientInfo") or {},
        )

    async def create(
        self,
        *,
        endpoint: str | None,
        subject: str,
        protocol_version: str,
        mode: str,
        upstream_session_id: str | None = None,
        client_capabilities: dict[str, object] | None = None,
        client_info: dict[str, object] | None = None,
    ) -> SessionRecord:
        now = self._clock()
        record = SessionRecord(
            session_id=new_session_id(),
            endpoint=endpoint,
            subject=subject,
            protocol_version=protocol_version,
            mode=mode,
            upstream_session_id=upstream_session_id,
            client_capabilities=dict(client_capabilities or {}),
            client_info=dict(client_info or {}),
            created_at=now,
            last_seen=now,
            replica=self._replica,
        )
        await self._store.put(record)
        self._cache[record.session_id] = record
        return record

    async def resolve(self, session_id: str, endpoint: str | None, subject: str) -> SessionRecord:
        """The session for this endpoint and principal, or SessionNotFound (404: re-initialize).

        A session presented at another endpoint or by another principal is treated as unknown,
        so a session id never stands for identity.
        """
        record = self._cache.get(session_id)
        if record is None:
            record = await self._store.get(session_id)
            if record is None:
                raise SessionNotFound("Session not found")
            self._cache[session_id] = record
        now = self._clock()
        last = self._touched.get(session_id, record.last_seen)
        if now - last > self._idle_ttl:
            await self.drop(session_id)
            raise SessionNotFound("Session expired")
        if record.endpoint != endpoint or record.subject != subject:
            raise SessionNotFound(
                "Session not found", detail="session presented at another endpoint or by another principal"
            )
        self._touched[session_id] = now
        return record

    async def update(self, record: SessionRecord, **changes: object) -> SessionRecord:
        updated = replace(record, **changes)  # type: ignore[arg-type]
        await self._store.put(updated)
        self._cache[record.session_id] = updated
        return updated

    async def drop(self, session_id: str) -> None:
        self._cache.pop(session_id, None)
        self._touched.pop(session_id, None)
        await self._store.delete(session_id)

    async def maintain(self) -> list[str]:
        """Write back last_seen values and expire idle sessions; returns the expired ids."""
        touched, self._touched = self._touched, {}
        for session_id, seen in touched.items():
            await self._store.touch(session_id, seen)
            record = self._cache.get(session_id)
            if record is not None:
                self._cache[session_id] = replace(record, last_seen=seen)
        cutoff = self._clock() - self._idle_ttl
        expired = [
            sid for sid, rec in self._cache.items() if rec.last_seen < cutoff and sid not in self._touched
        ]
        for session_id in expired:
            self._cache.pop(session_id, None)
            for callback in self.on_expired:
                callback(session_id)
        await self._store.expire(cutoff)
        return expired
