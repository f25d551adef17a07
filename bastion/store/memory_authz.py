"""In-memory authorization-server state for tests: the same semantics as ``sql_authz``,
``sql_users``, ``sql_tokens``, ``sql_throttle`` and ``sql_idp``.

No method awaits between reading and writing, so each one is atomic on the event
loop without a lock (the memory store is never shared between processes). Payloads
are deep-copied in and out, like a database would.
"""

from __future__ import annotations

import builtins
import copy
import dataclasses
from collections.abc import Callable

from bastion.core.errors import Conflict
from bastion.core.records import (
    ClientRecord,
    ConsentRecord,
    IdpSession,
    JsonObject,
    RefreshTokenRecord,
    RotateOutcome,
    RotateResult,
    UserRecord,
)


class MemorySigningKeyStore:
    def __init__(self) -> None:
        self._blob: bytes | None = None

    async def load(self) -> bytes | None:
        return self._blob

    async def save(self, blob: bytes) -> None:
        self._blob = bytes(blob)


def _copy_user(user: UserRecord) -> UserRecord:
    return dataclasses.replace(user, attributes=copy.deepcopy(user.attributes))


class MemoryUserStore:
    def __init__(self) -> None:
        self._users: dict[str, UserRecord] = {}

    async def add(self, user: UserRecord) -> None:
        if user.user_id in self._users:
            raise Conflict("the user id or username is taken")
        if any(u.username == user.username for u in self._users.values()):
            raise Conflict("the user id or username is taken")
        self._users[user.user_id] = _copy_user(user)

    async def get(self, user_id: str) -> UserRecord | None:
        user = self._users.get(user_id)
        return _copy_user(user) if user is not None else None

    async def get_by_username(self, username: str) -> UserRecord | None:
        user = next((u for u in self._users.values() if u.username == username), None)
        return _copy_user(user) if user is not None else None

    async def list(self) -> builtins.list[UserRecord]:
        return [_copy_user(u) for u in sorted(self._users.values(), key=lambda u: u.username)]

    async def set_disabled(self, user_id: str, disabled: bool) -> bool:
        return self._replace(user_id, disabled=disabled)

    async def set_password_hash(self, user_id: str, password_hash: str | None) -> bool:
        return self._replace(user_id, password_hash=password_hash)

    async def update_profile(
        self,
        user_id: str,
        *,
        display_name: str,
        email: str | None,
        groups: frozenset[str],
        attributes: JsonObject,
    ) -> bool:
        return self._replace(
            user_id,
            display_name=display_name,
            email=email,
            groups=frozenset(groups),
            attributes=copy.deepcopy(attributes),
        )

    async def delete(self, user_id: str) -> bool:
        return self._users.pop(user_id, None) is not None

    def _replace(self, user_id: str, **changes: object) -> bool:
        user = self._users.get(user_id)
        if user is None:
            return False
        self._users[user_id] = dataclasses.replace(user, **changes)  # type: ignore[arg-type]
        return True


class MemoryGrantStore:
    """Single-use entries (RFC 6749 §4.1.2): ``consume`` pops, so a second call finds nothing."""

    def __init__(self) -> None:
        self._entries: dict[tuple[str, str], tuple[JsonObject, float]] = {}

    async def put(self, kind: str, key_hash: str, payload: JsonObject, expires_at: float) -> None:
        if (kind, key_hash) in self._entries:
            raise Conflict(f"{kind} entry already stored")
        self._entries[(kind, key_hash)] = (copy.deepcopy(payload), float(expires_at))

    async def consume(self, kind: str, key_hash: str, now: float) -> JsonObject | None:
        entry = self._entries.pop((kind, key_hash), None)
        if entry is None or entry[1] <= now:
            return None
        return entry[0]

    async def peek(self, kind: str, key_hash: str, now: float) -> JsonObject | None:
        entry = self._entries.get((kind, key_hash))
        if entry is None or entry[1] <= now:
            return None
        return copy.deepcopy(entry[0])

    async def purge_expired(self, now: float) -> int:
        stale = [key for key, (_, expires_at) in self._entries.items() if expires_at <= now]
        for key in stale:
            del self._entries[key]
        return len(stale)


