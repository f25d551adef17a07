"""Storage protocols. Every implementation passes tests/contract (one suite for all)."""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from typing import Protocol

from bastion.core.records import (
    AuditRecord,
    ClientRecord,
    ConsentRecord,
    JsonObject,
    RefreshTokenRecord,
    RotateResult,
    SessionRecord,
    StoredAuditRecord,
    UserRecord,
)


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


class SigningKeyStore(Protocol):
    """One row: the sealed key ring from ``bastion.oauth.keys.KeyRing.export`` (never plaintext keys)."""

    async def load(self) -> bytes | None: ...

    async def save(self, blob: bytes) -> None:
        """Replace the stored blob."""
        ...


class UserStore(Protocol):
    async def add(self, user: UserRecord) -> None:
        """Raises ``bastion.core.errors.Conflict`` if the user_id or the username is taken."""
        ...

    async def get(self, user_id: str) -> UserRecord | None: ...

    async def get_by_username(self, username: str) -> UserRecord | None: ...

    async def list(self) -> builtins.list[UserRecord]:
        """Every user, ordered by username."""
        ...

    async def set_disabled(self, user_id: str, disabled: bool) -> bool:
        """False if there is no such user."""
        ...

    async def set_password_hash(self, user_id: str, password_hash: str | None) -> bool: ...

    async def delete(self, user_id: str) -> bool: ...


class GrantStore(Protocol):
    """Short-lived, single-use state: authorization codes (RFC 6749 §4.1.2: a code is used
    once), login and consent state. ``kind`` separates the namespaces; ``key_hash`` is the
    hash of the code or state handed out, never the value itself."""

    async def put(self, kind: str, key_hash: str, payload: JsonObject, expires_at: float) -> None:
        """Raises ``Conflict`` if ``(kind, key_hash)`` is already stored."""
        ...

    async def consume(self, kind: str, key_hash: str, now: float) -> JsonObject | None:
        """Atomically remove and return the payload: at most one caller, across replicas,
        ever gets it. None if unknown, already consumed, or expired (an expired entry is
        removed too)."""
        ...

    async def purge_expired(self, now: float) -> int:
        """Delete entries with ``expires_at <= now``; returns the count."""
        ...


class RefreshStore(Protocol):
    """Refresh-token families keyed by token hash, rotated on every use (OAuth 2.1 §4.3.1)
    with reuse detection (RFC 9700 §4.14.2): replaying a rotated token revokes the family."""

    async def issue(self, family_id: str, token_hash: str, payload: JsonObject, expires_at: float) -> None:
        """Store a token, starting the family if it is new. Raises ``Conflict`` if the
        hash is already stored."""
        ...

    async def rotate(
        self,
        old_hash: str,
        new_hash: str,
        now: float,
        grace_s: float,
        *,
        expires_at: float | None = None,
    ) -> RotateResult:
        """Atomically replace ``old_hash`` by ``new_hash`` (same family and payload; the
        successor expires at ``expires_at``, by default when the old token did).

        A second use within ``grace_s`` of the first, while the successor is unused,
        returns RETRIED with the *same* successor (``new_hash`` is ignored): a client that
        lost the response is not punished. Any other second use returns REUSE_DETECTED
        and revokes the family. Unknown, expired or revoked tokens return INVALID.
        """
        ...

    async def revoke_family(self, family_id: str) -> bool:
        """False if there is no such family."""
        ...

    async def get(self, token_hash: str) -> RefreshTokenRecord | None: ...


class ConsentStore(Protocol):
    """One consent per (user, client), replaced as a whole by ``grant``."""

    async def grant(self, consent: ConsentRecord) -> None: ...

    async def get(self, user_id: str, client_id: str) -> ConsentRecord | None: ...

    async def list(self, user_id: str | None = None) -> builtins.list[ConsentRecord]:
        """Ordered by (user_id, client_id)."""
        ...

    async def revoke(self, user_id: str, client_id: str) -> bool: ...


class ClientStore(Protocol):
    """OAuth client registrations keyed by client_id: pre-registered (config) and RFC 7591 DCR.
    CIMD clients are fetched from their URL and never stored here."""

    async def put(self, client: ClientRecord) -> None:
        """Insert, or replace the registration with the same client_id."""
        ...

    async def get(self, client_id: str) -> ClientRecord | None: ...

    async def list(self, source: str | None = None) -> builtins.list[ClientRecord]:
        """Every client (or those from ``source``), ordered by client_id."""
        ...

    async def delete(self, client_id: str) -> bool: ...

    async def touch(self, client_id: str, now: float) -> None:
        """Record a use: set last_used_at and clear expires_at (a used registration no
        longer expires). Nothing happens for an unknown client."""
        ...

    async def purge_expired(self, now: float) -> int:
        """Delete clients with ``expires_at <= now`` (DCR registrations never used);
        returns the count."""
        ...


class Store(Protocol):
    @property
    def audit(self) -> AuditStore: ...

    @property
    def sessions(self) -> SessionStore: ...

    @property
    def signing_keys(self) -> SigningKeyStore: ...

    @property
    def users(self) -> UserStore: ...

    @property
    def grants(self) -> GrantStore: ...

    @property
    def refresh_tokens(self) -> RefreshStore: ...

    @property
    def consents(self) -> ConsentStore: ...

    @property
    def clients(self) -> ClientStore: ...

    async def close(self) -> None: ...
