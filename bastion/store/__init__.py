"""Durable state behind small async protocols: memory (tests), SQLite (default), Postgres."""

from bastion.store.base import (
    AuditStore,
    ConsentStore,
    GrantStore,
    IdpSessionStore,
    RefreshStore,
    RevokedTokenStore,
    SessionStore,
    SigningKeyStore,
    Store,
    ThrottleStore,
    UserStore,
    VaultStore,
)
from bastion.store.factory import SchemaOutOfDate, open_store, upgrade, upgrade_async
from bastion.store.hashing import GENESIS_HASH, canonical_json, link_hash

__all__ = [
    "GENESIS_HASH",
    "AuditStore",
    "ConsentStore",
    "GrantStore",
    "IdpSessionStore",
    "RefreshStore",
    "RevokedTokenStore",
    "SchemaOutOfDate",
    "SessionStore",
    "SigningKeyStore",
    "Store",
    "ThrottleStore",
    "UserStore",
    "VaultStore",
    "canonical_json",
    "link_hash",
    "open_store",
    "upgrade",
    "upgrade_async",
]
