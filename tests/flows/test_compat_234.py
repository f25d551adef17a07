"""The #234 compatibility mode (discussion #234, "multi-user authorization"): an agent that serves
many users supplies each user's downstream token in ``params._meta.authorization`` of
``tools/call``. Bastion still requires its own token, takes the supplied one out of the message,
and presents it to an upstream declared ``auth: {type: client_supplied}`` in the configured header;
the upstream here checks it like a real resource server would. Missing → -32001, refused by the
upstream → -32003, both with ``data: {tool, reason}``; tools/list carries the proposal's
``authorization`` annotation."""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

from tests.support.gateway import Gateway, run_gateway
from tests.support.oauth import MCP_ACCEPT, MODERN_META, post_initialize
from tests.support.recording import RecordingUpstream, UpstreamRequest, read_request, serve_upstream

SECRET = secrets.token_urlsafe(32)
USER_TOKENS = {"gh-token-alice": "alice", "gh-token-bob": "bob"}


class GitHubLike(RecordingUpstream):
    """Needs a user's token in X-GitHub-Token for tools/call (HTTP 401 otherwise), like an API
    gateway in front of a SaaS; answers with the user it saw."""

    name = "github-like"
    tools = [
        {"name": "whoami", "inputSchema": {"type": "object"}},
        {"name": "create_issue", "inputSchema": {}},
    ]

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        headers, body = await read_request(scope, receive)
        message = json.loads(body) if body else None
        if isinstance(message, dict) and message.get("method") == "tools/call":
            self.requests.append(UpstreamRequest(scope["method"], headers, message))
            user = USER_TOKENS.get(headers.get("x-github-token", "").removeprefix("token "))
            if user is None:
                await self._send(send, 401, b'{"message": "Bad credentials"}')
                return
            reply = {
                "jsonrpc": "2.0",
                "id": message["id"],
                "result": {"content": [{"type": "text", "text": user}]},
            }
            await self._send(send, 200, json.dumps(reply).encode())
            return

        async def replay() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        await super().__call__(scope, replay, send)


@pytest.fixture(scope="module")
def upstream() -> Iterator[GitHubLike]:
    server = GitHubLike()
    with serve_upstream(server):
        yield server


@pytest.fixture(scope="module")
def gw(flow_tmp: Path, upstream: GitHubLike) -> Iterator[Gateway]:
    extra = {
        "auth": {"enabled": True},
        "clients": [
            {
                "client_id": "sales-agent",
                "secret_sha256": hashlib.sha256(SECRET.encode()).hexdigest(),
                "grant_types": ["client_credentials"],
            }
        ],
    }
    upstreams = [
        {
            "name": "gh",
            "http": {"url": upstream.url},
            "annotate_tools": "both",
            "auth": {
                "type": "client_supplied",
                "header": "X-GitHub-Token",
                "template": "token {token}",
                "scopes": ["repo"],
                "tool_scopes": {"whoami": ["read:user"]},
            },
        }
    ]
    with run_gateway(flow_tmp, upstreams, extra=extra) as gateway:
        yield gateway


@pytest.fixture
async def token(gw: Gateway) -> str:
    async with httpx2.AsyncClient(timeout=30) as http:
        response = await http.post(
            f"{gw.base}/token",
            data={"grant_type": "client_credentials", "resource": gw.url("gh")},
            auth=("sales-agent", SECRET),
        )
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


@pytest.fixture
async def http() -> AsyncIterator[httpx2.AsyncClient]:
    async with httpx2.AsyncClient(timeout=30) as client:
        yield client


async def call(
    http: httpx2.AsyncClient, gw: Gateway, token: str | None, tool: str, authorization: object = None
) -> httpx2.Response:
    meta: dict[str, Any] = dict(MODERN_META)
    if authorization is not None:
        meta["authorization"] = authorization
    body = {
        "jsonrpc": "2.0",
        "id": 7,
        "method": "tools/call",
        "params": {"name": tool, "arguments": {}, "_meta": meta},
    }
    headers = {
        "accept": MCP_ACCEPT,
        "mcp-protocol-version": "2026-07-28",
        "mcp-method": "tools/call",
        "mcp-name": tool,
    }
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    return await http.post(gw.url("gh"), json=body, headers=headers)


async def test_each_call_reaches_the_upstream_with_the_token_its_user_supplied(
    gw: Gateway, upstream: GitHubLike, token: str, http: httpx2.AsyncClient
) -> None:
    for supplied, user in USER_TOKENS.items():
        response = await call(http, gw, token, "whoami", {"method": "oauth2", "token": supplied})
        assert response.status_code == 200, response.text
        assert response.json()["result"]["content"][0]["text"] == user
    seen = upstream.requests[-2:]
    assert [r.headers["x-github-token"] for r in seen] == [f"token {t}" for t in USER_TOKENS]
    for request in seen:
        assert "authorization" not in request.headers  # never Bastion's token (no passthrough)
        assert "authorization" not in (request.message or {}).get("params", {}).get("_meta", {})
    for supplied in USER_TOKENS:
        assert supplied not in gw.log()


