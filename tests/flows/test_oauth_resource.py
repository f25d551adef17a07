"""Bastion as an OAuth resource server on ``/mcp*`` (the real ``bastion serve``): audience per
endpoint, forged and malformed tokens, RFC 6750 challenges, scopes, no token passthrough, and
legacy sessions bound to the user who opened them.

The upstream is a tiny recording MCP server (legacy era, HTTP) run in this process
(``tests.support.oauth.RecordingUpstream``), so the tests can see every header that reaches it."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx2
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from bastion.oauth.keys import SigningKey
from tests.support.gateway import Gateway, run_gateway
from tests.support.oauth import (
    REDIRECT_URI,
    add_users,
    browser,
    challenge_params,
    list_tools,
    post_initialize,
    signing_key,
    user_token,
)
from tests.support.recording import RecordingUpstream, recording_upstream

PASSWORD = "correct horse battery"
SECRET = "machine-secret-0123456789abcdefghijklmnopqrstuvwxyz"
CLIENTS = [
    {"client_id": "pub", "name": "Public", "redirect_uris": [REDIRECT_URI], "trusted": True},
    {
        "client_id": "machine",
        "grant_types": ["client_credentials"],
        "secret_sha256": hashlib.sha256(SECRET.encode()).hexdigest(),
    },
]


@pytest.fixture(scope="module")
def recorder() -> Iterator[RecordingUpstream]:
    with recording_upstream() as upstream:
        yield upstream


@pytest.fixture(scope="module")
def gw(flow_tmp: Path, recorder: RecordingUpstream) -> Iterator[Gateway]:
    upstreams = [
        {"name": "rec", "http": {"url": recorder.url}},
        {"name": "other", "http": {"url": recorder.url}},
        {"name": "scoped", "http": {"url": recorder.url}, "required_scopes": ["notes", "admin"]},
    ]
    auth = {"enabled": True, "scopes": ["mcp", "notes", "admin"], "required_scopes": ["mcp"]}
    with run_gateway(flow_tmp, upstreams, extra={"auth": auth, "clients": CLIENTS}) as g:
        yield g


@pytest.fixture(scope="module")
async def users(gw: Gateway) -> dict[str, str]:
    return await add_users(gw, {"alice": PASSWORD, "bob": PASSWORD})


@pytest.fixture
async def http(users: dict[str, str]) -> AsyncIterator[httpx2.AsyncClient]:
    async with browser() as client:
        yield client


async def machine_token(http: httpx2.AsyncClient, gw: Gateway, resource: str, scope: str = "mcp") -> str:
    form = {"grant_type": "client_credentials", "resource": resource, "scope": scope}
    response = await http.post(f"{gw.base}/token", data=form, auth=("machine", SECRET))
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def prm(gw: Gateway, endpoint: str) -> str:
    return f"{gw.base}/.well-known/oauth-protected-resource/mcp/{endpoint}"


def assert_challenge(
    response: httpx2.Response, gw: Gateway, endpoint: str, error: str | None, status: int
) -> None:
    assert response.status_code == status, response.text
    params = challenge_params(response.headers["www-authenticate"])
    assert params["resource_metadata"] == prm(gw, endpoint)
    assert params.get("error") == error
    assert "mcp" in params["scope"].split()


# -- audience, missing and malformed credentials ---------------------------------------------


async def test_token_for_one_endpoint_is_refused_at_another(gw: Gateway, http: httpx2.AsyncClient) -> None:
    token = await machine_token(http, gw, gw.url("rec"))
    assert (await list_tools(http, gw.url("rec"), token)).status_code == 200
    assert_challenge(await list_tools(http, gw.url("other"), token), gw, "other", "invalid_token", 401)
    aggregate = await list_tools(http, gw.url(), token)
    assert aggregate.status_code == 401
    assert challenge_params(aggregate.headers["www-authenticate"])["error"] == "invalid_token"


async def test_missing_token_gets_a_challenge_without_error(gw: Gateway, http: httpx2.AsyncClient) -> None:
    response = await list_tools(http, gw.url("scoped"), None)
    assert_challenge(response, gw, "scoped", None, 401)
    assert challenge_params(response.headers["www-authenticate"])["scope"] == "mcp notes admin"
    assert "error_description" not in challenge_params(response.headers["www-authenticate"])


async def test_token_in_the_query_string_is_ignored(gw: Gateway, http: httpx2.AsyncClient) -> None:
    token = await machine_token(http, gw, gw.url("rec"))
    response = await list_tools(http, f"{gw.url('rec')}?access_token={token}", None)
    assert_challenge(response, gw, "rec", None, 401)


@pytest.mark.parametrize(
    "authorization",
    ["Basic YWxpY2U6cHc=", "Bearer", "Bearer two words", "Token abc", "bearer\tabc"],
)
async def test_malformed_authorization_is_a_400(
    gw: Gateway, http: httpx2.AsyncClient, authorization: str
) -> None:
    body = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}}
    response = await http.post(
        gw.url("rec"),
        json=body,
        headers={"authorization": authorization, "accept": "application/json, text/event-stream"},
    )
    assert_challenge(response, gw, "rec", "invalid_request", 400)


# -- forged tokens -------------------------------------------------------------------------------


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def segment(value: dict[str, Any]) -> str:
    return b64(json.dumps(value).encode())


def good_claims(gw: Gateway) -> dict[str, Any]:
    now = int(time.time())
    return {
        "iss": gw.base,
        "sub": "forger",
        "aud": gw.url("rec"),
        "exp": now + 300,
        "iat": now,
        "nbf": now,
        "jti": b64(now.to_bytes(8, "big") + b"forged"),
        "client_id": "pub",
        "scope": "mcp notes admin",
    }


def sign(key: SigningKey, claims: dict[str, Any], **header: Any) -> str:
    return jwt.encode(
        claims, key.private_key, algorithm="ES256", headers={"typ": "at+jwt", "kid": key.kid, **header}
    )


def hs256(secret: bytes, claims: dict[str, Any], kid: str) -> str:
    """HS256 by hand (PyJWT refuses asymmetric key material as an HMAC secret)."""
    signing_input = f"{segment({'alg': 'HS256', 'typ': 'at+jwt', 'kid': kid})}.{segment(claims)}"
    return signing_input + "." + b64(hmac.new(secret, signing_input.encode(), hashlib.sha256).digest())


def forge(case: str, key: SigningKey, gw: Gateway) -> str:
    claims = good_claims(gw)
    now = int(time.time())
    fresh = ec.generate_private_key(ec.SECP256R1())
    if case == "expired":
        return sign(key, {**claims, "exp": now - 120, "iat": now - 1000, "nbf": now - 1000})
    if case == "not-yet-valid":
        return sign(key, {**claims, "nbf": now + 600, "iat": now + 600, "exp": now + 900})
    if case == "wrong-iss":
        return sign(key, {**claims, "iss": "https://attacker.example"})
    if case == "typ-JWT":
        return sign(key, claims, typ="JWT")
    if case == "no-jti":
        return sign(key, {k: v for k, v in claims.items() if k != "jti"})
    if case == "alg-none":
        return f"{segment({'alg': 'none', 'typ': 'at+jwt', 'kid': key.kid})}.{segment(claims)}."
    if case == "hs256-public-jwk":
        return hs256(json.dumps(key.public_jwk(), sort_keys=True).encode(), claims, key.kid)
    if case == "hs256-public-pem":
        public = key.private_key.public_key()
        pem = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        return hs256(pem, claims, key.kid)
    if case == "fresh-key-same-kid":
        return jwt.encode(claims, fresh, algorithm="ES256", headers={"typ": "at+jwt", "kid": key.kid})
    if case == "unknown-kid":
        return jwt.encode(
            claims, fresh, algorithm="ES256", headers={"typ": "at+jwt", "kid": "not-a-known-kid"}
        )
    if case == "tampered-payload":
        header, _, signature = sign(key, claims).split(".")
        return f"{header}.{segment({**claims, 'sub': 'admin'})}.{signature}"
    assert case == "tampered-signature"
    token = sign(key, claims)
    return token[:-6] + ("AAAAAA" if not token.endswith("AAAAAA") else "BBBBBB")


FORGERIES = [
    "expired",
    "not-yet-valid",
    "wrong-iss",
    "typ-JWT",
    "no-jti",
    "alg-none",
    "hs256-public-jwk",
    "hs256-public-pem",
    "fresh-key-same-kid",
    "unknown-kid",
    "tampered-payload",
    "tampered-signature",
]


async def test_a_correctly_minted_token_is_accepted(gw: Gateway, http: httpx2.AsyncClient) -> None:
    """The control for the forgeries below: the same claims, signed right, work."""
    key = await signing_key(gw)
    assert (await list_tools(http, gw.url("rec"), sign(key, good_claims(gw)))).status_code == 200


@pytest.mark.parametrize("case", FORGERIES)
async def test_forged_tokens_are_refused(gw: Gateway, http: httpx2.AsyncClient, case: str) -> None:
    token = forge(case, await signing_key(gw), gw)
    assert_challenge(await list_tools(http, gw.url("rec"), token), gw, "rec", "invalid_token", 401)


# -- scopes --------------------------------------------------------------------------------------


async def test_insufficient_scope_names_every_required_scope(gw: Gateway, http: httpx2.AsyncClient) -> None:
    narrow = await machine_token(http, gw, gw.url("scoped"), scope="mcp notes")
    response = await list_tools(http, gw.url("scoped"), narrow)
    assert_challenge(response, gw, "scoped", "insufficient_scope", 403)
    assert challenge_params(response.headers["www-authenticate"])["scope"] == "mcp notes admin"
    no_mcp = await machine_token(http, gw, gw.url("rec"), scope="notes")
    assert_challenge(await list_tools(http, gw.url("rec"), no_mcp), gw, "rec", "insufficient_scope", 403)
    full = await machine_token(http, gw, gw.url("scoped"), scope="mcp notes admin")
    assert (await list_tools(http, gw.url("scoped"), full)).status_code == 200


# -- no passthrough, sessions bound to their user ------------------------------------------------


async def test_the_clients_token_never_reaches_the_upstream(
    gw: Gateway, http: httpx2.AsyncClient, recorder: RecordingUpstream
) -> None:
    user = await user_token(
        gw.base, client_id="pub", resource=gw.url("rec"), username="alice", password=PASSWORD
    )
    machine = await machine_token(http, gw, gw.url("rec"))
    before = len(recorder.requests)
    for token in (str(user["access_token"]), machine):
        assert (await post_initialize(http, gw.url("rec"), token)).status_code == 200
        assert (await list_tools(http, gw.url("rec"), token)).status_code == 200
    seen = recorder.requests[before:]
    assert seen, "nothing reached the upstream"
    for request in seen:
        for value in request.headers.values():
            assert str(user["access_token"]) not in value
            assert machine not in value
            assert str(user["refresh_token"]) not in value


async def test_a_legacy_session_is_bound_to_its_user(
    gw: Gateway, http: httpx2.AsyncClient, recorder: RecordingUpstream
) -> None:
    alice = str(
        (
            await user_token(
                gw.base, client_id="pub", resource=gw.url("rec"), username="alice", password=PASSWORD
            )
        )["access_token"]
    )
    bob = str(
        (
            await user_token(
                gw.base, client_id="pub", resource=gw.url("rec"), username="bob", password=PASSWORD
            )
        )["access_token"]
    )
    opened = await post_initialize(http, gw.url("rec"), alice)
    assert opened.status_code == 200
    session = {"mcp-session-id": opened.headers["mcp-session-id"], "mcp-protocol-version": "2025-11-25"}
    body = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}
    accept = {"accept": "application/json, text/event-stream"}

    async def tools(token: str | None) -> httpx2.Response:
        auth = {"authorization": f"Bearer {token}"} if token else {}
        return await http.post(gw.url("rec"), json=body, headers={**accept, **session, **auth})

    assert (await tools(alice)).status_code == 200
    before = len(recorder.requests)
    hijack = await tools(bob)
    assert hijack.status_code == 404, hijack.text
    assert "echo" not in hijack.text
    assert (await tools(await machine_token(http, gw, gw.url("rec")))).status_code == 404
    assert (await tools(None)).status_code == 401  # the session id alone authenticates nothing
    await asyncio.sleep(0.1)
    assert len(recorder.requests) == before  # none of these reached the upstream
    assert (await tools(alice)).status_code == 200
