"""Re-wrapping every record's data key under the current vault master key (``bastion vault
rotate-key``), while servers keep using the records.

Each record is taken with the refresh lease first, so a rotation never races a refresh in flight
(a refresh whose compare-and-set failed would lose the provider's rotated refresh token); a
record leased by a refresh is tried again after a pause. Its data key is re-wrapped (the sealed
secret is not touched) and written with a compare-and-set on its version; a record changed
meanwhile (a user reconnecting) is read again on the next pass. Running it twice is harmless:
the second run finds nothing to do.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import secrets
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from bastion.core.records import VaultRecord
from bastion.store import VaultStore
from bastion.vault.envelope import VaultCipher
from bastion.vault.model import VaultTampered

LEASE_S = 30.0  # how long a re-wrap may hold a record (it takes milliseconds)
BUSY_PAUSE_S = 1.0
MAX_CONFLICTS = 5  # a record changed this often during one run is left for the next run

_Key = tuple[str, str]


class _Outcome(enum.Enum):
    REWRAPPED = enum.auto()
    ALREADY = enum.auto()  # someone else re-wrapped it, or it was reconnected under the current key
    GONE = enum.auto()
    BUSY = enum.auto()  # a refresh holds its lease
    CHANGED = enum.auto()  # written meanwhile: read it again
    TAMPERED = enum.auto()


@dataclass(slots=True)
class RotationResult:
    rewrapped: int = 0
    busy: int = 0  # still leased by a refresh when the wait ran out, or changing all the time
    tampered: int = 0  # do not open: left as they are


async def _rewrap_one(
    store: VaultStore, cipher: VaultCipher, record: VaultRecord, owner: str, now: float
) -> _Outcome:
    user_id, connection = record.user_id, record.connection
    leased = await store.take_lease(user_id, connection, owner, now + LEASE_S, now)
    if leased is None:
        return _Outcome.BUSY if await store.get(user_id, connection) is not None else _Outcome.GONE
    try:
        if leased.key_id == cipher.current_key_id:
            return _Outcome.ALREADY
        try:
            rewrapped = cipher.rewrap(leased)
        except VaultTampered:
            return _Outcome.TAMPERED
        new = dataclasses.replace(rewrapped, version=leased.version + 1, lease_owner=None, lease_until=0.0)
        return _Outcome.REWRAPPED if await store.replace(new, leased.version) else _Outcome.CHANGED
    finally:
        await store.release_lease(user_id, connection, owner)  # a no-op after a successful replace


async def rewrap_all(
    store: VaultStore,
    cipher: VaultCipher,
    *,
    batch: int = 100,
    wait_s: float = 60.0,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> RotationResult:
    """Re-wrap every record not under ``cipher``'s current key, ``batch`` at a time, waiting up
    to ``wait_s`` seconds for records a refresh holds."""
    owner = f"rotate-key:{secrets.token_hex(8)}"
    result = RotationResult()
    tampered: set[_Key] = set()
    busy: set[_Key] = set()
    conflicts: Counter[_Key] = Counter()
    deadline = clock() + wait_s
    while True:
        left_out = tampered | busy
        found = await store.wrapped_under_other_than(cipher.current_key_id, batch + len(left_out))
        todo = [r for r in found if (r.user_id, r.connection) not in left_out]
        if not todo:
            if not busy or clock() >= deadline:
                break
            await sleep(BUSY_PAUSE_S)
            busy.clear()
            continue
        for record in todo:
            key = (record.user_id, record.connection)
            outcome = await _rewrap_one(store, cipher, record, owner, clock())
            if outcome is _Outcome.REWRAPPED:
                result.rewrapped += 1
            elif outcome is _Outcome.TAMPERED:
                tampered.add(key)
            elif outcome is _Outcome.BUSY:
                busy.add(key)
            elif outcome is _Outcome.CHANGED:
                conflicts[key] += 1
                if conflicts[key] >= MAX_CONFLICTS:
                    busy.add(key)
    result.busy = len(busy)
    result.tampered = len(tampered)
    return result


__all__ = ["RotationResult", "rewrap_all"]
