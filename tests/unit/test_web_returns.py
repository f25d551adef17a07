"""``next``: where a sign-in may return to (only Bastion's own connect pages; no open redirect)."""

from __future__ import annotations

import pytest

from bastion.web.returns import login_url, safe_next


@pytest.mark.parametrize(
    "value",
    ["/connections", "/connect/crm", "/connect/crm-2.eu_x", "/connect/crm?intent=" + "A-b_9" * 8],
)
def test_own_pages_are_accepted(value: str) -> None:
    assert safe_next(value) == value


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "//evil.com",
        "///evil.com",
        "/\\evil.com",
        "\\\\evil.com",
        "https://evil.example/connect/crm",
        "http:/connect/crm",
        "/connect/crm@evil.com",
        "/connect//evil.com",
        "/connect/%2F%2Fevil.com",
        "/connect/crm?intent=x&next=//evil",
        "/connect/crm#frag",
        "/connect/crm\n",
        "/connect/crm\r\nLocation: //evil",
        "/connect/../login",
        "/connect/callback",
        "/connect/callback?intent=x",
        "/connections/",
        "/connections?x=1",
        "/login/done",
        "/authorize/continue",
        "/connect/\u0441rm",  # Cyrillic es
        "/connect/" + "a" * 65,
        "/connect/crm?intent=" + "a" * 129,
    ],
)
def test_anything_else_is_refused(value: str | None) -> None:
    assert safe_next(value) is None


def test_login_url_keeps_the_query_encoded() -> None:
    assert login_url("/connect/crm?intent=abc") == "/login?next=/connect/crm%3Fintent%3Dabc"
