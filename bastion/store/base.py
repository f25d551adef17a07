"""Storage protocols. Every implementation passes tests/contract (one suite for all)."""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from typing import Protocol

from bastion.core.records import (
    AuditRecord,
    ClientRecord,
    ConsentRecord,
    IdpSession,
    JsonObject,
    RefreshTokenRecord,
    RotateResult,
    SessionRecord,
    StoredAuditRecord,
    UserRecord,
    VaultRecord,
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

    async def update_profile(
        self,
        user_id: str,
        *,
        display_name: str,
        email: str | None,
        groups: frozenset[str],
        attributes: JsonObject,
    ) -> bool:
        """Replace those four fields (an IdP user is updated at every sign-in); username,
        password hash, disabled, source and created_at are left alone. False if there is
        no such user."""
        ...

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

    async def peek(self, kind: str, key_hash: str, now: float) -> JsonObject | None:
        """The payload, left in place (e.g. to show a consent page before the user
        answers). None if unknown or expired. Never a substitute for ``consume`` when the
        entry is being used: only ``consume`` guarantees a single winner."""
        ...

    async def purge_expired(self, now: float) -> int:
        """Delete entries with ``expires_at <= now``; returns the count."""
        ...


class RefreshStore(Protocol):
    """Refresh-token families keyed by token hash, rotated on every use (OAuth 2.1 §4.3.1)
    with reuse detection (RFC 9700 §4.14.2): replaying a rotated token revokes the family."""

    async def issue(
        self,
        family_id: str,
        token_hash: str,
        payload: JsonObject,
        expires_at: float,
        *,
        user_id: str | None = None,
        client_id: str | None = None,
    ) -> None:
        """Store a token, starting the family if it is new. Raises ``Conflict`` if the
        hash is already stored. ``user_id`` and ``client_id`` name the family's owner
        (for ``revoke_for``); they are recorded when the family is created and ignored
        for a family that already exists."""
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

    async def revoke_for(self, user_id: str, client_id: str | None = None) -> int:
        """Revoke every family of ``user_id`` (only those issued to ``client_id``, if
        given) that is not revoked yet; returns how many. Families issued without an
        owner (before revision 0005) are never matched."""
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


class RevokedTokenStore(Protocol):
    """Revoked JWT access tokens by ``jti`` (RFC 7009 revocation of self-contained tokens):
    a JWT stays valid until it expires, so every replica keeps a deny list, refreshed from
    here. A row is only needed until the token would have expired anyway."""

    async def revoke(self, jti: str, expires_at: float, now: float) -> None:
        """Record the revocation at ``now``. Idempotent: a second call changes nothing
        (the first revoked_at stays, so pollers never see the row move)."""
        ...

    async def revoked_since(self, since: float, now: float) -> builtins.list[tuple[str, float, float]]:
        """``(jti, expires_at, revoked_at)`` for revocations with ``revoked_at >= since``
        whose token has not expired (``expires_at > now``), ordered by revoked_at.

        revoked_at is the revoking replica's clock and rows commit in any order, so a
        poller should ask again from a little before its last answer, not from its end."""
        ...

    async def purge_expired(self, now: float) -> int:
        """Delete revocations of tokens with ``expires_at <= now``; returns the count."""
        ...


class ThrottleStore(Protocol):
    """Attempt counters shared by every replica (login brute force, dynamic client
    registration): a limit per replica would multiply with the number of replicas.
    Keys are opaque (``login:user:alice``, ``login:ip:…``); callers may hash them."""

    async def hit(self, key: str, now: float, window_s: float) -> int:
        """Record one attempt for ``key`` at ``now`` and return the attempts for ``key``
        in ``(now - window_s, now]``, this one included. Hits on one key are serialized
        across replicas, so N simultaneous callers get N different counts: a burst of
        parallel guesses cannot all see the same low number."""
        ...

    async def count(self, key: str, now: float, window_s: float) -> int:
        """The attempts for ``key`` in ``(now - window_s, now]``, recording none. A check
        before the attempt is not atomic with the ``hit`` after it: parallel callers can
        all pass it, so a hard limit needs ``hit``'s answer."""
        ...

    async def reset(self, key: str) -> None:
        """Forget every attempt for ``key`` (after a successful login)."""
        ...

    async def purge_before(self, ts: float) -> int:
        """Delete attempts recorded before ``ts`` (older than any window); returns the count."""
        ...


class IdpSessionStore(Protocol):
    """Sign-ins at enterprise IdPs, by Bastion's own session id. ``sealed_refresh_token`` and
    ``sealed_id_token`` are opaque text sealed by the caller; the store never sees an IdP token
    in the clear. Deleting a user does not delete their sessions: call ``delete_for_user`` as
    well."""

    async def put(self, session: IdpSession) -> None:
        """Raises ``Conflict`` if the session_id is already stored."""
        ...

    async def get(self, session_id: str) -> IdpSession | None:
        """The session, expired or not (the caller compares ``expires_at``)."""
        ...

    async def latest_for_user(self, user_id: str, provider: str, now: float) -> IdpSession | None:
        """The newest (latest ``auth_time``) session of ``user_id`` at ``provider`` that has not
        expired (``expires_at > now``), or None."""
        ...

    async def update_token(
        self,
        session_id: str,
        sealed_refresh_token: str | None,
        checked_at: float,
        *,
        sealed_id_token: str | None = None,
        id_token_expires_at: float | None = None,
    ) -> bool:
        """After a re-check (a refresh) at the IdP: store the (possibly rotated) sealed refresh
        token and when the check happened; and, when ``sealed_id_token`` is given, the new ID
        token with its expiry (otherwise the stored ID token is kept). False if there is no
        such session."""
        ...

    async def delete(self, session_id: str) -> bool: ...

    async def delete_for_user(self, user_id: str, provider: str | None = None) -> int:
        """Delete every session of ``user_id`` (only those at ``provider``, if given);
        returns the count."""
        ...

    async def purge_expired(self, now: float) -> int:
        """Delete sessions with ``expires_at <= now``; returns the count."""
        ...


class VaultStore(Protocol):
    """Per-user downstream credentials, keyed by (user_id, connection). Values are sealed by
    the caller (``bastion.vault``); the store never sees a secret in the clear."""

    async def get(self, user_id: str, connection: str) -> VaultRecord | None: ...

    async def list_for_user(self, user_id: str) -> builtins.list[VaultRecord]:
        """The user's records, ordered by connection name."""
        ...

    async def put(self, record: VaultRecord) -> None:
        """Insert, or replace whatever is stored for (user_id, connection) (a new connect).
        Replacing stores a version above the one it replaces (``record.version`` or the old
        one + 1, whichever is higher), so a compare-and-set prepared against the old credential
        (a refresh in flight) fails instead of overwriting the new one."""
        ...

    async def replace(self, record: VaultRecord, expected_version: int) -> bool:
        """Compare-and-set: write ``record`` only if the stored version is ``expected_version``
        (``record.version`` is then the new one). False if it changed or is gone."""
        ...

    async def take_lease(
        self, user_id: str, connection: str, owner: str, until: float, now: float
    ) -> VaultRecord | None:
        """Atomically take the refresh lease (across replicas): succeeds when nobody holds it
        (``lease_until <= now``) or ``owner`` already does; returns the record as stored after
        taking it, or None if someone else holds it or there is no record."""
        ...

    async def release_lease(self, user_id: str, connection: str, owner: str) -> None:
        """Give the lease up if ``owner`` holds it (lease_until = 0)."""
        ...

    async def touch(self, user_id: str, connection: str, now: float) -> None:
        """Record a use (last_used_at, which only moves forward); does not change the version
        (neither do the lease methods)."""
        ...

    async def delete(self, user_id: str, connection: str) -> bool: ...

    async def delete_for_user(self, user_id: str) -> int: ...

    async def key_ids(self) -> set[str]:
        """Every master key id some record's data key is wrapped under."""
        ...

    async def count_by_key(self) -> dict[str, int]:
        """How many records are wrapped under each master key id (``bastion vault status``)."""
        ...

    async def wrapped_under_other_than(self, key_id: str, limit: int) -> builtins.list[VaultRecord]:
        """Up to ``limit`` records whose data key is wrapped under another key (rotation)."""
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

    @property
    def revoked_tokens(self) -> RevokedTokenStore: ...

    @property
    def throttle(self) -> ThrottleStore: ...

    @property
    def idp_sessions(self) -> IdpSessionStore: ...

    @property
    def vault(self) -> VaultStore: ...

    async def close(self) -> None: ...
