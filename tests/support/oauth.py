"""Drive Bastion's authorization server the way a user and a client would, with plain HTTP:
PKCE, the authorize URL, the sign-in and consent forms (parsed from the real pages), and the
token request. Used by flow tests; the real-client interop tests use the SDKs instead."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import re
import secrets
import sqlite3
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from html import unescape
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

import httpx2

from bastion.core.records import ConsentRecord, UserRecord
from bastion.idp.passwords import hash_password
from bastion.idp.users import normalize_username
from bastion.oauth.keys import KeyRing, SigningKey, master_key_from_text
from bastion.store import Store, open_store
from tests.support.gateway import Gateway

REDIRECT_URI = "http://127.0.0.1:53682/callback"
_INPUT = re.compile(r"<input[^>]*>", re.I)
_ATTR = re.compile(r'(\w+)="([^"]*)"')


@dataclass(frozen=True)
class Pkce:
    verifier: str
    challenge: str


def pkce() -> Pkce:
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return Pkce(verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode())


def hidden_fields(html: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for tag in _INPUT.findall(html):
        attrs = {k.lower(): unescape(v) for k, v in _ATTR.findall(tag)}
        if attrs.get("type") == "hidden" and "name" in attrs:
            fields[attrs["name"]] = attrs.get("value", "")
    return fields


def authorize_url(
    base: str,
    *,
    client_id: str,
    resource: str,
    challenge: str,
    redirect_uri: str = REDIRECT_URI,
    state: str | None = "st-1",
    scope: str | None = None,
    **extra: str,
) -> str:
    params = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": redirect_uri,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "resource": resource,
        **extra,
    }
    if state is not None:
        params["state"] = state
    if scope is not None:
        params["scope"] = scope
    return f"{base}/authorize?{urlencode(params)}"


def query_of(location: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


async def sign_in_and_consent(
    http: httpx2.AsyncClient,
    url: str,
    *,
    username: str,
    password: str,
    decision: str = "allow",
) -> httpx2.Response:
    """Follow Bastion's pages from ``url`` until a redirect leaves Bastion (returned unfetched)
    or a page that is neither the sign-in nor the consent form comes back (returned)."""
    origin = "{0.scheme}://{0.netloc}".format(urlsplit(url))
    response = await http.get(url)
    for _ in range(10):
        if response.status_code in (302, 303):
            target = urljoin(str(response.url), response.headers["location"])
            if not target.startswith(origin):
                return response
            response = await http.get(target)
            continue
        body = response.text
        fields = hidden_fields(body)
        if 'name="password"' in body:
            fields |= {"username": username, "password": password}
            response = await http.post(f"{origin}/login", data=fields)
        elif 'name="decision"' in body:
            response = await http.post(f"{origin}/consent", data={**fields, "decision": decision})
        else:
            return response
    raise AssertionError("the sign-in flow did not end")


async def exchange_code(
    http: httpx2.AsyncClient,
    base: str,
    *,
    code: str,
    verifier: str,
    client_id: str,
    resource: str | None,
    redirect_uri: str = REDIRECT_URI,
    auth: tuple[str, str] | None = None,
) -> httpx2.Response:
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "code_verifier": verifier,
        "redirect_uri": redirect_uri,
    }
    if resource is not None:
        form["resource"] = resource
    if auth is None:
        form["client_id"] = client_id
    return await http.post(f"{base}/token", data=form, auth=auth)


async def user_token(
    base: str, *, client_id: str, resource: str, username: str, password: str, scope: str | None = None
) -> dict[str, object]:
    """A complete authorization-code flow for a public client; the token response."""
    proof = pkce()
    async with httpx2.AsyncClient(follow_redirects=False, timeout=30) as http:
        url = authorize_url(
            base, client_id=client_id, resource=resource, challenge=proof.challenge, scope=scope
        )
        final = await sign_in_and_consent(http, url, username=username, password=password)
        code = query_of(final.headers["location"])["code"]
        response = await exchange_code(
            http, base, code=code, verifier=proof.verifier, client_id=client_id, resource=resource
        )
        assert response.status_code == 200, response.text
        body: dict[str, object] = response.json()
        return body


# -- additions for the OAuth flow tests (tests/flows/test_oauth_*.py) --------------------------

MCP_ACCEPT = "application/json, text/event-stream"
_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')


def challenge_params(header: str) -> dict[str, str]:
    """The quoted parameters of a ``WWW-Authenticate: Bearer ...`` value."""
    assert header.startswith("Bearer "), header
    return dict(_CHALLENGE_PARAM.findall(header))


async def post_initialize(
    http: httpx2.AsyncClient, url: str, token: str | None, *, headers: dict[str, str] | None = None
) -> httpx2.Response:
    """A legacy ``initialize`` at ``url`` with ``token`` as the Bearer credential (if any)."""
    sent = {"accept": MCP_ACCEPT, **(headers or {})}
    if token is not None:
        sent["authorization"] = f"Bearer {token}"
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "oauth-flow-test", "version": "1"},
        },
    }
    return await http.post(url, json=body, headers=sent)


MODERN_META = {
    "io.modelcontextprotocol/protocolVersion": "2026-07-28",
    "io.modelcontextprotocol/clientCapabilities": {},
}


async def list_tools(
    http: httpx2.AsyncClient, url: str, token: str | None, *, headers: dict[str, str] | None = None
) -> httpx2.Response:
    """A 2026-07-28 ``tools/list`` at ``url`` (no session: cheap on stdio upstreams too)."""
    sent = {"accept": MCP_ACCEPT, "mcp-protocol-version": "2026-07-28", "mcp-method": "tools/list"}
    if token is not None:
        sent["authorization"] = f"Bearer {token}"
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"_meta": MODERN_META}}
    return await http.post(url, json=body, headers={**sent, **(headers or {})})


async def authorization_code(
    http: httpx2.AsyncClient,
    base: str,
    *,
    client_id: str,
    resource: str,
    username: str,
    password: str,
    redirect_uri: str = REDIRECT_URI,
    **extra: str,
) -> tuple[str, Pkce]:
    """Sign in and consent in ``http``'s cookie jar; the code the redirect carries and its PKCE."""
    proof = pkce()
    url = authorize_url(
        base,
        client_id=client_id,
        resource=resource,
        challenge=proof.challenge,
        redirect_uri=redirect_uri,
        **extra,
    )
    final = await sign_in_and_consent(http, url, username=username, password=password)
    assert final.status_code in (302, 303), final.text[:500]
    query = query_of(final.headers["location"])
    assert "code" in query, final.headers["location"]
    return query["code"], proof


