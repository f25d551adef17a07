"""In-memory vault records for tests: the same semantics as ``sql_vault``.

No method awaits between reading and writing, so each one is atomic on the event loop without
a lock (the memory store is never shared between processes). Records are frozen and hold only
immutable values, so they are stored and handed out as they are.
"""

from __future__ import annotations

import builtins
import collections
import dataclasses

from bastion.core.records import VaultRecord

_Key = tuple[str, str]


class MemoryVaultStore:
    def __init__(self) -> None:
        self._records: dict[_Key, VaultRecord] = {}

    async def get(self, user_id: str, connection: str) -> VaultRecord | None:
        return self._records.get((user_id, connection))

    async def list_for_user(self, user_id: str) -> builtins.list[VaultRecord]:
        return sorted((r for r in self._records.values() if r.user_id == user_id), key=lambda r: r.connection)

    async def put(self, record: VaultRecord) -> None:
        key = (record.user_id, record.connection)
        old = self._records.get(key)
        if old is not None and old.version >= record.version:
            record = dataclasses.replace(record, version=old.version + 1)
        self._records[key] = record

    async def replace(self, record: VaultRecord, expected_version: int) -> bool:
        if record.version <= expected_version:  # or a later compare-and-set could succeed twice
            raise ValueError("record.version must be above expected_version")
        key = (record.user_id, record.connection)
        old = self._records.get(key)
        if old is None or old.version != expected_version:
            return False
        self._records[key] = record
        return True

    async def take_lease(
        self, user_id: str, connection: str, owner: str, until: float, now: float
    ) -> VaultRecord | None:
        record = self._records.get((user_id, connection))
        if record is None or not (record.lease_until <= now or record.lease_owner == owner):
            return None
        record = dataclasses.replace(record, lease_owner=owner, lease_until=float(until))
        self._records[user_id, connection] = record
        return record

    async def release_lease(self, user_id: str, connection: str, owner: str) -> None:
        record = self._records.get((user_id, connection))
        if record is not None and record.lease_owner == owner:
            self._records[user_id, connection] = dataclasses.replace(
                record, lease_owner=None, lease_until=0.0
            )

    async def touch(self, user_id: str, connection: str, now: float) -> None:
        record = self._records.get((user_id, connection))
        # last_used_at only moves forward: replicas with skewed clocks must not move it back
        if record is not None and (record.last_used_at is None or record.last_used_at < now):
            self._records[user_id, connection] = dataclasses.replace(record, last_used_at=float(now))

    async def delete(self, user_id: str, connection: str) -> bool:
        return self._records.pop((user_id, connection), None) is not None

    async def delete_for_user(self, user_id: str) -> int:
        doomed = [key for key in self._records if key[0] == user_id]
        for key in doomed:
            del self._records[key]
        return len(doomed)

    async def key_ids(self) -> set[str]:
        return {r.key_id for r in self._records.values()}

    async def count_by_key(self) -> dict[str, int]:
        return dict(collections.Counter(r.key_id for r in self._records.values()))

    async def wrapped_under_other_than(self, key_id: str, limit: int) -> builtins.list[VaultRecord]:
        others = sorted(
            (r for r in self._records.values() if r.key_id != key_id), key=lambda r: (r.user_id, r.connection)
        )
        return others[: max(limit, 0)]
