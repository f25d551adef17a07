"""The SaaS side of per-user connections works on its own: a second oidc-provider instance as the
SaaS provider (JWT or opaque access tokens for its one resource, refresh with and without
rotation, refresh failures on demand, grant counters, revocation, introspection) and the MCP
upstream that checks its tokens or API keys and says whom it saw."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import jwt
import pytest

from tests.support.idp import (
    SAAS_CLIENT_ID,
    SAAS_CLIENT_SECRET,
    SAAS_SCOPE,
    IdpTokens,
    SaasProvider,
    idp_jwks,
    idp_refresh,
    idp_tokens,
    introspect,
    run_saas_provider,
)
from tests.support.saas import (
    SaasUpstream,
    bearer,
    call_tool,
    credential_hash,
    result_json,
    run_saas_upstream,
    saas_upstream_for,
)
from tests.support.wire import ACCEPT, MODERN

pytestmark = [pytest.mark.node, pytest.mark.timeout(60)]

CALLBACK = "http://127.0.0.1:53998/connections/crm/callback"


@pytest.fixture(scope="module")
def saas(flow_tmp: Path) -> Iterator[SaasProvider]:
    with run_saas_provider(flow_tmp / "saas", redirect_uris=[CALLBACK]) as provider:
        yield provider


@pytest.fixture(scope="module")
def upstream(saas: SaasProvider, flow_tmp: Path) -> Iterator[SaasUpstream]:
    with saas_upstream_for(saas, flow_tmp / "saas") as server:
        yield server


async def sign_in(saas: SaasProvider, login: str, scope: str = SAAS_SCOPE) -> IdpTokens:
    """Code + PKCE as the connector client, in a fresh browser (no earlier session)."""
    async with httpx2.AsyncClient(timeout=20) as browser:
        return await idp_tokens(browser, saas, client=saas.client, login=login, scope=scope)


async def refresh(saas: SaasProvider, refresh_token: str) -> httpx2.Response:
    async with httpx2.AsyncClient(timeout=20) as http:
        return await idp_refresh(http, saas, client=saas.client, refresh_token=refresh_token)


async def raw_call(url: str, headers: dict[str, str], tool: str = "whoami") -> httpx2.Response:
    """One tools/call POST (2026-07-28, no handshake needed): for the gate's HTTP answers."""
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": tool, "arguments": {}}}
    async with httpx2.AsyncClient(timeout=20) as http:
        return await http.post(
            url, json=body, headers={**headers, "Accept": ACCEPT, "MCP-Protocol-Version": MODERN}
        )


async def whoami(url: str, token: str) -> dict[str, object]:
    return dict(result_json(await call_tool(url, "whoami", headers=bearer(token))))


async def test_jwt_access_token_reaches_upstream(saas: SaasProvider, upstream: SaasUpstream) -> None:
    assert saas.issuer == saas.base  # no tenant path
    async with httpx2.AsyncClient(timeout=20) as http:
        rfc8414 = (await http.get(f"{saas.base}/.well-known/oauth-authorization-server")).json()
        jwks = await idp_jwks(http, saas)
    assert rfc8414["issuer"] == saas.issuer
    assert rfc8414["token_endpoint"] == saas.token_endpoint
    assert saas.introspection_endpoint.startswith(saas.issuer)
    assert saas.revocation_endpoint.startswith(saas.issuer)
    assert saas.client == {
        "client_id": SAAS_CLIENT_ID,
        "client_secret": SAAS_CLIENT_SECRET,
        "redirect_uris": [CALLBACK],
        "token_endpoint_auth_method": "client_secret_basic",
    }

    tokens = await sign_in(saas, "alice")
    assert tokens.refresh_token
    assert "id_token" not in tokens.response  # plain OAuth, no openid
    assert tokens.response["scope"] == "crm:read crm:write"
    assert jwt.get_unverified_header(tokens.access_token)["typ"] == "at+jwt"
    key = jwks[jwt.get_unverified_header(tokens.access_token)["kid"]]
    claims = jwt.decode(
        tokens.access_token, key, algorithms=["RS256"], issuer=saas.issuer, audience=saas.resource
    )
    assert claims["sub"] == "crm-user-alice"
    assert claims["scope"] == "crm:read crm:write"
    assert claims["client_id"] == SAAS_CLIENT_ID

    upstream.reset_seen()
    assert await whoami(upstream.url, tokens.access_token) == {
        "sub": "crm-user-alice",
        "scopes": ["crm:read", "crm:write"],
        "client_id": SAAS_CLIENT_ID,
    }
    found = result_json(
        await call_tool(upstream.url, "crm_search", {"query": "acme"}, headers=bearer(tokens.access_token))
    )
    assert found["results"][0]["name"] == "Acme Corp"
    seen = upstream.seen()
    assert {r["sha256"] for r in seen} == {credential_hash(tokens.access_token)}
    assert {r["sub"] for r in seen} == {"crm-user-alice"}
    assert [t for r in seen for t in r["tool"]] == ["whoami", "crm_search"]
    assert tokens.access_token not in json.dumps(seen)