async def test_bastion_still_wants_its_own_token(gw: Gateway, http: httpx2.AsyncClient) -> None:
    response = await call(http, gw, None, "whoami", {"method": "oauth2", "token": "gh-token-alice"})
    assert response.status_code == 401
    assert "gh-token-alice" not in gw.log()


async def test_a_call_without_the_users_token_gets_32001(
    gw: Gateway, token: str, http: httpx2.AsyncClient
) -> None:
    response = await call(http, gw, token, "create_issue")
    error = response.json()["error"]
    assert error["code"] == -32001
    assert error["message"] == "no token provided"
    assert error["data"]["tool"] == "create_issue"
    assert "_meta.authorization" in error["data"]["reason"]


async def test_a_token_the_upstream_refuses_gets_32003(
    gw: Gateway, token: str, http: httpx2.AsyncClient
) -> None:
    response = await call(http, gw, token, "create_issue", {"method": "oauth2", "token": "gh-token-mallory"})
    error = response.json()["error"]
    assert error["code"] == -32003
    assert error["data"]["tool"] == "create_issue"
    assert "401" in error["data"]["reason"]
    assert "Bad credentials" not in response.text  # never the upstream's own body
    assert "gh-token-mallory" not in gw.log()


@pytest.mark.parametrize(
    "authorization",
    [
        "gh-token-alice",  # not an object
        {"method": "basic", "token": "x"},  # unknown method
        {"method": "oauth2"},  # no token
        {"method": "oauth2", "token": ""},
        {"method": "oauth2", "token": "line\r\nX-Injected: 1"},  # header injection
        {"method": "oauth2", "token": "x" * 9000},
    ],
)
async def test_malformed_supplied_tokens_are_invalid_params(
    gw: Gateway, upstream: GitHubLike, token: str, http: httpx2.AsyncClient, authorization: object
) -> None:
    before = len(upstream.requests)
    response = await call(http, gw, token, "whoami", authorization)
    assert response.json()["error"]["code"] == -32602, response.text
    assert len(upstream.requests) == before


async def test_tools_list_carries_the_234_annotation(
    gw: Gateway, token: str, http: httpx2.AsyncClient
) -> None:
    opened = await post_initialize(http, gw.url("gh"), token)
    session = opened.headers["mcp-session-id"]
    headers = {"accept": MCP_ACCEPT, "authorization": f"Bearer {token}", "mcp-session-id": session}
    headers["mcp-protocol-version"] = "2025-11-25"
    listed = await http.post(
        gw.url("gh"), json={"jsonrpc": "2.0", "id": 2, "method": "tools/list"}, headers=headers
    )
    tools = {t["name"]: t for t in listed.json()["result"]["tools"]}
    assert tools["whoami"]["authorization"] == {"method": "oauth2", "requiredScopes": ["read:user"]}
    assert tools["create_issue"]["_meta"]["authorization"] == {"method": "oauth2", "requiredScopes": ["repo"]}


async def test_the_aggregate_endpoint_speaks_the_same_codes(gw: Gateway, http: httpx2.AsyncClient) -> None:
    async with httpx2.AsyncClient(timeout=30) as client:
        granted = await client.post(
            f"{gw.base}/token",
            data={"grant_type": "client_credentials", "resource": gw.url()},
            auth=("sales-agent", SECRET),
        )
    token = granted.json()["access_token"]
    meta = {**MODERN_META, "authorization": {"method": "oauth2", "token": "gh-token-bob"}}
    body = {
        "jsonrpc": "2.0",
        "id": 3,
        "method": "tools/call",
        "params": {"name": "gh__whoami", "_meta": meta},
    }
    headers = {"accept": MCP_ACCEPT, "authorization": f"Bearer {token}", "mcp-protocol-version": "2026-07-28"}
    headers.update({"mcp-method": "tools/call", "mcp-name": "gh__whoami"})
    answered = await http.post(gw.url(), json=body, headers=headers)
    assert answered.json()["result"]["content"][0]["text"] == "bob", answered.text
    meta["authorization"] = {"method": "oauth2", "token": "gh-token-eve"}
    refused = await http.post(gw.url(), json=body, headers=headers)
    assert refused.json()["error"]["code"] == -32003, refused.text
    del meta["authorization"]
    missing = await http.post(gw.url(), json=body, headers=headers)
    assert missing.json()["error"]["code"] == -32001, missing.text
