"""What "My connections" asks of the vault (:class:`.connections.ConnectionVault` delegates here):
the listing of a user's connections — metadata only, never a secret — and Disconnect, which
deletes the credential and then revokes it at the provider (best effort: the refresh token, else
the access token; the credential is gone whatever the provider answers)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from bastion.store.base import VaultStore
from bastion.vault.envelope import VaultCipher
from bastion.vault.model import ProviderRefused, ProviderUnavailable, VaultTampered
from bastion.vault.presets import ResolvedConnection

log = logging.getLogger("bastion.vault")

NOT_CONNECTED = "not_connected"


@dataclass(frozen=True, slots=True)
class ConnectionView:
    """One connection as "My connections" shows it: metadata, never a secret."""

    connection: str
    label: str
    kind: str  # "oauth" | "api_key"
    scopes: tuple[str, ...]
    status: str  # "ok", "reconnect" or "not_connected"
    account: str | None = None
    created_at: float | None = None
    last_used_at: float | None = None
    expires_at: float | None = None


@runtime_checkable
class TokenRevoker(Protocol):
    """Revokes a token at a connection's provider (implemented by :class:`.provider.Providers`)."""

    async def revoke(self, connection: str, token: str, token_type_hint: str) -> bool: ...


def as_revoker(refresher: object) -> TokenRevoker | None:
    return refresher if isinstance(refresher, TokenRevoker) else None


async def list_connections(
    store: VaultStore, connections: Mapping[str, ResolvedConnection], user_id: str
) -> list[ConnectionView]:
    """Every configured connection, in configuration order, with the user's status."""
    stored = {r.connection: r for r in await store.list_for_user(user_id)}
    views = []
    for name, config in connections.items():
        record = stored.get(name)
        if record is None:
            views.append(ConnectionView(name, config.label, config.type, (), NOT_CONNECTED))
            continue
        views.append(
            ConnectionView(
                connection=name,
                label=config.label,
                kind=record.kind,
                scopes=record.scopes,
                status=record.status,
                account=record.account,
                created_at=record.created_at,
                last_used_at=record.last_used_at,
                expires_at=record.expires_at,
            )
        )
    return views


async def disconnect(
    store: VaultStore, cipher: VaultCipher, revoker: TokenRevoker | None, user_id: str, connection: str
) -> bool:
    """Delete the user's credential; then revoke it at the provider (best effort: the refresh
    token, else the access token). False if there was nothing to delete."""
    record = await store.get(user_id, connection)
    if record is None:
        return False
    deleted = await store.delete(user_id, connection)
    if record.kind == "oauth" and revoker is not None:
        try:
            secret = cipher.open(record)
        except VaultTampered:
            return deleted
        for hint in ("refresh_token", "access_token"):
            token = secret.get(hint)
            if isinstance(token, str) and token and await _revoke(revoker, connection, token, hint):
                break
    return deleted


async def _revoke(revoker: TokenRevoker, connection: str, token: str, hint: str) -> bool:
    try:
        return await revoker.revoke(connection, token, hint)
    except (ProviderRefused, ProviderUnavailable) as exc:
        log.info("connection %s: revocation failed: %s", connection, exc)
        return False


__all__ = ["NOT_CONNECTED", "ConnectionView", "TokenRevoker", "as_revoker", "disconnect", "list_connections"]
