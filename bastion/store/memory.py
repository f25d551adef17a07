"""In-memory Store for tests and throwaway demos: same semantics as the SQL stores.

Everything is lost when the process exits; ``open_store("memory://")`` logs a
warning saying so. One asyncio lock serializes appends, so the hash chain never forks
within the process (there is no other process that could share it).
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
from collections.abc import Sequence

from bastion.core.records import AuditRecord, SessionRecord, StoredAuditRecord
from bastion.store.hashing import GENESIS_HASH, link_hash, normalize
from bastion.store.memory_authz import (
    MemoryClientStore,
    MemoryConsentStore,
    MemoryGrantStore,
    MemoryIdpSessionStore,
    MemoryRefreshStore,
    MemoryRevokedTokenStore,
    MemorySigningKeyStore,
    MemoryThrottleStore,
    MemoryUserStore,
)
from bastion.store.memory_vault import MemoryVaultStore


class MemoryAuditStore:
    """Append-only list of stored records plus the chain head (which purges never move)."""

    def __init__(self) -> None:
        self._records: list[StoredAuditRecord] = []
        self._head_seq = 0
        self._head_hash = GENESIS_HASH
        self._lock = asyncio.Lock()

    async def append(self, records: Sequence[AuditRecord]) -> list[StoredAuditRecord]:
        async with self._lock:
            stored: list[StoredAuditRecord] = []
            seq, prev = self._head_seq, self._head_hash
            for record in records:
                clean = normalize(record)
                seq += 1
                digest = link_hash(prev, clean)
                stored.append(StoredAuditRecord(seq=seq, record=clean, prev_hash=prev, hash=digest))
                prev = digest
            # Commit all or nothing, like the SQL transaction does.
            self._records.extend(stored)
            self._head_seq, self._head_hash = seq, prev
            return stored

    async def tail(self, limit: int = 50, after_seq: int | None = None) -> list[StoredAuditRecord]:
        if limit <= 0:
            return []
        if after_seq is None:
            return list(self._records[-limit:])
        return [r for r in self._records if r.seq > after_seq][:limit]

    async def last(self) -> StoredAuditRecord | None:
        return self._records[-1] if self._records else None

    async def purge_before(self, ts: float) -> int:
        async with self._lock:
            # Only a prefix is removed, so what remains is still one contiguous chain.
            keep_from = next(
                (i for i, r in enumerate(self._records) if r.record.ts >= ts), len(self._records)
            )
            del self._records[:keep_from]
            return keep_from


class MemorySessionStore:
    """Sessions in a dict; values are deep-copied in and out like a database would."""

    def __init__(self) -> None:
        self._sessions: dict[str, SessionRecord] = {}

    @staticmethod
    def _copy(session: SessionRecord) -> SessionRecord:
        return dataclasses.replace(
            session,
            client_capabilities=copy.deepcopy(session.client_capabilities),
            client_info=copy.deepcopy(session.client_info),
        )

    async def put(self, session: SessionRecord) -> None:
        self._sessions[session.session_id] = self._copy(session)

    async def get(self, session_id: str) -> SessionRecord | None:
        session = self._sessions.get(session_id)
        return self._copy(session) if session is not None else None

    async def touch(self, session_id: str, now: float) -> None:
        session = self._sessions.get(session_id)
        # last_seen only moves forward: replicas with skewed clocks must not shorten a session.
        if session is not None and now > session.last_seen:
            self._sessions[session_id] = dataclasses.replace(session, last_seen=now)

    async def delete(self, session_id: str) -> bool:
        return self._sessions.pop(session_id, None) is not None

    async def expire(self, older_than: float) -> int:
        stale = [sid for sid, s in self._sessions.items() if s.last_seen < older_than]
        for sid in stale:
            del self._sessions[sid]
        return len(stale)


class MemoryStore:
    """The Store protocol over MemoryAuditStore, MemorySessionStore and the memory_authz stores."""

    def __init__(self) -> None:
        self._audit = MemoryAuditStore()
        self._sessions = MemorySessionStore()
        self._signing_keys = MemorySigningKeyStore()
        self._users = MemoryUserStore()
        self._grants = MemoryGrantStore()
        self._refresh_tokens = MemoryRefreshStore()
        self._consents = MemoryConsentStore()
        self._clients = MemoryClientStore()
        self._revoked_tokens = MemoryRevokedTokenStore()
        self._throttle = MemoryThrottleStore()
        self._idp_sessions = MemoryIdpSessionStore()
        self._vault = MemoryVaultStore()

    @property
    def audit(self) -> MemoryAuditStore:
        return self._audit

    @property
    def sessions(self) -> MemorySessionStore:
        return self._sessions

    @property
    def signing_keys(self) -> MemorySigningKeyStore:
        return self._signing_keys

    @property
    def users(self) -> MemoryUserStore:
        return self._users

    @property
    def grants(self) -> MemoryGrantStore:
        return self._grants

    @property
    def refresh_tokens(self) -> MemoryRefreshStore:
        return self._refresh_tokens

    @property
    def consents(self) -> MemoryConsentStore:
        return self._consents

    @property
    def clients(self) -> MemoryClientStore:
        return self._clients

    @property
    def revoked_tokens(self) -> MemoryRevokedTokenStore:
        return self._revoked_tokens

    @property
    def throttle(self) -> MemoryThrottleStore:
        return self._throttle

    @property
    def idp_sessions(self) -> MemoryIdpSessionStore:
        return self._idp_sessions

    @property
    def vault(self) -> MemoryVaultStore:
        return self._vault

    async def close(self) -> None:
        return None