async def test_bad_tokens_get_401_and_missing_scope_403(saas: SaasProvider, upstream: SaasUpstream) -> None:
    upstream.reset_seen()
    missing = await raw_call(upstream.url, {})
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == 'Bearer realm="saas-upstream"'
    garbage = await raw_call(upstream.url, bearer("not-a-token"))
    assert garbage.status_code == 401
    assert 'error="invalid_token"' in garbage.headers["www-authenticate"]

    reader = await sign_in(saas, "bob", scope="crm:read offline_access")
    assert reader.response["scope"] == "crm:read"
    head, payload, signature = reader.access_token.split(".")
    forged = await raw_call(upstream.url, bearer(f"{head}.{payload}.{signature[::-1]}"))
    assert forged.status_code == 401
    searched = await call_tool(
        upstream.url, "crm_search", {"query": "glo"}, headers=bearer(reader.access_token)
    )
    assert result_json(searched)["results"][0]["name"] == "Globex"
    denied = await raw_call(upstream.url, bearer(reader.access_token), "crm_update")
    assert denied.status_code == 403
    assert 'error="insufficient_scope"' in denied.headers["www-authenticate"]
    assert 'scope="crm:write"' in denied.headers["www-authenticate"]
    seen = [(r["status"], r["sub"], r["tool"]) for r in upstream.seen()]
    assert seen[:3] == [(401, None, ["whoami"])] * 3
    assert (200, "crm-user-bob", ["crm_search"]) in seen
    assert seen[-1] == (403, "crm-user-bob", ["crm_update"])

    # an access token for another resource is not for this upstream
    other = "https://other.saas.test/api"
    async with httpx2.AsyncClient(timeout=20) as browser:
        elsewhere = await idp_tokens(
            browser,
            saas,
            client=saas.client,
            login="bob",
            scope=SAAS_SCOPE,
            auth_params={"resource": other},
            token_params={"resource": other},
        )
    assert jwt.decode(elsewhere.access_token, options={"verify_signature": False})["aud"] == other
    assert (await raw_call(upstream.url, bearer(elsewhere.access_token))).status_code == 401


async def test_short_access_token_ttl_expires(saas: SaasProvider, upstream: SaasUpstream) -> None:
    with saas.changed(access_token_ttl=2):
        tokens = await sign_in(saas, "alice")
    exp = jwt.decode(tokens.access_token, options={"verify_signature": False})["exp"]
    assert tokens.response["expires_in"] == 2
    assert (await whoami(upstream.url, tokens.access_token))["sub"] == "crm-user-alice"
    await asyncio.sleep(max(0.0, exp - time.time()) + 0.3)
    expired = await raw_call(upstream.url, bearer(tokens.access_token))
    assert expired.status_code == 401
    assert "ExpiredSignatureError" in expired.headers["www-authenticate"]
    fresh = await refresh(saas, str(tokens.refresh_token))
    assert fresh.status_code == 200, fresh.text
    assert (await whoami(upstream.url, fresh.json()["access_token"]))["sub"] == "crm-user-alice"


async def test_refresh_with_and_without_rotation(saas: SaasProvider, upstream: SaasUpstream) -> None:
    rotating = await sign_in(saas, "alice")
    first = await refresh(saas, str(rotating.refresh_token))
    assert first.status_code == 200, first.text
    assert first.json()["refresh_token"] != rotating.refresh_token
    reused = await refresh(saas, str(rotating.refresh_token))
    assert reused.status_code == 400
    assert reused.json()["error"] == "invalid_grant"

    with saas.changed(refresh_rotation=False):
        steady = await sign_in(saas, "alice")
        for _ in range(3):
            again = await refresh(saas, str(steady.refresh_token))
            assert again.status_code == 200, again.text
            assert "refresh_token" not in again.json()
        assert (await whoami(upstream.url, again.json()["access_token"]))["sub"] == "crm-user-alice"


