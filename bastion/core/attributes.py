"""User attributes for policy rules: declared by the admin (``policy.user_attributes``), typed,
bounded (pure; shared by the token endpoint, authn and the policy engine).

A declaration gives each attribute one of four types, the Cedar type of ``principal.<name>``:
``string`` (String), ``long`` (Long), ``bool`` (Bool) and ``set`` (Set<String>).

Values reach a user record as text from an administrator (``bastion users add --attr
level=3``) or as an identity provider's claim gives them (string, list of strings, integer,
boolean); :func:`coerce` turns either into the declared type: ``long`` parses an integer,
``bool`` reads true/false, ``set`` splits text on commas. A value that does not convert is left
out, never an error at request time. Bounds keep tokens small: a string (or a set member) longer
than :data:`MAX_STRING_CHARS` is left out, a set keeps its first :data:`MAX_SET_VALUES` values
(sorted), and the ``attrs`` claim as a whole holds at most :data:`MAX_CLAIM_CHARS` of JSON.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Literal

AttributeType = Literal["string", "long", "bool", "set"]
AttributeValue = str | int | bool | tuple[str, ...]  # a set: sorted, without duplicates
MAX_STRING_CHARS = 256
MAX_SET_VALUES = 64
MAX_ATTRIBUTES = 32
MAX_CLAIM_CHARS = 4096  # the JSON of the ``attrs`` claim (access tokens are at most 16 KiB)
LONG_MAX = 2**63 - 1  # Cedar's Long; -2**63 has no literal, so the range is symmetric
_LONG_TEXT = re.compile(r"^[+-]?[0-9]{1,19}$")


def _string(value: object) -> str | None:
    return value if isinstance(value, str) and len(value) <= MAX_STRING_CHARS else None


def _long(value: object) -> int | None:
    if isinstance(value, str) and _LONG_TEXT.match(value.strip()):
        value = int(value.strip())
    if isinstance(value, int) and not isinstance(value, bool) and -LONG_MAX <= value <= LONG_MAX:
        return value
    return None


def _bool(value: object) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    return None


def _set(value: object) -> tuple[str, ...] | None:
    if isinstance(value, str):
        items: list[object] = [v.strip() for v in value.split(",")]
    elif isinstance(value, list | tuple | set | frozenset):
        items = list(value)
    else:
        return None
    kept = {v for v in items if isinstance(v, str) and v and len(v) <= MAX_STRING_CHARS}
    return tuple(sorted(kept)[:MAX_SET_VALUES])


def coerce(value: object, kind: AttributeType) -> AttributeValue | None:
    """``value`` as the declared type, or None when it does not convert."""
    if kind == "string":
        return _string(value)
    if kind == "long":
        return _long(value)
    if kind == "bool":
        return _bool(value)
    return _set(value)


def conforms(value: object, kind: AttributeType) -> bool:
    """Whether an already typed value (from a token) has the declared type and bounds."""
    if kind == "string":
        return _string(value) is not None
    if kind == "long":
        return type(value) is int and -LONG_MAX <= value <= LONG_MAX
    if kind == "bool":
        return type(value) is bool
    return (
        isinstance(value, tuple)
        and len(value) <= MAX_SET_VALUES
        and all(_string(v) is not None for v in value)
    )


def typed(raw: Mapping[str, object], declared: Mapping[str, AttributeType]) -> dict[str, AttributeValue]:
    """The declared attributes ``raw`` (a user record's attributes) has, each as its type."""
    out: dict[str, AttributeValue] = {}
    for name, kind in sorted(declared.items()):
        if name in raw:
            value = coerce(raw[name], kind)
            if value is not None:
                out[name] = value
    return out


def claim_value(raw: Mapping[str, object], declared: Mapping[str, AttributeType]) -> dict[str, object]:
    """The ``attrs`` claim of an access token: :func:`typed`, sets as lists, at most
    :data:`MAX_CLAIM_CHARS` of JSON (attributes that do not fit, in name order, are left out)."""
    out: dict[str, object] = {}
    size = 2  # {}
    for name, value in typed(raw, declared).items():
        item = list(value) if isinstance(value, tuple) else value
        cost = len(json.dumps({name: item}, ensure_ascii=False)) - 1  # "name":value plus a comma
        if size + cost > MAX_CLAIM_CHARS:
            continue
        out[name] = item
        size += cost
    return out


def _claim_item(item: object) -> AttributeValue | None:
    if isinstance(item, bool):
        return item
    if isinstance(item, int):
        return _long(item)
    if isinstance(item, str):
        return _string(item)
    if isinstance(item, list) and all(isinstance(v, str) for v in item):
        return _set(item)
    return None


def from_claim(value: object) -> tuple[tuple[str, AttributeValue], ...]:
    """The attributes of an ``attrs`` claim (an object), sorted by name; entries of the wrong
    shape are left out (the token is Bastion's own: only a declaration can have changed since)."""
    if not isinstance(value, dict):
        return ()
    out: dict[str, AttributeValue] = {}
    for name, item in value.items():
        typed_item = _claim_item(item)
        if isinstance(name, str) and typed_item is not None and len(out) < MAX_ATTRIBUTES:
            out[name] = typed_item
    return tuple(sorted(out.items(), key=lambda pair: pair[0]))


__all__ = [
    "MAX_ATTRIBUTES",
    "MAX_CLAIM_CHARS",
    "MAX_SET_VALUES",
    "MAX_STRING_CHARS",
    "AttributeType",
    "AttributeValue",
    "claim_value",
    "coerce",
    "conforms",
    "from_claim",
    "typed",
]
