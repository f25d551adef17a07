"""Bastion in front of an Entra-like IdP (``tests/support/idp.py``): start both, and walk a
browser through Bastion's pages, the consent for the MCP client, the IdP's sign-in and back."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import secrets
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx2
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from mcp.client.auth import AuthorizationCodeResult
from starlette.types import Receive, Scope, Send

from bastion.core.crypto import derive_key, open_text
from bastion.core.records import UserRecord
from bastion.oauth.keys import master_key_from_text
from tests.support.gateway import BASTION, Gateway, run_gateway, venv_env
from tests.support.idp import IdpServer, idp_sign_in, require_idp_packages, run_idp, secret_client
from tests.support.oauth import gateway_store, hidden_fields
from tests.support.procs import REPO_ROOT, free_port
from tests.support.sdk_oauth import HeadlessUser
from tests.support.tls import serve_asgi

ALICE = {
    "sub": "alice-pairwise",
    "oid": "00000000-0000-0000-0000-0000000000a1",
    "email": "alice@contoso.com",
    "name": "Alice Contoso",
    "roles": ["Sales.Write"],
    "groups": ["g-sales"],
    "tid": "tenant-a",
}


@dataclass
class Federation:
    gateway: Gateway
    idp: IdpServer
    client_secret: str

    @property
    def callback(self) -> str:
        return f"{self.gateway.base}/login/idp/entra/callback"


@contextlib.contextmanager
def bastion_with_entra(
    tmp: Path,
    upstreams: list[dict[str, Any]],
    *,
    users: dict[str, dict[str, Any]] | None = None,
    provider: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    idp_extra: dict[str, Any] | None = None,
) -> Iterator[Federation]:
    port = free_port()
    callback = f"http://127.0.0.1:{port}/login/idp/entra/callback"
    client = secret_client("bastion-gateway", [callback])
    with run_idp(tmp, clients=[client], users=users or {"alice": ALICE}, extra=idp_extra) as idp:
        entra = {
            "name": "entra",
            "preset": "entra",
            "issuer": idp.issuer,
            "client_id": client["client_id"],
            "client_secret": client["client_secret"],
            "grants": [{"role": "Sales.Write", "groups": ["sales"]}],
            **(provider or {}),
        }
        config = {"auth": {"enabled": True}, "identity_providers": [entra], **(extra or {})}
        if "auth" in (extra or {}):
            config["auth"] = {"enabled": True, **extra["auth"]}  # type: ignore[index]
        with run_gateway(tmp, upstreams, extra=config, port=port) as gateway:
            yield Federation(gateway, idp, client["client_secret"])


async def through_bastion_to_idp(
    http: httpx2.AsyncClient, authorize_url: str, *, provider: str = "entra", decision: str = "allow"
) -> httpx2.Response:
    """From the MCP client's authorize URL to the first response that leaves Bastion (the IdP
    redirect, or the redirect back to the MCP client); pressing ``decision`` on the consent page."""
    origin = "{0.scheme}://{0.netloc}".format(urlsplit(authorize_url))
    response = await http.get(authorize_url)
    for _ in range(10):
        if response.status_code in (302, 303):
            target = urljoin(str(response.url), response.headers["location"])
            if not target.startswith(origin):
                return response
            response = await http.get(target)
            continue
        body = response.text
        if 'name="decision"' in body:
            form_action = body.split('<form method="post" action="', 1)[1].split('"', 1)[0]
            response = await http.post(
                urljoin(origin, form_action.replace("&amp;", "&")),
                data={**hidden_fields(body), "decision": decision},
            )
        elif f"/login/idp/{provider}?" in body:
            link = body.split(f'href="/login/idp/{provider}?', 1)[1].split('"', 1)[0].replace("&amp;", "&")
            response = await http.get(f"{origin}/login/idp/{provider}?{link}")
        else:
            return response
    raise AssertionError("Bastion's pages did not lead anywhere")


async def sign_in_via_idp(
    http: httpx2.AsyncClient,
    fed: Federation,
    authorize_url: str,
    *,
    login: str = "alice",
    cancel: bool = False,
) -> httpx2.Response:
    """The whole browser journey; returns Bastion's final redirect to the MCP client (unfetched)."""
    to_idp = await through_bastion_to_idp(http, authorize_url)
    assert to_idp.headers["location"].startswith(fed.idp.base), to_idp.text[:500]
    back = await idp_sign_in(
        http, to_idp.headers["location"], login=login, stop_prefix=fed.callback, cancel=cancel
    )
    return await http.get(back.headers["location"])


