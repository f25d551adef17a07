"""SQL stores for the authorization server's secrets-adjacent state: the sealed signing
key ring, single-use grants, refresh-token families, and OAuth client registrations
(SQLite and Postgres alike).

Atomicity across replicas sharing one database:

* ``GrantStore.consume`` is one ``DELETE … RETURNING`` statement (Postgres; SQLite ≥ 3.35).
  Two replicas deleting the same row: the second waits for the first's row lock and then
  deletes nothing, so exactly one of them gets the payload.
* ``RefreshStore.rotate`` runs in one transaction that locks the family row, then the
  token row (``SELECT … FOR UPDATE`` on Postgres, ``BEGIN IMMEDIATE`` on SQLite, which
  holds the database write lock from the first statement). Revocation takes the same
  family lock, so a revoke and a rotation of the same family are strictly ordered
  (``revoke_for`` locks a user's families in family_id order before flagging them).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from bastion.core.errors import Conflict
from bastion.core.records import ClientRecord, JsonObject, RefreshTokenRecord, RotateOutcome, RotateResult
from bastion.store.sql_engine import write_transaction
from bastion.store.tables import (
    SIGNING_KEYS_ID,
    clients,
    grants,
    refresh_families,
    refresh_tokens,
    signing_keys,
)


def dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def dialect_insert(engine: AsyncEngine) -> Any:
    """The dialect's ``insert`` (the one with ``on_conflict_do_*``)."""
    return pg_insert if engine.dialect.name == "postgresql" else sqlite_insert


class SqlSigningKeyStore:
    """The sealed key ring as one BLOB/bytea row; the store never sees a plaintext key."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def load(self) -> bytes | None:
        query = sa.select(signing_keys.c.blob).where(signing_keys.c.id == SIGNING_KEYS_ID)
        async with self._engine.connect() as conn:
            blob = (await conn.execute(query)).scalar_one_or_none()
        return bytes(blob) if blob is not None else None

    async def save(self, blob: bytes) -> None:
        stmt = dialect_insert(self._engine)(signing_keys).values(id=SIGNING_KEYS_ID, blob=bytes(blob))
        stmt = stmt.on_conflict_do_update(
            index_elements=[signing_keys.c.id], set_={"blob": stmt.excluded.blob}
        )
        async with write_transaction(self._engine) as conn:
            await conn.execute(stmt)


class SqlGrantStore:
    """Single-use entries (RFC 6749 §4.1.2: an authorization code MUST NOT be used more than once)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def put(self, kind: str, key_hash: str, payload: JsonObject, expires_at: float) -> None:
        row = {"kind": kind, "key_hash": key_hash, "payload": dumps(payload), "expires_at": float(expires_at)}
        try:
            async with write_transaction(self._engine) as conn:
                await conn.execute(sa.insert(grants).values(**row))
        except IntegrityError:
            raise Conflict(f"{kind} entry already stored") from None

    async def consume(self, kind: str, key_hash: str, now: float) -> JsonObject | None:
        # One statement: the delete decides who wins. An expired row is deleted as well
        # (it is useless), but its payload is not returned.
        stmt = (
            sa.delete(grants)
            .where(grants.c.kind == kind, grants.c.key_hash == key_hash)
            .returning(grants.c.payload, grants.c.expires_at)
        )
        async with write_transaction(self._engine) as conn:
            row = (await conn.execute(stmt)).first()
        if row is None or row.expires_at <= now:
            return None
        payload: JsonObject = orjson.loads(row.payload)
        return payload

    async def peek(self, kind: str, key_hash: str, now: float) -> JsonObject | None:
        query = sa.select(grants.c.payload).where(
            grants.c.kind == kind, grants.c.key_hash == key_hash, grants.c.expires_at > now
        )
        async with self._engine.connect() as conn:
            text = (await conn.execute(query)).scalar_one_or_none()
        if text is None:
            return None
        payload: JsonObject = orjson.loads(text)
        return payload

    async def purge_expired(self, now: float) -> int:
        async with write_transaction(self._engine) as conn:
            result = await conn.execute(sa.delete(grants).where(grants.c.expires_at <= now))
        return int(result.rowcount)


def _token(row: Mapping[Any, Any], revoked: bool) -> RefreshTokenRecord:
    return RefreshTokenRecord(
        token_hash=row["token_hash"],
        family_id=row["family_id"],
        payload=orjson.loads(row["payload"]),
        expires_at=row["expires_at"],
        used_at=row["used_at"],
        successor_hash=row["successor_hash"],
        revoked=revoked,
    )


