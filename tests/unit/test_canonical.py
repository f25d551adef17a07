"""bastion.policy.canonical: what is matched is exactly what is forwarded.

Values not in canonical form are refused (never rewritten); look-alikes are canonical and simply
fail to match; ``like`` is Cedar's matcher, also used to group list items by rule patterns.
"""

from __future__ import annotations

import pytest

from bastion.policy.canonical import fold, is_canonical, like, problem, split_pattern

CYRILLIC_A = "\u0430"
FULLWIDTH_ACME = "\uff41\uff43\uff4d\uff45"  # "acme" in full-width letters


@pytest.mark.parametrize(
    "value",
    [
        "acme/web",
        "acme/web/",  # a trailing separator makes no traversal
        "/srv/data/file.txt",
        "/",
        "ACME/web",  # case is not canonicalised: rules say whether it matters
        f"{CYRILLIC_A}cme/web",  # a look-alike is canonical; it fails to match 'acme/*'
        "https://example.com/a/b",  # scheme://authority is not an empty segment
        "https://example.com",
        "C:\\Users\\alice",
        "caf\u00e9",  # precomposed é is NFKC
        "100%",
        "a.b..c",  # dots inside a segment are not traversal
        "",
    ],
)
def test_canonical_values(value: str) -> None:
    assert problem(value) is None
    assert is_canonical(value)


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("acme/../evil", "path"),
        ("acme//web", "path"),
        ("./acme", "path"),
        ("acme/.", "path"),
        ("..", "bare"),
        (".", "bare"),
        ("acme\\..\\evil", "path"),
        ("acme/..\\evil", "path"),
        ("//evil.example/x", "path"),
        ("https://example.com/a//b", "path"),
        ("https://example.com/a/../b", "path"),
        (f"{FULLWIDTH_ACME}/web", "NFKC"),
        ("\ufb01le", "NFKC"),  # the fi ligature
        ("cafe\u0301", "NFKC"),  # decomposed é
        ("acme/web\x00.txt", "control"),
        ("acme/web\nevil", "control"),
        ("acme\x85web", "control"),
        ("acme/%2e%2e/evil", "percent-encoded"),
        ("acme%2Fweb", "percent-encoded"),
        ("acme%5cweb", "percent-encoded"),
    ],
)
def test_refused_values(value: str, why: str) -> None:
    found = problem(value)
    assert found is not None
    assert why in found
    assert not is_canonical(value)


@pytest.mark.parametrize(
    ("pattern", "value", "matches"),
    [
        ("acme/*", "acme/web", True),
        ("acme/*", "acme/", True),
        ("acme/*", "acme/a/b", True),  # '*' crosses '/', as in Cedar
        ("acme/*", "evil/acme/web", False),
        ("acme/*", "ACME/web", False),
        ("acme/*", f"{CYRILLIC_A}cme/web", False),
        ("*", "", True),
        ("a*c*e", "abcde", True),
        ("a.c", "abc", False),  # no regex metacharacters
        ("a\\*", "a*", True),  # an escaped star is a literal star
        ("a\\*", "ab", False),
        ("file:///docs/*", "file:///docs/readme.md", True),
    ],
)
def test_like(pattern: str, value: str, matches: bool) -> None:
    assert like(value, pattern) is matches


def test_split_pattern_and_fold() -> None:
    assert split_pattern("a*b\\*c*") == ["a", "b*c", ""]
    assert fold("ACME/Straße") == "acme/strasse"
