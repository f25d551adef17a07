"""Durable state behind small async protocols: memory (tests), SQLite (default), Postgres."""

from bastion.store.base import AuditStore, SessionStore, Store
from bastion.store.factory import SchemaOutOfDate, open_store, upgrade, upgrade_async
from bastion.store.hashing import GENESIS_HASH, canonical_json, link_hash

__all__ = [
    "GENESIS_HASH",
    "AuditStore",
    "SchemaOutOfDate",
    "SessionStore",
    "Store",
    "canonical_json",
    "link_hash",
    "open_store",
    "upgrade",
    "upgrade_async",
]