class SqlRefreshStore:
    """Refresh-token families: rotation (OAuth 2.1 §4.3.1) with reuse detection (RFC 9700 §4.14.2)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

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
        family = dialect_insert(self._engine)(refresh_families).values(
            family_id=family_id, revoked=False, user_id=user_id, client_id=client_id
        )
        family = family.on_conflict_do_nothing(index_elements=[refresh_families.c.family_id])
        token = sa.insert(refresh_tokens).values(
            token_hash=token_hash, family_id=family_id, payload=dumps(payload), expires_at=float(expires_at)
        )
        try:
            async with write_transaction(self._engine) as conn:
                await conn.execute(family)
                await conn.execute(token)
        except IntegrityError:
            raise Conflict("refresh token hash already stored") from None

    async def rotate(
        self,
        old_hash: str,
        new_hash: str,
        now: float,
        grace_s: float,
        *,
        expires_at: float | None = None,
    ) -> RotateResult:
        try:
            async with write_transaction(self._engine) as conn:
                return await self._rotate(
                    conn, old_hash, new_hash=new_hash, now=now, grace_s=grace_s, expires_at=expires_at
                )
        except IntegrityError:
            raise Conflict("refresh token hash already stored") from None

    async def _rotate(
        self,
        conn: AsyncConnection,
        old_hash: str,
        *,
        new_hash: str,
        now: float,
        grace_s: float,
        expires_at: float | None,
    ) -> RotateResult:
        by_hash = refresh_tokens.c.token_hash == old_hash
        family_id = (await conn.execute(sa.select(refresh_tokens.c.family_id).where(by_hash))).scalar()
        if family_id is None:
            return RotateResult(RotateOutcome.INVALID)
        # Lock order: family, then token (revoke_family takes only the family lock).
        revoked = (
            await conn.execute(
                sa.select(refresh_families.c.revoked)
                .where(refresh_families.c.family_id == family_id)
                .with_for_update()
            )
        ).scalar_one()
        old = (
            (await conn.execute(sa.select(refresh_tokens).where(by_hash).with_for_update())).mappings().one()
        )
        if revoked or old["expires_at"] <= now:
            return RotateResult(RotateOutcome.INVALID, family_id=family_id)
        if old["used_at"] is None:
            successor = {
                "token_hash": new_hash,
                "family_id": family_id,
                "payload": old["payload"],
                "expires_at": float(expires_at if expires_at is not None else old["expires_at"]),
                "used_at": None,
                "successor_hash": None,
            }
            await conn.execute(sa.insert(refresh_tokens).values(**successor))
            await conn.execute(
                sa.update(refresh_tokens).where(by_hash).values(used_at=now, successor_hash=new_hash)
            )
            return RotateResult(
                RotateOutcome.ROTATED, successor=_token(successor, False), family_id=family_id
            )
        # A second use. Within the grace window, and only while the successor itself is
        # unused, it is a client retrying after a lost response: give it the same successor.
        current = (
            (
                await conn.execute(
                    sa.select(refresh_tokens).where(refresh_tokens.c.token_hash == old["successor_hash"])
                )
            )
            .mappings()
            .first()
        )
        if current is not None and current["used_at"] is None and now - old["used_at"] <= grace_s:
            return RotateResult(RotateOutcome.RETRIED, successor=_token(current, False), family_id=family_id)
        # Otherwise one of the two users of this token is an attacker and we cannot tell
        # which: revoke the whole family (RFC 9700 §4.14.2).
        await conn.execute(
            sa.update(refresh_families).where(refresh_families.c.family_id == family_id).values(revoked=True)
        )
        return RotateResult(RotateOutcome.REUSE_DETECTED, family_id=family_id)

    async def revoke_family(self, family_id: str) -> bool:
        stmt = (
            sa.update(refresh_families).where(refresh_families.c.family_id == family_id).values(revoked=True)
        )
        async with write_transaction(self._engine) as conn:
            result = await conn.execute(stmt)
        return bool(result.rowcount)

    async def revoke_for(self, user_id: str, client_id: str | None = None) -> int:
        owned = [refresh_families.c.user_id == user_id, sa.not_(refresh_families.c.revoked)]
        if client_id is not None:
            owned.append(refresh_families.c.client_id == client_id)
        async with write_transaction(self._engine) as conn:
            # Take the family locks in family_id order first (Postgres; SQLite already holds
            # the write lock), so two overlapping revocations cannot deadlock each other.
            # A rotation holds at most one family lock, so it cannot deadlock with this.
            await conn.execute(
                sa.select(refresh_families.c.family_id)
                .where(*owned)
                .order_by(refresh_families.c.family_id)
                .with_for_update()
            )
            result = await conn.execute(sa.update(refresh_families).where(*owned).values(revoked=True))
        return int(result.rowcount)

    async def get(self, token_hash: str) -> RefreshTokenRecord | None:
        query = (
            sa.select(refresh_tokens, refresh_families.c.revoked)
            .join(refresh_families, refresh_families.c.family_id == refresh_tokens.c.family_id)
            .where(refresh_tokens.c.token_hash == token_hash)
        )
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).mappings().first()
        return _token(row, bool(row["revoked"])) if row is not None else None


def _client_row(client: ClientRecord) -> dict[str, Any]:
    return {
        "client_id": client.client_id,
        "source": client.source,
        "client_name": client.client_name,
        "redirect_uris": dumps(list(client.redirect_uris)),
        "grant_types": dumps(list(client.grant_types)),
        "token_endpoint_auth_method": client.token_endpoint_auth_method,
        "secret_hash": client.secret_hash,
        "jwks": dumps(client.jwks) if client.jwks is not None else None,
        "jwks_uri": client.jwks_uri,
        "scope": client.scope,
        "application_type": client.application_type,
        "trusted": client.trusted,
        "created_at": float(client.created_at),
        "expires_at": client.expires_at,
        "last_used_at": client.last_used_at,
        "metadata": dumps(client.metadata),
    }


def _client(row: Mapping[Any, Any]) -> ClientRecord:
    return ClientRecord(
        client_id=row["client_id"],
        source=row["source"],
        client_name=row["client_name"],
        redirect_uris=tuple(orjson.loads(row["redirect_uris"])),
        grant_types=tuple(orjson.loads(row["grant_types"])),
        token_endpoint_auth_method=row["token_endpoint_auth_method"],
        secret_hash=row["secret_hash"],
        jwks=orjson.loads(row["jwks"]) if row["jwks"] is not None else None,
        jwks_uri=row["jwks_uri"],
        scope=row["scope"],
        application_type=row["application_type"],
        trusted=bool(row["trusted"]),
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        last_used_at=row["last_used_at"],
        metadata=orjson.loads(row["metadata"]),
    )


class SqlClientStore:
    """OAuth client registrations keyed by client_id (config and RFC 7591 DCR)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def put(self, client: ClientRecord) -> None:
        row = _client_row(client)
        stmt = dialect_insert(self._engine)(clients).values(**row)
        stmt = stmt.on_conflict_do_update(
            index_elements=[clients.c.client_id],
            set_={name: stmt.excluded[name] for name in row if name != "client_id"},
        )
        async with write_transaction(self._engine) as conn:
            await conn.execute(stmt)

    async def get(self, client_id: str) -> ClientRecord | None:
        query = sa.select(clients).where(clients.c.client_id == client_id)
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).mappings().first()
        return _client(row) if row is not None else None

    async def list(self, source: str | None = None) -> list[ClientRecord]:
        query = sa.select(clients).order_by(clients.c.client_id)
        if source is not None:
            query = query.where(clients.c.source == source)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [_client(row) for row in rows]

    async def delete(self, client_id: str) -> bool:
        async with write_transaction(self._engine) as conn:
            result = await conn.execute(sa.delete(clients).where(clients.c.client_id == client_id))
        return bool(result.rowcount)

    async def touch(self, client_id: str, now: float) -> None:
        # One statement, so a concurrent purge either deletes the row first or finds it kept.
        stmt = (
            sa.update(clients)
            .where(clients.c.client_id == client_id)
            .values(last_used_at=float(now), expires_at=None)
        )
        async with write_transaction(self._engine) as conn:
            await conn.execute(stmt)

    async def purge_expired(self, now: float) -> int:
        stmt = sa.delete(clients).where(clients.c.expires_at.is_not(None), clients.c.expires_at <= now)
        async with write_transaction(self._engine) as conn:
            result = await conn.execute(stmt)
        return int(result.rowcount)