class MemoryRefreshStore:
    """Refresh-token families (OAuth 2.1 §4.3.1 rotation, RFC 9700 §4.14.2 reuse detection)."""

    def __init__(self) -> None:
        self._tokens: dict[str, RefreshTokenRecord] = {}
        self._revoked: dict[str, bool] = {}  # family_id -> revoked
        self._owners: dict[str, tuple[str | None, str | None]] = {}  # family_id -> (user_id, client_id)

    def _out(self, token: RefreshTokenRecord) -> RefreshTokenRecord:
        return dataclasses.replace(
            token, payload=copy.deepcopy(token.payload), revoked=self._revoked[token.family_id]
        )

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
        if token_hash in self._tokens:
            raise Conflict("refresh token hash already stored")
        self._revoked.setdefault(family_id, False)
        self._owners.setdefault(family_id, (user_id, client_id))
        self._tokens[token_hash] = RefreshTokenRecord(
            token_hash=token_hash,
            family_id=family_id,
            payload=copy.deepcopy(payload),
            expires_at=float(expires_at),
        )

    async def rotate(
        self,
        old_hash: str,
        new_hash: str,
        now: float,
        grace_s: float,
        *,
        expires_at: float | None = None,
    ) -> RotateResult:
        old = self._tokens.get(old_hash)
        if old is None:
            return RotateResult(RotateOutcome.INVALID)
        family = old.family_id
        if self._revoked[family] or old.expires_at <= now:
            return RotateResult(RotateOutcome.INVALID, family_id=family)
        if old.used_at is None:
            if new_hash in self._tokens:
                raise Conflict("refresh token hash already stored")
            successor = RefreshTokenRecord(
                token_hash=new_hash,
                family_id=family,
                payload=copy.deepcopy(old.payload),
                expires_at=float(expires_at if expires_at is not None else old.expires_at),
            )
            self._tokens[new_hash] = successor
            self._tokens[old_hash] = dataclasses.replace(old, used_at=now, successor_hash=new_hash)
            return RotateResult(RotateOutcome.ROTATED, successor=self._out(successor), family_id=family)
        current = self._tokens.get(old.successor_hash or "")
        if current is not None and current.used_at is None and now - old.used_at <= grace_s:
            return RotateResult(RotateOutcome.RETRIED, successor=self._out(current), family_id=family)
        self._revoked[family] = True
        return RotateResult(RotateOutcome.REUSE_DETECTED, family_id=family)

    async def revoke_family(self, family_id: str) -> bool:
        if family_id not in self._revoked:
            return False
        self._revoked[family_id] = True
        return True

    async def revoke_for(self, user_id: str, client_id: str | None = None) -> int:
        families = [
            family
            for family, (owner, client) in self._owners.items()
            if owner == user_id and (client_id is None or client == client_id) and not self._revoked[family]
        ]
        for family in families:
            self._revoked[family] = True
        return len(families)

    async def get(self, token_hash: str) -> RefreshTokenRecord | None:
        token = self._tokens.get(token_hash)
        return self._out(token) if token is not None else None


class MemoryConsentStore:
    def __init__(self) -> None:
        self._consents: dict[tuple[str, str], ConsentRecord] = {}

    async def grant(self, consent: ConsentRecord) -> None:
        self._consents[(consent.user_id, consent.client_id)] = consent

    async def get(self, user_id: str, client_id: str) -> ConsentRecord | None:
        return self._consents.get((user_id, client_id))

    async def list(self, user_id: str | None = None) -> builtins.list[ConsentRecord]:
        return [c for key, c in sorted(self._consents.items()) if user_id is None or c.user_id == user_id]

    async def revoke(self, user_id: str, client_id: str) -> bool:
        return self._consents.pop((user_id, client_id), None) is not None


def _copy_client(client: ClientRecord) -> ClientRecord:
    return dataclasses.replace(
        client, jwks=copy.deepcopy(client.jwks), metadata=copy.deepcopy(client.metadata)
    )


class MemoryClientStore:
    """Client registrations keyed by client_id (config and RFC 7591 DCR)."""

    def __init__(self) -> None:
        self._clients: dict[str, ClientRecord] = {}

    async def put(self, client: ClientRecord) -> None:
        self._clients[client.client_id] = _copy_client(client)

    async def get(self, client_id: str) -> ClientRecord | None:
        client = self._clients.get(client_id)
        return _copy_client(client) if client is not None else None

    async def list(self, source: str | None = None) -> builtins.list[ClientRecord]:
        return [
            _copy_client(c) for _, c in sorted(self._clients.items()) if source is None or c.source == source
        ]

    async def delete(self, client_id: str) -> bool:
        return self._clients.pop(client_id, None) is not None

    async def touch(self, client_id: str, now: float) -> None:
        client = self._clients.get(client_id)
        if client is not None:
            self._clients[client_id] = dataclasses.replace(client, last_used_at=now, expires_at=None)

    async def purge_expired(self, now: float) -> int:
        stale = [cid for cid, c in self._clients.items() if c.expires_at is not None and c.expires_at <= now]
        for cid in stale:
            del self._clients[cid]
        return len(stale)