async def test_refresh_errors_and_grant_counters(saas: SaasProvider) -> None:
    tokens = await sign_in(saas, "bob")
    saas.reset_grants()
    with saas.changed(refresh_error={"status": 503}):
        down = await refresh(saas, str(tokens.refresh_token))
    assert down.status_code == 503
    assert down.headers["content-type"].startswith("text/plain")
    with saas.changed(refresh_error="invalid_grant", refresh_error_description="token revoked"):
        revoked = await refresh(saas, str(tokens.refresh_token))
    assert revoked.status_code == 400
    assert revoked.json() == {"error": "invalid_grant", "error_description": "token revoked"}
    ok = await refresh(saas, str(tokens.refresh_token))  # untouched by the refusals
    assert ok.status_code == 200, ok.text
    bad = await refresh(saas, "no-such-refresh-token")
    assert bad.status_code == 400

    counts = saas.grant_counts()
    assert counts.requests == {"refresh_token": 4}
    assert counts.succeeded == {"refresh_token": 1}
    await sign_in(saas, "bob")
    counts = saas.grant_counts()
    assert counts.requests["authorization_code"] == counts.succeeded["authorization_code"] == 1
    saas.reset_grants()
    assert saas.grant_counts().requests == {}


async def test_revoke_user_and_revocation_endpoint(saas: SaasProvider) -> None:
    bob = await sign_in(saas, "bob")
    assert (await refresh(saas, str(bob.refresh_token))).status_code == 200
    assert saas.revoke_user("bob") >= 1
    gone = await refresh(saas, str(bob.refresh_token))
    assert gone.status_code == 400
    assert gone.json()["error"] == "invalid_grant"

    alice = await sign_in(saas, "alice")
    async with httpx2.AsyncClient(timeout=20) as http:
        answer = await http.post(
            saas.revocation_endpoint,
            data={"token": alice.refresh_token, "token_type_hint": "refresh_token"},
            auth=(SAAS_CLIENT_ID, SAAS_CLIENT_SECRET),
        )
    assert answer.status_code == 200, answer.text
    assert (await refresh(saas, str(alice.refresh_token))).json()["error"] == "invalid_grant"


async def test_introspection_mode(saas: SaasProvider, upstream: SaasUpstream, flow_tmp: Path) -> None:
    with saas.changed(access_token_format="opaque"):
        tokens = await sign_in(saas, "alice")
    assert tokens.access_token.count(".") != 2
    async with httpx2.AsyncClient(timeout=20) as http:
        info = await introspect(http, saas, tokens.access_token)
        # only the configured introspector may look
        other = await http.post(
            saas.introspection_endpoint,
            data={"token": tokens.access_token},
            auth=(SAAS_CLIENT_ID, SAAS_CLIENT_SECRET),
        )
    assert info["active"] is True
    assert info["sub"] == "crm-user-alice"
    assert info["aud"] == saas.resource
    assert info["scope"] == "crm:read crm:write"
    assert other.json() == {"active": False}

    assert (await raw_call(upstream.url, bearer(tokens.access_token))).status_code == 401  # JWKS only
    with saas_upstream_for(saas, flow_tmp / "saas", introspection=True) as checking:
        assert await whoami(checking.url, tokens.access_token) == {
            "sub": "crm-user-alice",
            "scopes": ["crm:read", "crm:write"],
            "client_id": SAAS_CLIENT_ID,
        }
        saas.revoke_user("alice")
        refused = await raw_call(checking.url, bearer(tokens.access_token))
        assert refused.status_code == 401
        assert 'error="invalid_token"' in refused.headers["www-authenticate"]
        assert [r["status"] for r in checking.seen()][-1] == 401


async def test_api_key_mode(flow_tmp: Path) -> None:
    keys: dict[str, Any] = {
        "key-alice": "alice@crm.test",
        "key-reader": {"sub": "reader@crm.test", "scopes": ["crm:read"]},
    }
    with run_saas_upstream(flow_tmp / "saas", api_key_header="X-Api-Key", api_keys=keys) as upstream:
        result = result_json(await call_tool(upstream.url, "whoami", headers={"X-Api-Key": "key-alice"}))
        assert result == {"sub": "alice@crm.test", "scopes": ["crm:read", "crm:write"], "client_id": None}
        assert all(r["sha256"] == credential_hash("key-alice") for r in upstream.seen())
        assert all(r["kind"] == "api_key" for r in upstream.seen())

        missing = await raw_call(upstream.url, {})
        assert missing.status_code == 401
        assert missing.headers["www-authenticate"] == 'ApiKey header="x-api-key"'
        assert (await raw_call(upstream.url, {"X-Api-Key": "wrong"})).status_code == 401
        reader = {"X-Api-Key": "key-reader"}
        assert result_json(await call_tool(upstream.url, "crm_search", {"query": "i"}, headers=reader))[
            "results"
        ]
        assert (await raw_call(upstream.url, {"X-Api-Key": "key-reader"}, "crm_update")).status_code == 403

        upstream.set_api_keys({"key-bob": "bob@crm.test"})
        assert (await raw_call(upstream.url, {"X-Api-Key": "key-alice"})).status_code == 401
        result = result_json(await call_tool(upstream.url, "whoami", headers={"X-Api-Key": "key-bob"}))
        assert result["sub"] == "bob@crm.test"
        assert "key-bob" not in json.dumps(upstream.seen())
