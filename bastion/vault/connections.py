"""Each user's credential per connection: stored sealed, handed out on demand, refreshed when it
is about to expire — once, however many calls and replicas want it at the same moment.

``access_token`` reads the record; a token that does not expire within the connection's
``refresh_margin`` is opened and returned (``last_used_at`` is written at most once a minute).
A token about to expire is refreshed in a single flight:

1. within a process, concurrent callers for one (user, connection) share one task (shielded: a
   caller that gives up does not cancel a refresh whose rotated token must be stored);
2. across replicas, the task takes the record's lease (``VaultStore.take_lease``, 30 s). A task
   that finds the lease held uses the current token while it is still valid, else polls the
   record until the holder has stored a fresh token (or the lease lapses and it takes it over);
3. with the lease it reads the record again (someone may have refreshed already), calls the
   provider, seals the new tokens — keeping the old refresh token when the provider did not
   send a new one — and writes them with a compare-and-set on the version, then gives the lease up.

When the provider refuses the refresh token (``invalid_grant``) the record is marked
``reconnect`` and the user is asked to connect again; when it cannot be reached the stored
tokens stay as they are, and the current access token is used until it actually expires. A
record that does not open (altered, moved, unknown key) is never used: the user is asked to
connect again, which replaces it, and the event is logged as an error (without any secret).

The sealed secret is JSON: the access and refresh tokens (or the API key) and, for presets that
keep it, the token response's ``instance_url`` (kept across refreshes that do not resend it).
The "My connections" listing and Disconnect are in :mod:`.user_connections`.
"""

from __future__ import annotations

import asyncio
import builtins
import dataclasses
import logging
import secrets
import time
from collections.abc import Callable, Iterable
from typing import Any

from bastion.core.errors import UpstreamCredentialsUnavailable
from bastion.core.records import VaultRecord
from bastion.store.base import VaultStore
from bastion.vault.envelope import VaultCipher
from bastion.vault.model import (
    ConnectionMissing,
    Credential,
    ProviderRefused,
    ProviderTokens,
    ProviderUnavailable,
    TokenRefresher,
    VaultTampered,
)
from bastion.vault.presets import ResolvedConnection
from bastion.vault.user_connections import (
    ConnectionView,
    TokenRevoker,
    as_revoker,
    disconnect,
    list_connections,
)

log = logging.getLogger("bastion.vault")

LEASE_S = 30.0
POLL_S = 0.15
TOUCH_EVERY_S = 60.0
RECONNECT = "reconnect"