class MemoryRevokedTokenStore:
    """Revoked access-token ids with the token's expiry and the time of revocation."""

    def __init__(self) -> None:
        self._revoked: dict[str, tuple[float, float]] = {}  # jti -> (expires_at, revoked_at)

    async def revoke(self, jti: str, expires_at: float, now: float) -> None:
        self._revoked.setdefault(jti, (float(expires_at), float(now)))

    async def revoked_since(self, since: float, now: float) -> builtins.list[tuple[str, float, float]]:
        rows = [
            (jti, expires_at, revoked_at)
            for jti, (expires_at, revoked_at) in self._revoked.items()
            if revoked_at >= since and expires_at > now
        ]
        return sorted(rows, key=lambda row: (row[2], row[0]))

    async def purge_expired(self, now: float) -> int:
        stale = [jti for jti, (expires_at, _) in self._revoked.items() if expires_at <= now]
        for jti in stale:
            del self._revoked[jti]
        return len(stale)


class MemoryThrottleStore:
    """Attempt times per key; ``hit`` appends and counts without awaiting, so it is atomic."""

    def __init__(self) -> None:
        self._hits: dict[str, builtins.list[float]] = {}

    async def hit(self, key: str, now: float, window_s: float) -> int:
        hits = self._hits.setdefault(key, [])
        hits.append(float(now))
        return self._count(key, now, window_s)

    async def count(self, key: str, now: float, window_s: float) -> int:
        return self._count(key, now, window_s)

    def _count(self, key: str, now: float, window_s: float) -> int:
        return sum(1 for ts in self._hits.get(key, ()) if now - window_s < ts <= now)

    async def reset(self, key: str) -> None:
        self._hits.pop(key, None)

    async def purge_before(self, ts: float) -> int:
        purged = 0
        for key in list(self._hits):
            kept = [t for t in self._hits[key] if t >= ts]
            purged += len(self._hits[key]) - len(kept)
            if kept:
                self._hits[key] = kept
            else:
                del self._hits[key]
        return purged


class MemoryIdpSessionStore:
    """IdP sign-ins by session id (the records are frozen and hold no mutable values)."""

    def __init__(self) -> None:
        self._sessions: dict[str, IdpSession] = {}

    async def put(self, session: IdpSession) -> None:
        if session.session_id in self._sessions:
            raise Conflict("idp session id already stored")
        self._sessions[session.session_id] = session

    async def get(self, session_id: str) -> IdpSession | None:
        return self._sessions.get(session_id)

    async def latest_for_user(self, user_id: str, provider: str, now: float) -> IdpSession | None:
        live = [
            s
            for s in self._sessions.values()
            if s.user_id == user_id and s.provider == provider and s.expires_at > now
        ]
        return max(live, key=lambda s: (s.auth_time, s.session_id), default=None)

    async def update_token(
        self,
        session_id: str,
        sealed_refresh_token: str | None,
        checked_at: float,
        *,
        sealed_id_token: str | None = None,
        id_token_expires_at: float | None = None,
    ) -> bool:
        session = self._sessions.get(session_id)
        if session is None:
            return False
        session = dataclasses.replace(
            session, sealed_refresh_token=sealed_refresh_token, checked_at=float(checked_at)
        )
        if sealed_id_token is not None:
            expires = float(id_token_expires_at) if id_token_expires_at is not None else None
            session = dataclasses.replace(
                session, sealed_id_token=sealed_id_token, id_token_expires_at=expires
            )
        self._sessions[session_id] = session
        return True

    async def delete(self, session_id: str) -> bool:
        return self._sessions.pop(session_id, None) is not None

    async def delete_for_user(self, user_id: str, provider: str | None = None) -> int:
        return self._drop(lambda s: s.user_id == user_id and (provider is None or s.provider == provider))

    async def purge_expired(self, now: float) -> int:
        return self._drop(lambda s: s.expires_at <= now)

    def _drop(self, match: Callable[[IdpSession], bool]) -> int:
        stale = [sid for sid, s in self._sessions.items() if match(s)]
        for sid in stale:
            del self._sessions[sid]
        return len(stale)