# ------------------------------------------------ real MCP clients through the IdP (interop)
# Used by tests/interop/test_federation_clients_*.py: an upstream that shows what reached it, the
# audit trail and the IdP refresh tokens Bastion keeps, and the Python SDK's "browser".

NOTES_TOOLS = [
    {
        "name": "add_note",
        "description": "Add a note.",
        "inputSchema": {
            "type": "object",
            "properties": {"title": {"type": "string"}, "body": {"type": "string"}},
            "required": ["title"],
        },
    },
    {"name": "list_notes", "description": "List the notes.", "inputSchema": {"type": "object"}},
]


@dataclass
class UpstreamRequest:
    method: str  # HTTP method
    headers: dict[str, str]  # lower-case names
    message: dict[str, Any] | None  # the JSON-RPC message of a POST


class NotesUpstream:
    """A legacy-era (2025-11-25) MCP server over HTTP in the test process with the demo's
    ``add_note`` / ``list_notes`` tools, keeping every request it receives (headers and JSON-RPC
    message): the proof of what reached the upstream, and of what did not."""

    def __init__(self) -> None:
        self.requests: list[UpstreamRequest] = []
        self.notes: list[dict[str, str]] = []
        self.url = ""

    def endpoint(self, name: str = "notes") -> dict[str, Any]:
        """The ``upstreams:`` entry for this server."""
        return {"name": name, "http": {"url": self.url}}

    @property
    def tool_calls(self) -> list[dict[str, Any]]:
        """The ``params`` of every ``tools/call`` received."""
        return [
            r.message.get("params", {})
            for r in self.requests
            if r.message is not None and r.message.get("method") == "tools/call"
        ]

    def header_values(self) -> list[tuple[str, str]]:
        return [item for r in self.requests for item in r.headers.items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        body = b""
        while True:
            event = await receive()
            body += event.get("body", b"")
            if not event.get("more_body"):
                break
        message = json.loads(body) if scope["method"] == "POST" and body else None
        self.requests.append(UpstreamRequest(scope["method"], headers, message))
        if not isinstance(message, dict):
            await self._send(send, 405 if message is None else 400, b"")
            return
        if "id" not in message:
            await self._send(send, 202, b"")
            return
        method, reply = message.get("method"), {"jsonrpc": "2.0", "id": message["id"]}
        params = message.get("params") or {}
        if method == "initialize":
            reply["result"] = {
                "protocolVersion": "2025-11-25",
                "capabilities": {"tools": {}},
                "serverInfo": {"name": "notes-recorder", "version": "1"},
            }
        elif method == "server/discover":
            reply["error"] = {"code": -32022, "message": "Unsupported protocol version"}
            reply["error"]["data"] = {"supported": ["2025-11-25"], "requested": "2026-07-28"}
        elif method == "ping":
            reply["result"] = {}
        elif method == "tools/list":
            reply["result"] = {"tools": NOTES_TOOLS}
        elif method == "tools/call" and params.get("name") == "add_note":
            args = params.get("arguments") or {}
            self.notes.append({"title": str(args.get("title", "")), "body": str(args.get("body", ""))})
            reply["result"] = {"content": [{"type": "text", "text": f"added {args.get('title')}"}]}
        elif method == "tools/call" and params.get("name") == "list_notes":
            text = "\n".join(f"{n['title']}: {n['body']}" for n in self.notes) or "no notes"
            reply["result"] = {"content": [{"type": "text", "text": text}]}
        elif method == "tools/call":
            reply["result"] = {"content": [{"type": "text", "text": "unknown tool"}], "isError": True}
        else:
            reply["error"] = {"code": -32601, "message": "Method not found"}
        session = [(b"mcp-session-id", secrets.token_urlsafe(16).encode())] if method == "initialize" else []
        await self._send(send, 400 if "error" in reply else 200, json.dumps(reply).encode(), session)

    @staticmethod
    async def _send(
        send: Send, status: int, body: bytes, extra: list[tuple[bytes, bytes]] | None = None
    ) -> None:
        headers = [(b"content-type", b"application/json")] if body else []
        headers += extra or []
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


@dataclass
class FederatedNotes:
    """Bastion in front of the Entra-like IdP, with a :class:`NotesUpstream` at ``/mcp/notes``."""

    fed: Federation
    upstream: NotesUpstream

    @property
    def url(self) -> str:
        return self.fed.gateway.url("notes")


@contextlib.contextmanager
def federated_notes(tmp: Path, **options: Any) -> Iterator[FederatedNotes]:
    """:func:`bastion_with_entra` (``options`` passed on) with a :class:`NotesUpstream`."""
    require_idp_packages()
    with notes_upstream() as upstream, bastion_with_entra(tmp, [upstream.endpoint()], **options) as fed:
        yield FederatedNotes(fed, upstream)


@contextlib.contextmanager
def notes_upstream() -> Iterator[NotesUpstream]:
    """A running :class:`NotesUpstream`; its MCP endpoint is ``.url``."""
    upstream = NotesUpstream()
    with serve_asgi(upstream) as port:
        upstream.url = f"http://127.0.0.1:{port}/mcp"
        yield upstream


def assert_no_credentials(upstream: NotesUpstream, *secret_values: str | None) -> None:
    """Nothing that authenticates anyone reached the upstream: no Authorization or Cookie
    header, no header carrying any of ``secret_values`` (tokens the test knows of), and no
    JWT-shaped value at all (Bastion's access tokens and the IdP's ID tokens are JWTs)."""
    assert upstream.requests, "the upstream saw nothing"
    known = [s for s in secret_values if s]
    for name, value in upstream.header_values():
        assert name not in ("authorization", "cookie", "proxy-authorization"), (name, value[:40])
        assert "eyJ" not in value, f"a JWT-shaped value in upstream header {name}"
        for secret in known:
            assert secret not in value, f"a token in upstream header {name}"
    for request in upstream.requests:
        text = json.dumps(request.message or {})
        for secret in known:
            assert secret not in text, "a token in a message to the upstream"


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


# -- additions for the bad-input, session and home-realm tests (tests/flows/test_federation_*.py) --


def idp_provider(
    name: str, idp: IdpServer, client: Mapping[str, Any], *, key_dir: Path | None = None, **overrides: Any
) -> dict[str, Any]:
    """An ``identity_providers`` entry (preset entra) for ``client`` at ``idp``: its secret, or for
    a private_key_jwt client (``private_key_jwt_client``) its private key written to
    ``key_dir/<name>.pem`` with a self-signed certificate for it in ``key_dir/<name>.crt`` (Entra
    certificate credentials: the assertion names the certificate by thumbprint)."""
    entry: dict[str, Any] = {
        "name": name,
        "preset": "entra",
        "issuer": idp.issuer,
        "client_id": client["client_id"],
        "token_endpoint_auth_method": client.get("token_endpoint_auth_method", "client_secret_basic"),
    }
    if "private_key_pem" in client:
        assert key_dir is not None, "a private_key_jwt client needs key_dir"
        key_file = key_dir / f"{name}.pem"
        key_file.write_text(client["private_key_pem"])
        key_file.chmod(0o600)
        cert_file = key_dir / f"{name}.crt"
        cert_file.write_bytes(_self_signed_pem(client["private_key_pem"], str(client["client_id"])))
        entry["private_key_file"] = str(key_file)
        entry["certificate_file"] = str(cert_file)
    else:
        entry["client_secret"] = client["client_secret"]
    return {**entry, **overrides}


def _self_signed_pem(private_key_pem: str, common_name: str) -> bytes:
    key = serialization.load_pem_private_key(private_key_pem.encode(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def callback_url(gateway_base: str, provider: str) -> str:
    """Bastion's redirect URI at the IdP for ``provider``."""
    return f"{gateway_base}/login/idp/{provider}/callback"


async def idp_callback(
    http: httpx2.AsyncClient, idp_location: str, *, callback: str, login: str = "alice", cancel: bool = False
) -> str:
    """Sign in (or cancel) at the IdP from Bastion's redirect ``idp_location``; the absolute URL of
    the IdP's redirect back to Bastion's ``callback``, not yet fetched."""
    back = await idp_sign_in(http, idp_location, login=login, stop_prefix=callback, cancel=cancel)
    return urljoin(str(back.url), back.headers["location"])


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


async def register_public_client(
    http: httpx2.AsyncClient, gateway_base: str, redirect_uri: str, name: str = "Federated MCP client"
) -> str:
    """Register a public native client with Bastion (RFC 7591, as MCP clients do); its id."""
    response = await http.post(
        f"{gateway_base}/register",
        json={
            "redirect_uris": [redirect_uri],
            "application_type": "native",
            "token_endpoint_auth_method": "none",
            "grant_types": ["authorization_code", "refresh_token"],
            "client_name": name,
        },
    )
    assert response.status_code == 201, response.text
    return str(response.json()["client_id"])


async def federated_user(gateway: Gateway, username: str) -> UserRecord | None:
    """The user ``username`` (``<idp>:<email>``) in the running gateway's store, if there is one."""
    async with gateway_store(gateway) as store:
        return await store.users.get_by_username(username)