async def pending_request(http: httpx2.AsyncClient, url: str) -> str:
    """GET an /authorize ``url`` in a browser that is not signed in: the handle of the request
    now waiting for sign-in (from the redirect to the sign-in page)."""
    response = await http.get(url)
    assert response.status_code == 303, response.text[:300]
    location = response.headers["location"]
    assert location.startswith("/login?request="), location
    return query_of(location)["request"]


async def submit_login(
    http: httpx2.AsyncClient, base: str, handle: str, username: str, password: str
) -> httpx2.Response:
    """Fill in and post the sign-in form for the pending request ``handle``; the answer."""
    form = await http.get(f"{base}/login?request={handle}")
    fields = hidden_fields(form.text) | {"username": username, "password": password}
    return await http.post(f"{base}/login", data=fields)


def assert_page_headers(response: httpx2.Response) -> None:
    """Every Bastion page: not frameable, not cached."""
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["cache-control"] == "no-store"


def _db_url(gateway: Gateway) -> str:
    return f"sqlite:///{gateway.state_dir / 'bastion.db'}"


@contextlib.asynccontextmanager
async def gateway_store(gateway: Gateway) -> AsyncIterator[Store]:
    """The running gateway's own SQLite store, opened next to it (no schema change)."""
    store = await open_store(_db_url(gateway), migrate=False)
    try:
        yield store
    finally:
        await store.close()


async def add_users(
    gateway: Gateway,
    users: dict[str, str],
    *,
    groups: dict[str, list[str]] | None = None,
    attributes: dict[str, dict[str, object]] | None = None,
) -> dict[str, str]:
    """Create built-in users in a running gateway's store, as ``bastion users add`` (with
    ``--group``) does but without a process per user and with one Argon2 hash per distinct
    password; returns username → user id."""
    hashes = {pw: await asyncio.to_thread(hash_password, pw) for pw in set(users.values())}
    ids: dict[str, str] = {}
    async with gateway_store(gateway) as store:
        for name, password in users.items():
            username = normalize_username(name)
            record = UserRecord(
                user_id="u_" + secrets.token_urlsafe(12),
                username=username,
                password_hash=hashes[password],
                display_name=username,
                groups=frozenset((groups or {}).get(name, ())),
                attributes=dict((attributes or {}).get(name, {})),
                created_at=time.time(),
            )
            await store.users.add(record)
            ids[name] = record.user_id
    return ids


async def consent_of(gateway: Gateway, user_id: str, client_id: str) -> ConsentRecord | None:
    async with gateway_store(gateway) as store:
        return await store.consents.get(user_id, client_id)


async def client_ids(gateway: Gateway, source: str | None = None) -> set[str]:
    async with gateway_store(gateway) as store:
        return {c.client_id for c in await store.clients.list(source)}


def stored_grants(gateway: Gateway, kind: str) -> int:
    """How many short-lived grants of ``kind`` the gateway holds (``authorize``: pending
    authorization requests, ``code``: unredeemed codes). The store API has no listing for
    them, so this reads the SQLite file directly (a read, never a write)."""
    with contextlib.closing(sqlite3.connect(gateway.state_dir / "bastion.db")) as db:
        (count,) = db.execute("SELECT count(*) FROM grants WHERE kind = ?", (kind,)).fetchone()
    return int(count)


async def signing_key(gateway: Gateway) -> SigningKey:
    """The gateway's active signing key, unsealed with its master key file (to mint tokens
    that are correctly signed but wrong in one claim)."""
    async with gateway_store(gateway) as store:
        blob = await store.signing_keys.load()
    assert blob is not None
    master = master_key_from_text((gateway.state_dir / "master.key").read_text(encoding="ascii"))
    return KeyRing.load(blob, master, clock=time.time).active


def demo_upstream(name: str, tmp: Path, **extra: object) -> dict[str, object]:
    """The bundled demo MCP server (stdio) as upstream ``name``."""
    notes = tmp / f"notes-{name}-{secrets.token_hex(4)}.json"
    command = {"command": sys.executable, "args": ["-m", "bastion.demo.server", "--notes-file", str(notes)]}
    return {"name": name, "stdio": command, **extra}


def browser(local_address: str | None = None) -> httpx2.AsyncClient:
    """A client with its own cookie jar that never follows redirects, optionally connecting from
    another loopback address (127.0.0.x), so per-address limits of one test do not touch others."""
    transport = httpx2.AsyncHTTPTransport(local_address=local_address) if local_address else None
    return httpx2.AsyncClient(follow_redirects=False, timeout=30, transport=transport)
