"""bastion.web.pages: what the login, consent, logout and message pages show, and that every
client-controlled value is text, never markup (requirements digest §3.3, §5.2)."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import re
from html.parser import HTMLParser
from typing import Any

import pytest

from bastion.web.pages import (
    ConsentView,
    LoginView,
    LogoutView,
    MessageView,
    SignedOutView,
    render_consent,
    render_login,
    render_logout,
    render_message,
    render_signed_out,
)
from bastion.web.security import CONTENT_SECURITY_POLICY, PAGE_HEADERS
from bastion.web.theme import PAGE_CSS

HOSTILE = "<script>alert(1)</script>\"'><img src=x onerror=alert(1)>"

CONSENT = ConsentView(
    action="/oauth/consent",
    csrf="csrf-token",
    request="req-123",
    user="alice@example.com",
    client_name="Example Client",
    client_id="https://app.example.com/oauth/client.json",
    client_source="cimd",
    client_domain="app.example.com",
    redirect_uri="https://app.example.com/callback?x=1",
    redirect_host="app.example.com",
    loopback_redirect=False,
    resource="https://gw.example.com/mcp/files",
    resource_name="Files",
    scopes=("files:read", "files:write"),
)
LOGIN = LoginView(action="/login", csrf="csrf-token", request="req-123")


class _Collector(HTMLParser):
    """Collects elements (tag, attrs) and the text of <style> and <title> blocks."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str | None]]] = []
        self.styles: list[str] = []
        self.titles: list[str] = []
        self._in: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, dict(attrs)))
        if tag in ("style", "title"):
            self._in = tag

    def handle_endtag(self, tag: str) -> None:
        self._in = None

    def handle_data(self, data: str) -> None:
        if self._in == "style":
            self.styles.append(data)
        elif self._in == "title":
            self.titles.append(data)

    def find(self, tag: str, **attrs: str) -> list[dict[str, str | None]]:
        return [a for t, a in self.elements if t == tag and all(a.get(k) == v for k, v in attrs.items())]


def parse(html: str) -> _Collector:
    collector = _Collector()
    collector.feed(html)
    collector.close()
    return collector


def all_pages() -> list[str]:
    return [
        render_login(LOGIN),
        render_login(dataclasses.replace(LOGIN, error="Wrong", sources=(("Okta", "/idp/okta/start"),))),
        render_consent(CONSENT),
        render_consent(dataclasses.replace(CONSENT, loopback_redirect=True, scopes=())),
        render_message(MessageView(title="Invalid redirect URI", message="No.")),
        render_logout(LogoutView(action="/logout", csrf="c", user="alice")),
        render_signed_out(SignedOutView(link=("Sign in again", "/login"))),
    ]


@pytest.mark.parametrize("html", all_pages())
def test_every_page_has_the_common_head(html: str) -> None:
    page = parse(html)
    assert html.startswith("<!doctype html>")
    assert page.find("html", lang="en")
    assert page.find("meta", name="viewport")
    assert page.find("meta", name="referrer", content="no-referrer")
    assert page.titles
    assert page.titles[0].strip().endswith("Bastion")
    assert "Bastion" in html


@pytest.mark.parametrize("html", all_pages())
def test_csp_hash_matches_the_css_the_page_inlines(html: str) -> None:
    """Browsers hash the exact text of the <style> element; it must be the one the CSP allows."""
    styles = re.findall(r"<style>(.*?)</style>", html, re.DOTALL)
    assert styles == [PAGE_CSS]
    digest = base64.b64encode(hashlib.sha256(styles[0].encode("utf-8")).digest()).decode()
    assert f"style-src 'sha256-{digest}'" in CONTENT_SECURITY_POLICY
    assert dict(PAGE_HEADERS)[b"content-security-policy"] == CONTENT_SECURITY_POLICY.encode()


