"""Page view models (frozen dataclasses) and the functions that render them to HTML.

Each ``render_*`` returns the whole document as ``str``; the caller sends it with
``security.PAGE_HEADERS``. Templates live in ``bastion/web/templates`` and are rendered with
autoescaping on, so every value is text, never markup. Values that a client chose itself
(name, ids, redirect URI) also lose invisible and bidi control characters, which could make
one name look like another (requirements digest §3.3: the consent page must show who asks
and where the browser goes next).
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Final

import jinja2
from markupsafe import Markup

from bastion.web.theme import PAGE_CSS

CLIENT_SOURCES: Final = frozenset({"cimd", "dcr", "config"})
_HIDDEN_CATEGORIES: Final = frozenset({"Cc", "Cf", "Co", "Cs", "Zl", "Zp"})
_MAX_NAME_CHARS: Final = 80


def _check_url(url: str, what: str) -> None:
    """Form actions and links are server-chosen: a path on this origin or an http(s) URL."""
    if not url.isprintable() or any(c.isspace() for c in url):
        raise ValueError(f"{what} has whitespace or control characters")
    if url.startswith("/") and not url.startswith(("//", "/\\")):
        return
    if url.startswith(("https://", "http://")) and len(url.split("/", 3)[2]) > 0:
        return
    raise ValueError(f"{what} must be a path on this site or an http(s) URL")


def visible(text: str) -> str:
    """``text`` with control, format (bidi overrides, zero-width) and private-use characters
    shown as U+FFFD, so what the user reads is what the bytes say."""
    return "".join("\ufffd" if unicodedata.category(c) in _HIDDEN_CATEGORIES else c for c in text)


def _short(text: str) -> str:
    text = visible(text)
    return text if len(text) <= _MAX_NAME_CHARS else text[: _MAX_NAME_CHARS - 1] + "\u2026"


@dataclass(frozen=True, slots=True)
class LoginView:
    """Username/password form; ``request`` is the opaque id of the pending authorization."""

    action: str
    csrf: str
    request: str
    username: str = ""
    error: str | None = None
    client_name: str | None = None
    sources: tuple[tuple[str, str], ...] = ()  # (label, url): "Sign in with <label>"
    password: bool = True  # show the username/password form
    realm_action: str | None = None  # show "Work e-mail → Continue" posting here (home realm)
    next: str = ""  # a page of Bastion's own to return to afterwards (``returns.safe_next``)

    def __post_init__(self) -> None:
        _check_url(self.action, "action")
        if self.next:
            _check_url(self.next, "next")
        if self.realm_action is not None:
            _check_url(self.realm_action, "realm_action")
        for _, url in self.sources:
            _check_url(url, "source url")


@dataclass(frozen=True, slots=True)
class ConsentView:
    """Allow/deny for one client, one resource, one user (requirements digest §3.3, §5.2)."""

    action: str
    csrf: str
    request: str
    user: str
    client_name: str
    client_id: str
    client_source: str  # "cimd" | "dcr" | "config"
    client_domain: str | None
    redirect_uri: str
    redirect_host: str
    loopback_redirect: bool
    resource: str
    resource_name: str
    scopes: tuple[str, ...]
    logo_uri: str | None = None  # never rendered: an <img> would make the browser fetch it

    def __post_init__(self) -> None:
        _check_url(self.action, "action")
        if self.client_source not in CLIENT_SOURCES:
            raise ValueError(f"client_source must be one of {sorted(CLIENT_SOURCES)}")


@dataclass(frozen=True, slots=True)
class MessageView:
    """An error or notice page, e.g. an invalid redirect URI that must not be redirected to."""

    title: str
    message: str
    status: int = 400
    link: tuple[str, str] | None = None  # (label, url)

    def __post_init__(self) -> None:
        if not 200 <= self.status <= 599:
            raise ValueError("status must be an HTTP status between 200 and 599")
        if self.link is not None:
            _check_url(self.link[1], "link url")


@dataclass(frozen=True, slots=True)
class LogoutView:
    """Confirm sign-out; a POST with a CSRF token, so a link elsewhere cannot sign anyone out."""

    action: str
    csrf: str
    user: str

    def __post_init__(self) -> None:
        _check_url(self.action, "action")


@dataclass(frozen=True, slots=True)
class SignedOutView:
    """Shown after sign-out."""

    message: str = "You have been signed out of Bastion."
    link: tuple[str, str] | None = None  # (label, url), e.g. ("Sign in again", "/login")

    def __post_init__(self) -> None:
        if self.link is not None:
            _check_url(self.link[1], "link url")


_env = jinja2.Environment(
    loader=jinja2.PackageLoader("bastion.web", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    auto_reload=False,
)
# A constant, not input: inside <style> entities are not decoded, so it must not be escaped, and
# the CSP hash in ``security`` is over exactly these characters.
_env.globals["page_css"] = Markup(PAGE_CSS)  # noqa: S704
_env.filters["visible"] = visible
_env.filters["short"] = _short

_SOURCE_NOTES: Final = {
    "dcr": "Registered itself dynamically \u2014 its name is not verified.",
    "config": "Registered by your administrator.",
}


def _render(template: str, **context: object) -> str:
    return _env.get_template(template).render(**context)


def render_login(view: LoginView) -> str:
    return _render("login.html", view=view)


def render_consent(view: ConsentView) -> str:
    if view.client_source == "cimd":
        note = f"Metadata published by {view.client_domain or view.client_id}."
    else:
        note = _SOURCE_NOTES[view.client_source]
    return _render("consent.html", view=view, source_note=note)


def render_message(view: MessageView) -> str:
    return _render("message.html", view=view)


def render_logout(view: LogoutView) -> str:
    return _render("logout.html", view=view)


def render_signed_out(view: SignedOutView) -> str:
    return _render("signed_out.html", view=view)
