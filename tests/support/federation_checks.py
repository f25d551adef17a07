"""What a federated sign-in left behind, and what the user saw: the audit trail (``bastion audit
tail`` and ``audit.jsonl_path``), the IdP refresh tokens Bastion keeps, Bastion's message pages,
whether the browser is signed in; and the browser of the real MCP clients
(``tests/interop/test_federation_clients_*.py``), which allows every consent on the way."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import subprocess
import time
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx2
from mcp.client.auth import AuthorizationCodeResult

from bastion.core.crypto import derive_key, open_text
from bastion.oauth.keys import master_key_from_text
from tests.support.federation import Federation, through_bastion_to_idp
from tests.support.gateway import BASTION, Gateway, venv_env
from tests.support.idp import idp_sign_in
from tests.support.oauth import gateway_store
from tests.support.procs import REPO_ROOT
from tests.support.sdk_oauth import HeadlessUser


def audit_records(gateway: Gateway, lines: int = 500) -> list[dict[str, Any]]:
    """The newest audit records, as ``bastion audit tail --json`` prints them."""
    done = subprocess.run(
        [*BASTION, "audit", "tail", "--json", "-n", str(lines), "-c", str(gateway.config_path)],
        capture_output=True,
        text=True,
        check=True,
        env=venv_env(),
        cwd=REPO_ROOT,
        timeout=60,
    )
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def idp_refresh_tokens(gateway: Gateway) -> list[str]:
    """The IdP refresh tokens Bastion holds (IdP sessions), unsealed with the gateway's master
    key: read straight from its SQLite file, never written."""
    master = master_key_from_text((gateway.state_dir / "master.key").read_text(encoding="ascii"))
    key = derive_key(master, "idp-session")
    with contextlib.closing(sqlite3.connect(gateway.state_dir / "bastion.db")) as db:
        rows = db.execute(
            "SELECT session_id, sealed_refresh_token FROM idp_sessions WHERE sealed_refresh_token IS NOT NULL"
        ).fetchall()
    opened = [open_text(key, sealed, session_id) for session_id, sealed in rows]
    return [token for token in opened if token]


async def sign_in_via_idp_to_client(
    http: httpx2.AsyncClient, fed: Federation, authorize_url: str, *, login: str = "alice"
) -> httpx2.Response:
    """The whole browser journey from an MCP client's authorize URL, allowing every consent
    Bastion asks for (before the IdP, and again after it if Bastion asks then); returns Bastion's
    redirect to the MCP client's redirect URI (unfetched)."""
    to_idp = await through_bastion_to_idp(http, authorize_url)
    location = to_idp.headers.get("location", "")
    assert location.startswith(fed.idp.base), to_idp.text[:500]
    back = await idp_sign_in(http, location, login=login, stop_prefix=fed.callback)
    final = await through_bastion_to_idp(http, back.headers["location"])
    assert final.status_code in (302, 303), final.text[:500]
    return final


class BrowserPages:
    """httpx2 response hook keeping every HTML page a browser stand-in was shown (URL, HTML)."""

    def __init__(self) -> None:
        self.pages: list[tuple[str, str]] = []

    async def __call__(self, response: httpx2.Response) -> None:
        if response.headers.get("content-type", "").startswith("text/html"):
            await response.aread()
            self.pages.append((str(response.url), response.text))

    def browser(self) -> httpx2.AsyncClient:
        """A cookie-keeping client that never follows redirects, with this hook on."""
        hooks: dict[str, list[Callable[..., Any]]] = {"response": [self]}
        return httpx2.AsyncClient(follow_redirects=False, timeout=30, event_hooks=hooks)

    def consent_pages(self, origin: str) -> list[str]:
        """Bastion's consent pages (the ones with Allow / Deny) among those from ``origin``."""
        return [html for url, html in self.pages if url.startswith(origin) and 'name="decision"' in html]