@pytest.mark.parametrize("html", all_pages())
def test_pages_load_nothing_and_run_nothing(html: str) -> None:
    page = parse(html)
    assert not page.find("script")
    assert not page.find("img")
    assert not page.find("link")
    assert not any(a.get("style") for _, a in page.elements)  # inline style attributes break the CSP
    assert not any(k.startswith("on") for _, a in page.elements for k in a)
    assert "</style" not in PAGE_CSS.lower()
    assert PAGE_CSS.isascii()


def test_login_form_fields() -> None:
    page = parse(render_login(LOGIN))
    (form,) = page.find("form")
    assert form["method"] == "post"
    assert form["action"] == "/login"
    assert page.find("input", type="hidden", name="csrf", value="csrf-token")
    assert page.find("input", type="hidden", name="request", value="req-123")
    assert page.find("input", name="username", id="username", type="text")
    assert page.find("input", name="password", id="password", type="password")
    assert page.find("label", **{"for": "username"})
    assert page.find("label", **{"for": "password"})
    assert re.search(r'<button type="submit"[^>]*>Sign in</button>', render_login(LOGIN))
    assert 'role="alert"' not in render_login(LOGIN)


def test_login_error_username_and_sources() -> None:
    view = dataclasses.replace(
        LOGIN,
        username=HOSTILE,
        error="Wrong username or password.",
        client_name="Claude",
        sources=(("Okta", "https://gw.example.com/idp/okta"), ("<b>Entra</b>", "/idp/entra")),
    )
    html = render_login(view)
    page = parse(html)
    assert page.find("input", name="username", value=HOSTILE)  # round-trips as an attribute value
    assert "<script>" not in html
    assert "<img" not in html
    assert "Wrong username or password." in html
    assert 'role="alert"' in html
    assert page.find("a", href="https://gw.example.com/idp/okta")
    assert "Sign in with Okta" in html
    assert "Sign in with &lt;b&gt;Entra&lt;/b&gt;" in html
    assert "Claude" in html


@pytest.mark.parametrize("source", ["cimd", "dcr", "config"])
def test_consent_names_who_asks(source: str) -> None:
    html = render_consent(dataclasses.replace(CONSENT, client_source=source))
    expected = {
        "cimd": "Metadata published by app.example.com",
        "dcr": "Registered itself dynamically \u2014 its name is not verified",
        "config": "Registered by your administrator",
    }
    for name, text in expected.items():
        assert (text in html) is (name == source)


def test_consent_cimd_without_domain_falls_back_to_the_client_id() -> None:
    html = render_consent(dataclasses.replace(CONSENT, client_domain=None))
    assert "Metadata published by https://app.example.com/oauth/client.json" in html


def test_consent_shows_redirect_resource_scopes_and_user() -> None:
    html = render_consent(CONSENT)
    assert '<span class="host">app.example.com</span>' in html
    assert "https://app.example.com/callback?x=1" in html
    assert "https://gw.example.com/mcp/files" in html
    assert "Files" in html
    assert "<li>files:read</li>" in html
    assert "<li>files:write</li>" in html
    assert "No specific scopes" not in html
    assert "alice@example.com" in html
    assert "runs on your computer" not in html
    assert "No specific scopes" in render_consent(dataclasses.replace(CONSENT, scopes=()))


def test_consent_form_has_two_decisions_and_hidden_fields() -> None:
    html = render_consent(CONSENT)
    page = parse(html)
    (form,) = page.find("form")
    assert form["method"] == "post"
    assert form["action"] == "/oauth/consent"
    assert page.find("input", type="hidden", name="csrf", value="csrf-token")
    assert page.find("input", type="hidden", name="request", value="req-123")
    assert (
        '<button type="submit" name="decision" value="allow" class="btn btn-primary">Allow</button>' in html
    )
    assert (
        '<button type="submit" name="decision" value="deny" class="btn btn-secondary">Deny</button>' in html
    )


def test_consent_loopback_warning() -> None:
    html = render_consent(
        dataclasses.replace(
            CONSENT,
            redirect_uri="http://127.0.0.1:43117/callback",
            redirect_host="127.0.0.1",
            loopback_redirect=True,
        )
    )
    assert "This app runs on your computer." in html
    assert "Only allow it if you started it yourself." in html


