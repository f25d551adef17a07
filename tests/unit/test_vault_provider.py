"""The downstream provider client against a hostile provider (issue #7): a real HTTP server on
loopback answering what a real provider should not (or what only some do: GitHub's errors with
HTTP 200, Slack's ``ok: false``, HubSpot's ``status``). Only a refresh error that means the grant
is gone is ``ProviderRefused``; everything else keeps the stored tokens (``ProviderUnavailable``).
Nothing a provider sends back, and no token or secret, reaches the log. The happy path against a
real provider (oidc-provider) is in tests/flows/test_connection_vault.py."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import jwt
import pytest
from aiohttp import web

from bastion.config.connections import OAuthConnection
from bastion.vault.model import ProviderRefused, ProviderUnavailable
from bastion.vault.presets import ResolvedConnection, resolve
from bastion.vault.provider import RETRY_AFTER_S, Providers

SECRET = "s:e/cret"  # the ":" and "/" test the RFC 6749 §2.3.1 encoding
GOOD = {
    "access_token": "at-1",
    "token_type": "Bearer",
    "expires_in": 3600,
    "refresh_token": "rt-2",
    "scope": "a b",
}
NOW = 1000.0
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Hostile:
    """A provider whose every endpoint answers what the test sets; it records what it got."""

    base: str = ""
    answers: dict[str, Handler] = field(default_factory=dict)
    seen: list[dict[str, Any]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.seen.append(
            {"method": request.method, "path": request.path, "headers": dict(request.headers), "body": body}
        )
        answer = self.answers.get(request.path)
        if answer is None:
            return web.Response(status=404)
        return await answer(request)

    def on(self, path: str, handler: Handler) -> None:
        self.answers[path] = handler

    def json(self, path: str, body: Any, status: int = 200) -> None:
        async def answer(_: web.Request) -> web.StreamResponse:
            return web.json_response(body, status=status)

        self.on(path, answer)

    def raw(self, path: str, body: bytes, status: int = 200, content_type: str = "application/json") -> None:
        async def answer(_: web.Request) -> web.StreamResponse:
            return web.Response(body=body, status=status, content_type=content_type)

        self.on(path, answer)

    def form(self, index: int = -1) -> dict[str, str]:
        from urllib.parse import parse_qsl

        return dict(parse_qsl(self.seen[index]["body"].decode()))


@pytest.fixture
async def hostile() -> AsyncIterator[Hostile]:
    server = Hostile()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", server.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    server.base = f"http://{host}:{port}"
    try:
        yield server
    finally:
        await runner.cleanup()


def connection(hostile: Hostile, **kw: Any) -> ResolvedConnection:
    base = hostile.base
    config = {
        "name": "crm",
        "type": "oauth",
        "label": "CRM",
        "client_id": "c li",
        "client_secret": SECRET,
        "authorization_endpoint": f"{base}/authorize",
        "token_endpoint": f"{base}/token",
        "revocation_endpoint": f"{base}/revoke",
        "userinfo_endpoint": f"{base}/userinfo",
        "account_claim": "login",
        "timeout": 1.0,
        **kw,
    }
    return resolve(OAuthConnection.model_validate({k: v for k, v in config.items() if v is not None}))


@pytest.fixture
async def providers(hostile: Hostile) -> AsyncIterator[Providers]:
    opened = Providers([connection(hostile)], clock=lambda: NOW)
    try:
        yield opened
    finally:
        await opened.aclose()


async def test_a_good_refresh_and_how_bastion_authenticates(hostile: Hostile, providers: Providers) -> None:
    hostile.json("/token", GOOD)
    tokens = await providers.refresh("crm", "rt-1")
    assert (tokens.access_token, tokens.refresh_token) == ("at-1", "rt-2")
    assert tokens.expires_at == NOW + 3600
    assert tokens.scopes == ("a", "b")
    assert tokens.account is None
    seen = hostile.seen[-1]
    pair = base64.b64decode(seen["headers"]["Authorization"].removeprefix("Basic ")).decode()
    assert pair == "c+li:s%3Ae%2Fcret"  # RFC 6749 §2.3.1: form-urlencoded, then joined
    assert hostile.form() == {"grant_type": "refresh_token", "refresh_token": "rt-1"}
    assert seen["headers"]["Accept"] == "application/json"


async def test_client_secret_post_and_public_clients(hostile: Hostile) -> None:
    hostile.json("/token", {"access_token": "at", "token_type": "bearer"})
    post = Providers([connection(hostile, token_endpoint_auth_method="client_secret_post")])
    public = Providers(
        [connection(hostile, name="pub", client_secret=None, token_endpoint_auth_method="none")]
    )
    try:
        assert (await post.refresh("crm", "rt")).refresh_token is None  # not rotated: keep the old one
        assert hostile.form()["client_secret"] == SECRET
        assert "Authorization" not in hostile.seen[-1]["headers"]
        await public.refresh("pub", "rt")
        assert hostile.form()["client_id"] == "c li"
        assert "client_secret" not in hostile.form()
    finally:
        await post.aclose()
        await public.aclose()


async def slow(_: web.Request) -> web.StreamResponse:
    await asyncio.sleep(3)
    return web.json_response(GOOD)


async def huge(_: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"content-type": "application/json"})
    await response.prepare(_)
    for _i in range(100):
        await response.write(b" " * 1024)
    return response


async def redirect(_: web.Request) -> web.StreamResponse:
    raise web.HTTPFound("/elsewhere")


UNAVAILABLE: list[tuple[str, Any]] = [
    ("503 text", (b"down for maintenance", 503, "text/plain")),
    ("500 json", ({"error": "server_error"}, 500)),
    ("429", ({"error": "slow_down"}, 429)),
    ("malformed json", (b'{"access_token": "at",', 200, "application/json")),
    ("json array", (b'["at"]', 200, "application/json")),
    ("html 200", (b"<html>sign in</html>", 200, "text/html")),
    ("declared huge", (b"{" + b" " * (65 * 1024) + b"}", 200, "application/json")),
    ("streamed huge", huge),
    ("slow", slow),
    ("redirect", redirect),
    ("token_type mac", ({**GOOD, "token_type": "mac"}, 200)),
    ("token_type dpop", ({**GOOD, "token_type": "DPoP"}, 200)),
    ("token_type number", ({**GOOD, "token_type": 1}, 200)),
    ("no access token", ({"token_type": "bearer"}, 200)),
    ("access token with space", ({**GOOD, "access_token": "a b"}, 200)),
    ("access token not ascii", ({**GOOD, "access_token": "at-ü"}, 200)),
    ("access token too long", ({**GOOD, "access_token": "a" * 20000}, 200)),
    ("refresh token not ascii", ({**GOOD, "refresh_token": "rt\n"}, 200)),
    ("refresh token a number", ({**GOOD, "refresh_token": 7}, 200)),
    ("expires_in negative", ({**GOOD, "expires_in": -5}, 200)),
    ("expires_in zero", ({**GOOD, "expires_in": 0}, 200)),
    ("expires_in text", ({**GOOD, "expires_in": "soon"}, 200)),
    ("expires_in bool", ({**GOOD, "expires_in": True}, 200)),
    ("expires_in centuries", ({**GOOD, "expires_in": 10**12}, 200)),
    ("scope a list", ({**GOOD, "scope": ["a"]}, 200)),
    ("invalid_client", ({"error": "invalid_client"}, 401)),
    ("invalid_request", ({"error": "invalid_request"}, 400)),
    ("unauthorized_client", ({"error": "unauthorized_client"}, 400)),
    ("400 without error", ({"message": "nope"}, 400)),
    ("200 with another error", ({"error": "temporarily_unavailable"}, 200)),
]


@pytest.mark.parametrize("answer", [a for _, a in UNAVAILABLE], ids=[n for n, _ in UNAVAILABLE])
async def test_refresh_failures_that_may_pass_keep_the_tokens(
    hostile: Hostile, providers: Providers, answer: Any, caplog: pytest.LogCaptureFixture
) -> None:
    if callable(answer):
        hostile.on("/token", answer)
    elif isinstance(answer[0], bytes):
        hostile.raw("/token", *answer)
    else:
        hostile.json("/token", *answer)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(ProviderUnavailable) as err:
        await providers.refresh("crm", "rt-secret-1")
    assert "CRM" in str(err.value)
    for secret in ("rt-secret-1", SECRET, "at-1", "rt-2", "sign in", "maintenance"):
        assert secret not in caplog.text
        assert secret not in str(err.value)


async def test_a_connection_refused_is_unavailable(hostile: Hostile) -> None:
    closed = Providers([connection(hostile, token_endpoint="http://127.0.0.1:9/token")])
    try:
        with pytest.raises(ProviderUnavailable, match="could not be reached"):
            await closed.refresh("crm", "rt")
        with pytest.raises(ProviderUnavailable, match="not a configured OAuth connection"):
            await closed.refresh("other", "rt")
    finally:
        await closed.aclose()


DEAD: list[tuple[str, dict[str, Any], int, dict[str, Any]]] = [
    ("invalid_grant", {"error": "invalid_grant", "error_description": f"bad {SECRET}"}, 400, {}),
    ("github", {"error": "bad_refresh_token"}, 200, {"preset": "github"}),
    ("slack", {"ok": False, "error": "invalid_refresh_token"}, 200, {"preset": "slack", "scopes": ["x"]}),
    ("hubspot", {"status": "BAD_REFRESH_TOKEN", "message": "x"}, 400, {"preset": "hubspot"}),
]


@pytest.mark.parametrize(("body", "status", "kw"), [d[1:] for d in DEAD], ids=[d[0] for d in DEAD])
async def test_a_dead_grant_is_refused(
    hostile: Hostile, body: dict[str, Any], status: int, kw: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    hostile.json("/token", body, status)
    dead = Providers([connection(hostile, **kw)])
    caplog.set_level(logging.DEBUG)
    try:
        with pytest.raises(ProviderRefused, match="connect again"):
            await dead.refresh("crm", "rt-secret-1")
    finally:
        await dead.aclose()
    assert "rt-secret-1" not in caplog.text
    assert SECRET not in caplog.text
    if kw.get("preset") == "github":  # the same code at another provider is no proof of a dead grant
        hostile.json("/token", body, status)
        other = Providers([connection(hostile)])
        with pytest.raises(ProviderUnavailable):
            await other.refresh("crm", "rt")
        await other.aclose()


async def test_redeem_any_oauth_error_is_a_refusal(hostile: Hostile, providers: Providers) -> None:
    client = providers.get("crm")
    assert client is not None
    hostile.json("/token", {"error": "bad_verification_code"}, 200)  # GitHub
    with pytest.raises(ProviderRefused, match=r"did not accept the authorization \(bad_verification_code\)"):
        await client.redeem("code", "verifier", "https://b.example/connect/callback")
    assert hostile.form() == {
        "grant_type": "authorization_code",
        "code": "code",
        "redirect_uri": "https://b.example/connect/callback",
        "code_verifier": "verifier",
    }
    hostile.raw("/token", b"oops", 502, "text/plain")
    with pytest.raises(ProviderUnavailable):
        await client.redeem("code", None, "https://b.example/connect/callback")
    assert "code_verifier" not in hostile.form()


async def test_account_from_userinfo_else_from_the_id_token(hostile: Hostile, providers: Providers) -> None:
    id_token = jwt.encode({"login": "from-id-token", "sub": "1"}, "k" * 32, algorithm="HS256")
    hostile.json("/token", {**GOOD, "id_token": id_token})
    hostile.json("/userinfo", {"login": "octo\x07cat", "id": 1})
    client = providers.get("crm")
    assert client is not None
    tokens = await client.redeem("code", "v", "https://b.example/cb")
    assert tokens.account == "octocat"
    assert hostile.seen[-1]["headers"]["Authorization"] == "Bearer at-1"
    hostile.json("/userinfo", {"error": "invalid_token"}, 401)
    assert (await client.redeem("code", "v", "https://b.example/cb")).account == "from-id-token"
    hostile.json("/token", GOOD)
    assert (await client.redeem("code", "v", "https://b.example/cb")).account is None


async def test_slack_user_tokens_are_nested(hostile: Hostile) -> None:
    slack = Providers([connection(hostile, preset="slack", scopes=["search:read"])])
    body = {
        "ok": True,
        "access_token": "xoxb-bot",
        "token_type": "bot",
        "authed_user": {
            "id": "U1",
            "scope": "search:read,users:read",
            "access_token": "xoxp-user",
            "token_type": "user",
            "refresh_token": "xoxe-1",
            "expires_in": 43200,
        },
    }
    hostile.json("/token", body)
    try:
        tokens = await slack.refresh("crm", "xoxe-0")
    finally:
        await slack.aclose()
    assert (tokens.access_token, tokens.refresh_token) == ("xoxp-user", "xoxe-1")
    assert tokens.scopes == ("search:read", "users:read")


async def test_discovery_checks_the_issuer_and_is_not_repeated_at_once(hostile: Hostile) -> None:
    issuer = f"{hostile.base}/tenant"
    hostile.json(
        "/tenant/.well-known/openid-configuration", {"issuer": "https://evil.example", "token_endpoint": "x"}
    )
    hostile.json(
        "/.well-known/oauth-authorization-server/tenant",
        {
            "issuer": issuer,
            "authorization_endpoint": f"{hostile.base}/authorize",
            "token_endpoint": f"{hostile.base}/token",
            "revocation_endpoint": "http://evil.example/revoke",  # not https, not loopback: ignored
        },
    )
    found = Providers(
        [
            connection(
                hostile,
                authorization_endpoint=None,
                token_endpoint=None,
                revocation_endpoint=None,
                issuer=issuer,
            )
        ]
    )
    client = found.get("crm")
    assert client is not None
    assert await found.discover() == {}
    assert client.endpoints.token_endpoint == f"{hostile.base}/token"
    assert client.endpoints.revocation_endpoint is None
    assert client.endpoints.userinfo_endpoint == f"{hostile.base}/userinfo"  # configured wins
    assert client.authorization_url("s", "c", "https://b.example/cb").startswith(f"{hostile.base}/authorize?")
    await found.aclose()

    now = [0.0]
    broken = Providers(
        [
            connection(
                hostile, authorization_endpoint=None, token_endpoint=None, issuer=f"{hostile.base}/none"
            )
        ],
        clock=lambda: now[0],
    )
    assert "configuration could not be read" in (await broken.discover())["crm"]
    asked = len(hostile.seen)
    with pytest.raises(ProviderUnavailable):
        await broken.refresh("crm", "rt")
    assert len(hostile.seen) == asked  # within RETRY_AFTER_S: no new request
    now[0] += RETRY_AFTER_S + 1
    with pytest.raises(ProviderUnavailable):
        await broken.refresh("crm", "rt")
    assert len(hostile.seen) > asked
    await broken.aclose()


async def test_revocation_is_best_effort(hostile: Hostile, providers: Providers) -> None:
    client = providers.get("crm")
    assert client is not None
    hostile.raw("/revoke", b"", 200, "text/plain")
    assert await client.revoke("rt-1", "refresh_token") is True
    assert hostile.form() == {"token": "rt-1", "token_type_hint": "refresh_token"}
    assert hostile.seen[-1]["headers"]["Authorization"].startswith("Basic ")
    hostile.json("/revoke", {"ok": False, "error": "invalid_auth"})  # Slack's auth.revoke
    assert await client.revoke("rt-1", "refresh_token") is False
    hostile.raw("/revoke", b"down", 503, "text/plain")
    assert await client.revoke("rt-1", "refresh_token") is False
    none = Providers([connection(hostile, revocation_endpoint=None)])
    assert await none.revoke("crm", "rt", "refresh_token") is False
    await none.aclose()


async def test_github_revokes_the_grant_with_an_access_token(hostile: Hostile) -> None:
    resolved = connection(hostile, preset="github")
    assert resolved.oauth is not None
    oauth = dataclasses.replace(
        resolved.oauth,
        revocation_endpoint=f"{hostile.base}/applications/cid/token",
        revocation_style="github",
    )
    github = Providers([dataclasses.replace(resolved, oauth=oauth)])
    hostile.raw("/applications/cid/grant", b"", 204, "text/plain")
    try:
        asked = len(hostile.seen)
        assert await github.revoke("crm", "rt-1", "refresh_token") is False
        assert len(hostile.seen) == asked  # GitHub revokes by access token only: not even asked
        assert await github.revoke("crm", "gho_at", "access_token") is True
    finally:
        await github.aclose()
    seen = hostile.seen[-1]
    assert seen["method"] == "DELETE"
    assert json.loads(seen["body"]) == {"access_token": "gho_at"}
    assert base64.b64decode(seen["headers"]["Authorization"][6:]).decode() == f"c li:{SECRET}"
