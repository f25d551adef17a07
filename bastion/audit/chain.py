"""Verify the audit hash chain: walk stored records and report the first broken link.

A link is broken when a record's ``prev_hash`` is not the previous record's ``hash``,
its ``hash`` is not ``sha256(prev_hash + canonical_json(record))``, or its ``seq`` does
not follow the previous one by exactly 1. When retention purged the oldest records
the walk starts at the first remaining one, whose ``prev_hash`` cannot be checked
(``anchored`` is then False and the report says so).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass

from bastion.core.records import StoredAuditRecord
from bastion.store.base import AuditStore
from bastion.store.hashing import GENESIS_HASH, link_hash


@dataclass(frozen=True, slots=True)
class VerifyResult:
    ok: bool
    count: int  # records checked (up to and including the broken one)
    first_seq: int | None
    last_seq: int | None  # the last record that verified
    head_hash: str | None  # its hash
    anchored: bool  # the first record links to the genesis hash (nothing purged before it)
    broken_seq: int | None = None
    reason: str = ""

    def describe(self) -> str:
        """One line for humans."""
        if self.count == 0:
            return "ok: the audit log is empty"
        if not self.ok:
            return f"BROKEN at seq {self.broken_seq}: {self.reason} ({self.count} records checked)"
        start = "genesis" if self.anchored else f"seq {self.first_seq} (earlier records were purged)"
        span = f"seq {self.first_seq}..{self.last_seq}"
        return f"ok: {self.count} records, {span} from {start}, head {self.head_hash}"


class _Walker:
    def __init__(self) -> None:
        self.count = 0
        self.first: StoredAuditRecord | None = None
        self.prev: StoredAuditRecord | None = None

    def step(self, item: StoredAuditRecord) -> str:
        """Check one record against the previous; returns the reason it is broken, or ''."""
        self.count += 1
        prev = self.prev
        if prev is None:
            self.first = item
            if item.seq == 1 and item.prev_hash != GENESIS_HASH:
                return "the first record does not link to the genesis hash"
        elif item.seq != prev.seq + 1:
            return f"seq jumps from {prev.seq} to {item.seq} (records missing or reordered)"
        elif item.prev_hash != prev.hash:
            return f"prev_hash does not match the hash of seq {prev.seq}"
        if link_hash(item.prev_hash, item.record) != item.hash:
            return "the record's content does not match its hash (modified)"
        self.prev = item
        return ""

    def result(self, broken: StoredAuditRecord | None = None, reason: str = "") -> VerifyResult:
        first, last = self.first, self.prev
        return VerifyResult(
            ok=broken is None,
            count=self.count,
            first_seq=first.seq if first else None,
            last_seq=last.seq if last else None,
            head_hash=last.hash if last else None,
            anchored=first is not None and first.prev_hash == GENESIS_HASH,
            broken_seq=broken.seq if broken else None,
            reason=reason,
        )


def verify(records: Iterable[StoredAuditRecord]) -> VerifyResult:
    """Check records given in ascending seq order; stops at the first broken link."""
    walker = _Walker()
    for item in records:
        reason = walker.step(item)
        if reason:
            return walker.result(item, reason)
    return walker.result()


async def iter_records(store: AuditStore, page: int = 1000) -> AsyncIterator[StoredAuditRecord]:
    """Every stored record in ascending seq order, ``page`` at a time."""
    after = 0
    while True:
        batch = await store.tail(limit=page, after_seq=after)
        for item in batch:
            yield item
        if len(batch) < page:
            return
        after = batch[-1].seq


async def verify_store(store: AuditStore, page: int = 1000) -> VerifyResult:
    """:func:`verify` over the whole store, reading it page by page."""
    walker = _Walker()
    async for item in iter_records(store, page):
        reason = walker.step(item)
        if reason:
            return walker.result(item, reason)
    return walker.result()
