"""The audit hash chain's arithmetic: canonical JSON of a record and the link hash.

``hash = sha256(prev_hash + canonical_json(record))`` as lowercase hex, with
``GENESIS_HASH`` (64 zeros) before the first record. Every store computes links
with these functions, and ``bastion.audit.chain.verify`` checks them with the same
ones, so a record hashes identically whichever database it went through.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from typing import Any

import orjson

from bastion.core.records import AuditRecord, StoredAuditRecord

GENESIS_HASH = "0" * 64

_FLOAT_FIELDS = ("latency_ms", "upstream_ms")
_INT_FIELDS = ("status", "error_code")
_STR_FIELDS = (
    "event",
    "trace_id",
    "endpoint",
    "upstream",
    "era",
    "method",
    "name",
    "request_id",
    "subject",
    "client_id",
    "session",
    "detail",
)
# Both databases store BIGINT; a larger value could never be written back identically.
_INT64 = (-(2**63), 2**63 - 1)


def _clean_text(value: str) -> str:
    # Postgres text rejects NUL and UTF-8 cannot encode lone surrogates; a record that
    # cannot be stored would block the audit queue forever, so such characters are replaced.
    if "\x00" in value:
        value = value.replace("\x00", "\ufffd")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        value = value.encode("utf-8", "replace").decode("utf-8")
    return value


_NONE = type(None)


def _is_clean(record: AuditRecord) -> bool:
    """The common case, checked cheaply: every field already has its stored type and range."""
    ts = record.ts
    if type(ts) is not float or not math.isfinite(ts):
        return False
    for value in (record.latency_ms, record.upstream_ms):
        if value is not None and (type(value) is not float or not math.isfinite(value)):
            return False
    for value in (record.status, record.error_code):
        if value is not None and (type(value) is not int or not _INT64[0] <= value <= _INT64[1]):
            return False
    text = ""
    for name in _STR_FIELDS:
        value = getattr(record, name)
        if value is not None:
            if type(value) is not str:
                return False
            text += value
    return text.isascii() and "\x00" not in text


def normalize(record: AuditRecord) -> AuditRecord:
    """Coerce a record to what every store can hold and give back unchanged.

    Numbers become float/int of storable range (NaN/inf and out-of-range ints become
    None), text loses NUL and lone surrogates. Returns ``record`` itself when nothing changes.
    """
    if _is_clean(record):
        return record
    changes: dict[str, Any] = {}
    ts = float(record.ts)
    if not math.isfinite(ts):
        raise ValueError("audit record ts must be a finite number")
    if type(record.ts) is not float:
        changes["ts"] = ts
    for name in _FLOAT_FIELDS:
        value = getattr(record, name)
        if value is None:
            continue
        number = float(value)
        fixed: float | None = number if math.isfinite(number) else None
        if fixed is not value or type(value) is not float:
            changes[name] = fixed
    for name in _INT_FIELDS:
        value = getattr(record, name)
        if value is None:
            continue
        integer = int(value)
        fixed_int: int | None = integer if _INT64[0] <= integer <= _INT64[1] else None
        if fixed_int != value or type(value) is not int:
            changes[name] = fixed_int
    for name in _STR_FIELDS:
        value = getattr(record, name)
        if value is None:
            continue
        text = _clean_text(str(value))
        if text != value or type(value) is not str:
            changes[name] = text
    return record._replace(**changes) if changes else record


FIELD_NAMES: tuple[str, ...] = AuditRecord._fields


def record_fields(record: AuditRecord) -> dict[str, Any]:
    """The record's fields as a plain dict (column values and JSON object keys)."""
    return dict(zip(FIELD_NAMES, record, strict=True))


def canonical_json(record: AuditRecord) -> bytes:
    """Compact JSON with sorted keys, UTF-8: the bytes that are hashed."""
    return orjson.dumps(record_fields(record), option=orjson.OPT_SORT_KEYS)


def link_hash(prev_hash: str, record: AuditRecord) -> str:
    """sha256(prev_hash + canonical_json(record)) in lowercase hex."""
    return hashlib.sha256(prev_hash.encode("ascii") + canonical_json(record)).hexdigest()


def extend_chain(
    seq: int, prev_hash: str, records: Sequence[AuditRecord]
) -> tuple[list[StoredAuditRecord], list[tuple[object, ...]], int, str]:
    """Link ``records`` after (seq, prev_hash): the stored records, their table rows
    ``(seq, *fields, prev_hash, hash)`` and the new chain head (seq, hash)."""
    stored: list[StoredAuditRecord] = []
    rows: list[tuple[object, ...]] = []
    for record in records:
        seq += 1
        digest = link_hash(prev_hash, record)
        stored.append(StoredAuditRecord(seq=seq, record=record, prev_hash=prev_hash, hash=digest))
        rows.append((seq, *record, prev_hash, digest))
        prev_hash = digest
    return stored, rows, seq, prev_hash