async def assert_federated_call(
    fed: Federation, *, client_id: str, tool: str, email: str = "alice@contoso.com", provider: str = "entra"
) -> str:
    """The audit trail has the forwarded ``tools/call`` of ``tool`` by ``client_id`` for a user
    Bastion provisioned from the IdP (subject ``x_...``), and that user's sign-in through the IdP
    (``login.succeeded``, detail ``idp <provider> (<issuer>)``); the user record says where it
    came from. Returns the user id."""
    records = audit_records(fed.gateway)
    calls = [
        r
        for r in records
        if r["event"] == "call.forwarded"
        and r["client_id"] == client_id
        and r["method"] == "tools/call"
        and r["name"] == tool
    ]
    assert calls, f"no audited call of {tool} by {client_id}: {[r['event'] for r in records]}"
    subject = str(calls[-1]["subject"])
    assert subject.startswith("x_"), calls[-1]
    assert calls[-1]["status"] == 200, calls[-1]
    logins = [r for r in records if r["event"] == "login.succeeded" and r["subject"] == subject]
    assert logins, f"no login.succeeded for {subject}"
    assert logins[-1]["detail"] == f"idp {provider} ({fed.idp.issuer})", logins[-1]
    async with gateway_store(fed.gateway) as store:
        user = await store.users.get(subject)
    assert user is not None
    assert (user.source, user.email, user.username) == (provider, email, f"{provider}:{email}"), user
    return subject


class IdpBrowserUser(HeadlessUser):
    """The user in the browser the Python SDK would open, signing in through the IdP: Bastion's
    sign-in choice, its consent for the MCP client (Allow), the IdP's sign-in and consent, and
    back through Bastion's callback to the client's redirect URI (recorded, not fetched).
    ``pages`` keeps what Bastion and the IdP showed."""

    def __init__(self, fed: Federation, login: str = "alice") -> None:
        super().__init__(login, "")
        self.fed = fed
        self.pages = BrowserPages()
        self.authorize_urls: list[str] = []

    async def redirect_handler(self, url: str) -> None:
        self.authorize_urls.append(url)
        async with self.pages.browser() as http:
            final = await sign_in_via_idp_to_client(http, self.fed, url, login=self.username)
        location = final.headers["location"]
        self.redirects.append(location)
        query = {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
        self.sign_ins += 1
        self._result = AuthorizationCodeResult(
            code=query.get("code", ""), state=query.get("state"), iss=query.get("iss")
        )


class _MessagePage(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.heading = ""
        self.paragraphs: list[str] = []
        self._in: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "h1" or (tag == "p" and self._in is None and self.heading):
            self._in = tag
            if tag == "p":
                self.paragraphs.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == self._in:
            self._in = None

    def handle_data(self, data: str) -> None:
        if self._in == "h1":
            self.heading += data
        elif self._in == "p":
            self.paragraphs[-1] += data


def message_page(response: httpx2.Response) -> tuple[str, str]:
    """(heading, the first paragraph under it) of a Bastion message page, as the user reads them."""
    assert response.headers.get("content-type", "").startswith("text/html"), response.headers
    parsed = _MessagePage()
    parsed.feed(response.text)
    return parsed.heading.strip(), (parsed.paragraphs[0].strip() if parsed.paragraphs else "")


def jsonl_audit(path: Path) -> list[dict[str, Any]]:
    """The audit records written so far to the gateway's ``audit.jsonl_path``."""
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


async def wait_for_audit(
    path: Path, event: str, *, detail: str | None = None, count: int = 1, timeout: float = 5.0
) -> dict[str, Any]:
    """The ``count``-th audit record of ``event`` (with exactly ``detail``, if given) in
    ``audit.jsonl_path``, waiting for the gateway's batched writer; fails after ``timeout``
    seconds with the events seen."""
    deadline = time.monotonic() + timeout
    while True:
        records = jsonl_audit(path)
        matching = [
            r for r in records if r.get("event") == event and (detail is None or r.get("detail") == detail)
        ]
        if len(matching) >= count:
            return matching[count - 1]
        if time.monotonic() > deadline:
            seen = [(r.get("event"), r.get("detail")) for r in records[-20:]]
            raise AssertionError(f"no audit {event} {detail!r}; last records: {seen}")
        await asyncio.sleep(0.05)


async def assert_not_signed_in(http: httpx2.AsyncClient, gateway_base: str) -> None:
    """The browser (``http``'s cookie jar) has no signed-in Bastion session."""
    response = await http.get(f"{gateway_base}/logout")
    assert response.status_code == 200, response.text[:300]
    assert message_page(response)[0] == "Signed out", response.text[:500]