def test_consent_escapes_hostile_client_values() -> None:
    view = dataclasses.replace(
        CONSENT,
        client_name=HOSTILE,
        client_id=f"https://evil.example/{HOSTILE}",
        client_domain=HOSTILE,
        redirect_uri='https://evil.example/cb?a="><script>alert(1)</script>',
        redirect_host=HOSTILE,
        scopes=(HOSTILE,),
        logo_uri="https://evil.example/logo.png",
    )
    html = render_consent(view)
    assert "<script>" not in html
    assert "<img" not in html
    assert "evil.example/logo.png" not in html
    assert "&lt;script&gt;" in html
    assert "&#34;&gt;&lt;script&gt;" in html
    # the page still has exactly the elements the template made
    page = parse(html)
    assert len(page.find("form")) == 1
    assert len(page.find("button")) == 2


def test_consent_neutralises_bidi_and_invisible_characters() -> None:
    spoof = "Good\u202eliaM\u200b\x00"
    html = render_consent(dataclasses.replace(CONSENT, client_name=spoof, redirect_host="a\u202eb.example"))
    assert "\u202e" not in html
    assert "\u200b" not in html
    assert "\x00" not in html
    assert "Good\ufffdliaM\ufffd\ufffd" in html
    assert "a\ufffdb.example" in html


def test_consent_truncates_very_long_client_names_but_not_the_redirect() -> None:
    long_uri = "https://app.example.com/" + "p" * 500
    html = render_consent(dataclasses.replace(CONSENT, client_name="N" * 1000, redirect_uri=long_uri))
    assert "N" * 1000 not in html
    assert "N" * 79 + "\u2026" in html
    assert long_uri in html


def test_message_page() -> None:
    view = MessageView(
        title="Invalid redirect URI",
        message=f"The app sent {HOSTILE}.",
        status=400,
        link=("Back", "/"),
    )
    html = render_message(view)
    assert "<script>" not in html
    assert "Invalid redirect URI" in html
    assert parse(html).find("a", href="/")
    assert "<a " not in render_message(MessageView(title="Expired", message="Start again."))


def test_logout_and_signed_out_pages() -> None:
    html = render_logout(LogoutView(action="/logout", csrf="tok", user=HOSTILE))
    page = parse(html)
    (form,) = page.find("form")
    assert form["method"] == "post"
    assert form["action"] == "/logout"
    assert page.find("input", type="hidden", name="csrf", value="tok")
    assert "<script>" not in html
    assert "Sign out" in html
    signed_out = render_signed_out(SignedOutView(link=("Sign in again", "/login")))
    assert "signed out" in signed_out.lower()
    assert parse(signed_out).find("a", href="/login")
    assert "<a " not in render_signed_out(SignedOutView())


@pytest.mark.parametrize(
    "url",
    ["javascript:alert(1)", "data:text/html,x", "//evil.example/x", "/\\evil.example", "login", "/a b", ""],
)
def test_unsafe_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError, match="action"):
        LoginView(action=url, csrf="c", request="r")
    with pytest.raises(ValueError, match="source url"):
        LoginView(action="/login", csrf="c", request="r", sources=(("X", url),))
    with pytest.raises(ValueError, match="link url"):
        MessageView(title="t", message="m", link=("x", url))
    with pytest.raises(ValueError, match="action"):
        dataclasses.replace(CONSENT, action=url)


@pytest.mark.parametrize(
    ("change", "match"),
    [({"client_source": "other"}, "client_source"), ({"action": "https://"}, "action")],
)
def test_consent_view_checks_its_fields(change: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        dataclasses.replace(CONSENT, **change)


def test_message_status_must_be_http() -> None:
    with pytest.raises(ValueError, match="status"):
        MessageView(title="t", message="m", status=42)
    assert MessageView(title="t", message="m", status=200).status == 200


def test_views_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        CONSENT.client_name = "x"  # type: ignore[misc]