class ConnectionVault:
    def __init__(
        self,
        store: VaultStore,
        cipher: VaultCipher,
        refresher: TokenRefresher,
        connections: Iterable[ResolvedConnection],
        *,
        replica_id: str,
        clock: Callable[[], float] = time.time,
        revoker: TokenRevoker | None = None,
        lease_s: float = LEASE_S,
        poll_s: float = POLL_S,
    ) -> None:
        self._store = store
        self._cipher = cipher
        self._refresher = refresher
        self._revoker = revoker if revoker is not None else as_revoker(refresher)
        self._connections = {c.name: c for c in connections}
        self._replica_id = replica_id
        self._clock = clock
        self._lease_s = lease_s
        self._poll_s = poll_s
        self._flights: dict[tuple[str, str], asyncio.Task[Credential]] = {}

    # -- storing -----------------------------------------------------------------------------

    async def save_oauth(
        self, user_id: str, connection: str, tokens: ProviderTokens, asked: tuple[str, ...] = ()
    ) -> None:
        """Store the tokens of a (re)connect, replacing whatever was there. ``asked``: the scopes
        the authorization request named, when not the connection's (a step-up)."""
        config = self._config(connection, "oauth")
        secret = {"access_token": tokens.access_token}
        if tokens.refresh_token:
            secret["refresh_token"] = tokens.refresh_token
        if tokens.instance_url:
            secret["instance_url"] = tokens.instance_url
        record = dataclasses.replace(
            self._sealed(user_id, config, "oauth", secret),
            scopes=tokens.scopes if tokens.scopes is not None else asked or config.scopes,
            expires_at=tokens.expires_at,
            account=tokens.account,
        )
        await self._store.put(record)

    async def save_api_key(self, user_id: str, connection: str, key: str) -> None:
        config = self._config(connection, "api_key")
        await self._store.put(self._sealed(user_id, config, "api_key", {"api_key": key}))

    def _sealed(
        self, user_id: str, config: ResolvedConnection, kind: str, secret: dict[str, Any]
    ) -> VaultRecord:
        key_id, wrapped, sealed = self._cipher.seal(user_id, config.name, secret)
        now = self._clock()
        return VaultRecord(
            user_id=user_id,
            connection=config.name,
            kind=kind,
            key_id=key_id,
            wrapped_key=wrapped,
            sealed=sealed,
            created_at=now,
            updated_at=now,
        )

    # -- handing out -------------------------------------------------------------------------

    async def access_token(self, user_id: str, connection: str) -> str:
        """The user's current access token or API key for ``connection`` (see :meth:`credential`)."""
        return (await self.credential(user_id, connection)).secret

    async def credential(self, user_id: str, connection: str) -> Credential:
        """The user's current credential (access token or API key) for ``connection``.
        Raises :class:`ConnectionMissing` (``reconnect`` when the user must connect again) or
        :class:`UpstreamCredentialsUnavailable` (the provider is down and the token expired)."""
        config = self._connections.get(connection)
        if config is None:
            raise ConnectionMissing(connection, detail="not a configured connection")
        record = _usable(await self._store.get(user_id, connection), connection)
        now = self._clock()
        if not self._expiring(record, config, now):
            credential = self._credential(record)
            if record.last_used_at is None or now - record.last_used_at >= TOUCH_EVERY_S:
                await self._store.touch(user_id, connection, now)
            return credential
        key = (user_id, connection)
        flight = self._flights.get(key)
        if flight is None:
            flight = asyncio.get_running_loop().create_task(self._refresh(user_id, config))
            self._flights[key] = flight
            flight.add_done_callback(lambda done: self._landed(key, done))
        return await asyncio.shield(flight)

    def _landed(self, key: tuple[str, str], flight: asyncio.Task[Credential]) -> None:
        if self._flights.get(key) is flight:
            del self._flights[key]
        if not flight.cancelled():
            flight.exception()  # retrieved: nobody waiting any more is not an unhandled error

    @staticmethod
    def _expiring(record: VaultRecord, config: ResolvedConnection, now: float) -> bool:
        return (
            record.kind == "oauth"
            and record.expires_at is not None
            and record.expires_at - config.refresh_margin <= now
        )

    def _open(self, record: VaultRecord) -> dict[str, Any]:
        try:
            return self._cipher.open(record)
        except VaultTampered as exc:
            log.error(
                "vault record of user %r for connection %s (key %s) refused: %s",
                record.user_id,
                record.connection,
                record.key_id,
                exc,
            )
            raise ConnectionMissing(record.connection, reconnect=True, detail=str(exc)) from None

    def _credential(self, record: VaultRecord, secret: dict[str, Any] | None = None) -> Credential:
        secret = self._open(record) if secret is None else secret
        value = secret.get("api_key" if record.kind == "api_key" else "access_token")
        if not isinstance(value, str) or not value:
            log.error(
                "vault record of user %r for connection %s holds no credential",
                record.user_id,
                record.connection,
            )
            raise ConnectionMissing(record.connection, reconnect=True, detail="record holds no credential")
        instance_url = secret.get("instance_url")
        return Credential(value, instance_url if isinstance(instance_url, str) else None)

    # -- the single flight -------------------------------------------------------------------

    async def _refresh(self, user_id: str, config: ResolvedConnection) -> Credential:
        name = config.name
        owner = f"{self._replica_id}:{secrets.token_hex(6)}"
        give_up = time.monotonic() + 2 * self._lease_s
        while True:
            now = self._clock()
            leased = await self._store.take_lease(user_id, name, owner, now + self._lease_s, now)
            if leased is not None:
                break
            current = _usable(await self._store.get(user_id, name), name)
            if not self._expiring(current, config, now):
                return self._credential(current)  # the holder stored a fresh token
            if current.expires_at is not None and current.expires_at > now:
                return self._credential(current)  # still valid: the holder is renewing it
            if time.monotonic() >= give_up:
                raise self._unavailable(config, "another replica held the refresh lease too long")
            await asyncio.sleep(self._poll_s)
        try:
            return await self._refresh_leased(leased, config)
        finally:
            await self._store.release_lease(user_id, name, owner)

    async def _refresh_leased(self, record: VaultRecord, config: ResolvedConnection) -> Credential:
        record = _usable(record, config.name)
        now = self._clock()
        if not self._expiring(record, config, now):
            return self._credential(record)  # refreshed while we waited for the lease
        secret = self._open(record)
        valid = record.expires_at is not None and record.expires_at > now
        refresh_token = secret.get("refresh_token")
        if not isinstance(refresh_token, str) or not refresh_token:
            if valid:
                return self._credential(record, secret)
            await self._mark_reconnect(record)
            raise ConnectionMissing(config.name, reconnect=True, detail="expired, and no refresh token")
        try:
            tokens = await self._refresher.refresh(config.name, refresh_token)
        except ProviderRefused as exc:
            await self._mark_reconnect(record)
            raise ConnectionMissing(config.name, reconnect=True, detail=str(exc)) from None
        except ProviderUnavailable as exc:
            if record.expires_at is not None and record.expires_at > self._clock():
                log.warning(
                    "connection %s: refresh failed (%s); the current token is used meanwhile",
                    config.name,
                    exc,
                )
                return self._credential(record, secret)
            raise self._unavailable(config, str(exc)) from None
        new_secret = {
            **secret,
            "access_token": tokens.access_token,
            "refresh_token": tokens.refresh_token or refresh_token,
        }
        if tokens.instance_url:  # else the one the connect gave stays
            new_secret["instance_url"] = tokens.instance_url
        await self._store_refreshed(record, new_secret, tokens)
        return self._credential(record, new_secret)

    async def _store_refreshed(
        self, record: VaultRecord, secret: dict[str, Any], tokens: ProviderTokens
    ) -> None:
        """Compare-and-set the refreshed tokens. A change of metadata only (a ``forget`` on another
        replica) is written over; a record replaced by a reconnect or deleted is left alone."""
        key_id, wrapped, sealed = self._cipher.seal(record.user_id, record.connection, secret)
        now = self._clock()
        expected = record
        for _ in range(3):
            updated = dataclasses.replace(
                expected,
                key_id=key_id,
                wrapped_key=wrapped,
                sealed=sealed,
                scopes=tokens.scopes if tokens.scopes is not None else expected.scopes,
                expires_at=tokens.expires_at,
                status="ok",
                account=tokens.account or expected.account,
                version=expected.version + 1,
                updated_at=now,
                last_used_at=max(expected.last_used_at or 0.0, now),
                lease_owner=None,
                lease_until=0.0,
            )
            if await self._store.replace(updated, expected.version):
                return
            current = await self._store.get(record.user_id, record.connection)
            if current is None or current.sealed != record.sealed:
                break
            expected = current
        log.warning(
            "connection %s of user %r changed during a refresh (reconnected or disconnected): not stored",
            record.connection,
            record.user_id,
        )

    async def _mark_reconnect(self, record: VaultRecord) -> None:
        marked = dataclasses.replace(
            record, status=RECONNECT, version=record.version + 1, updated_at=self._clock()
        )
        if await self._store.replace(marked, record.version):
            log.info("connection %s of user %r needs reconnecting", record.connection, record.user_id)

    @staticmethod
    def _unavailable(config: ResolvedConnection, detail: str) -> UpstreamCredentialsUnavailable:
        return UpstreamCredentialsUnavailable(
            config.name, f"{config.label} could not be reached; try again shortly", detail=detail
        )

    # -- the upstream refused the token ------------------------------------------------------

    async def granted_scopes(self, user_id: str, connection: str) -> tuple[str, ...] | None:
        """The scopes the user's token was granted (None: no usable OAuth connection)."""
        record = await self._store.get(user_id, connection)
        if record is None or record.kind != "oauth" or record.status != "ok":
            return None
        return record.scopes

    async def forget_access_token(self, user_id: str, connection: str) -> None:
        """The upstream refused the access token (401): the next call refreshes it first. Done
        under the refresh lease; if someone holds it, a refresh is under way anyway."""
        owner = f"{self._replica_id}:{secrets.token_hex(6)}"
        now = self._clock()
        record = await self._store.take_lease(user_id, connection, owner, now + self._lease_s, now)
        if record is None:
            return
        try:
            if record.kind == "oauth" and record.status == "ok" and record.expires_at != 0.0:
                forgotten = dataclasses.replace(
                    record,
                    expires_at=0.0,
                    version=record.version + 1,
                    updated_at=now,
                    lease_owner=None,
                    lease_until=0.0,
                )
                await self._store.replace(forgotten, record.version)
        finally:
            await self._store.release_lease(user_id, connection, owner)

    # -- the connections page ----------------------------------------------------------------

    async def disconnect(self, user_id: str, connection: str) -> bool:
        """Delete the user's credential; then revoke it at the provider (best effort: the refresh
        token, else the access token). False if there was nothing to delete."""
        return await disconnect(self._store, self._cipher, self._revoker, user_id, connection)

    async def list(self, user_id: str) -> builtins.list[ConnectionView]:
        """Every configured connection, in configuration order, with the user's status."""
        return await list_connections(self._store, self._connections, user_id)

    def keeps_instance_url(self, connection: str) -> bool:
        """Whether the connection's provider gives an ``instance_url`` that is kept (a preset's)."""
        config = self._connections.get(connection)
        return config is not None and config.oauth is not None and config.oauth.keeps_instance_url

    def _config(self, connection: str, kind: str) -> ResolvedConnection:
        config = self._connections.get(connection)
        if config is None or config.type != kind:
            raise ValueError(f"{connection!r} is not a configured {kind} connection")
        return config


def _usable(record: VaultRecord | None, connection: str) -> VaultRecord:
    if record is None:
        raise ConnectionMissing(connection)
    if record.status != "ok":
        raise ConnectionMissing(connection, reconnect=True, detail=f"status {record.status}")
    return record


__all__ = ["LEASE_S", "ConnectionVault", "ConnectionView", "TokenRevoker"]
