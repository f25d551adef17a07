"""Canonical argument values: what a rule matches is exactly what is forwarded.

A constrained argument must be a string already in canonical form; otherwise the call is
refused before any rule is evaluated (nothing is rewritten, since the upstream would then
receive something other than what was checked):

- Unicode NFKC (full-width letters or ligatures would fold into other letters);
- no control characters (a NUL or newline may truncate or split the value further on);
- no percent-encoded ``.``, ``/`` or ``\\`` (decoded later, they would form a path);
- path-like values (containing ``/`` or ``\\``): no empty, ``.`` or ``..`` segments, so
  ``acme/../evil`` and ``acme//web`` are refused (a ``scheme://authority`` prefix is left alone).

Look-alike letters (Cyrillic U+0430 for Latin ``a``) are canonical: they simply do not match a
pattern written with Latin letters. Case-insensitive rules compare Unicode case-folded values.

Patterns use Cedar's ``like`` syntax: ``*`` is any run of characters, ``\\*`` a literal star;
:func:`like` is the same matcher in Python, used to group list items by the rules they meet.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

_SCHEME_AUTHORITY = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://[^/\\]*")
_ENCODED_PATH = re.compile(r"%(2[eEfF]|5[cC])")
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")  # Unicode category Cc
_SEPARATORS = re.compile(r"[/\\]")


def problem(value: str) -> str | None:
    """Why ``value`` is not canonical, or None when it is."""
    if not value.isascii() and not unicodedata.is_normalized("NFKC", value):
        return "is not in canonical form (Unicode NFKC)"
    if _CONTROL.search(value):
        return "contains control characters"
    if "%" in value and _ENCODED_PATH.search(value):
        return "is not in canonical form (percent-encoded path characters)"
    if "/" in value or "\\" in value:
        path = _SCHEME_AUTHORITY.sub("", value, count=1) if "://" in value else value
        segments = _SEPARATORS.split(path)  # a leading or trailing separator is fine
        if not all(segments[1:-1]) or any(s in (".", "..") for s in segments):
            return "is not in canonical form (path with '.', '..' or empty segments)"
    elif value in (".", ".."):
        return "is not in canonical form (a bare '.' or '..' path segment)"
    return None


def is_canonical(value: str) -> bool:
    return problem(value) is None


def fold(value: str) -> str:
    """The form case-insensitive rules compare."""
    return value.casefold()


def split_pattern(pattern: str) -> list[str]:
    """The literal pieces between the wildcards of a pattern (``\\*`` is a literal star)."""
    pieces, current, i = [], [], 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\" and i + 1 < len(pattern) and pattern[i + 1] == "*":
            current.append("*")
            i += 2
            continue
        if char == "*":
            pieces.append("".join(current))
            current = []
        else:
            current.append(char)
        i += 1
    pieces.append("".join(current))
    return pieces


@lru_cache(maxsize=4096)
def matcher(pattern: str) -> re.Pattern[str]:
    """The pattern as a regular expression: ``value like pattern`` is ``matcher(pattern).fullmatch``."""
    return re.compile(".*".join(re.escape(p) for p in split_pattern(pattern)), re.DOTALL)


def like(value: str, pattern: str) -> bool:
    """Cedar's ``value like pattern``."""
    return matcher(pattern).fullmatch(value) is not None


__all__ = ["fold", "is_canonical", "like", "matcher", "problem", "split_pattern"]
