"""ID-JAGs from the enterprise IdP (EMA towards upstreams, ``id_jag_issuer: <identity provider>``):
a real Bastion signs the user in through an Entra-like OpenID Provider (oidc-provider with its
RFC 8693 ID-JAG exchange on), which keeps the sealed ID token in the IdP session; an
``IdpIdJagSource`` built as the gateway builds it (its configuration, master key and SQLite
store) then exchanges that ID token at the IdP for an ID-JAG.

Checked: the ID-JAG's signature against the IdP's JWKS and its claims, and what Bastion sent
(client authentication, token types, audience, resource, scope); an ID token close to expiry
renewed with the IdP refresh token (and the rotated refresh token kept); a refresh by the MCP
client storing the IdP's new ID token; no session, no refresh token, a refresh refused →
sign in again; the IdP refusing the exchange → its error code, not its description; the IdP
down or slow → try later; no token in the logs."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx2
import jwt
import pytest
import sqlalchemy as sa

from bastion.config.loader import load_config
from bastion.core.credentials import IdJag, IdJagRequest, IdJagUnavailable
from bastion.core.crypto import derive_key, open_text
from bastion.core.records import IdpSession
from bastion.idp.idjag import IdpIdJagSource, idjag_sources
from bastion.idp.oidc import OidcProvider
from bastion.idp.presets import ResolvedProvider, resolve
from bastion.oauth.keystore import load_master_key
from bastion.store import Store
from bastion.store.sql import SqlStore
from tests.support.federation import ALICE, Federation, bastion_with_entra, sign_in_via_idp
from tests.support.idp import idp_jwks, require_idp_packages, verify_id_token
from tests.support.oauth import authorize_url, exchange_code, gateway_store, pkce, query_of
from tests.support.procs import free_port
from tests.support.recording import recording_upstream

REDIRECT = "http://127.0.0.1:53682/callback"
AUDIENCE = "https://as.upstream.example"  # the upstream's authorization server
RESOURCE = "https://mcp.upstream.example/mcp"
CLIENT_AT_UPSTREAM = "bastion-at-upstream"  # Bastion's client id there (the IdP's mapping)
ID_JAG_TYPE = "urn:ietf:params:oauth:token-type:id-jag"
ID_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:id_token"
USERS = {
    "alice": ALICE,
    "carol": {**ALICE, "sub": "carol-sub", "oid": "oid-carol", "email": "carol@contoso.com"},
    "dave": {**ALICE, "sub": "dave-sub", "oid": "oid-dave", "email": "dave@contoso.com"},
}


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    require_idp_packages()
    tmp: Path = tmp_path_factory.mktemp("ema-idp")
    with (
        recording_upstream() as upstream,
        bastion_with_entra(
            tmp,
            [{"name": "a", "http": {"url": upstream.url}}],
            users=USERS,
            provider={"recheck_interval": 0},
            idp_extra={"id_jag": {"client_ids": {AUDIENCE: CLIENT_AT_UPSTREAM}}},
        ) as f,
    ):
        yield f


@pytest.fixture
async def http() -> AsyncIterator[httpx2.AsyncClient]:
    async with httpx2.AsyncClient(follow_redirects=False, timeout=30) as client:
        yield client


@pytest.fixture(autouse=True)
def _all_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)


@dataclasses.dataclass
class Bastion:
    """What the gateway's composition root would give an IdpIdJagSource, built in the test."""

    store: Store
    key: bytes
    providers: dict[str, OidcProvider]
    sources: dict[str, IdpIdJagSource]

    @property
    def source(self) -> IdpIdJagSource:
        return self.sources["entra"]

    async def session(self, user_id: str) -> IdpSession:
        found = await self.store.idp_sessions.latest_for_user(user_id, "entra", time.time())
        assert found is not None
        return found

    def opened(self, session: IdpSession, which: str) -> str:
        sealed = session.sealed_id_token if which == "id" else session.sealed_refresh_token
        assert sealed is not None
        assert sealed.startswith("g1.")  # sealed, never in the clear
        token = open_text(self.key, sealed, session.session_id)
        assert token is not None
        return token

    async def set_columns(self, session_id: str, **values: Any) -> None:
        assert isinstance(self.store, SqlStore)
        sets = ", ".join(f"{column} = :{column}" for column in values)
        async with self.store.engine.begin() as conn:
            await conn.execute(
                sa.text(f"UPDATE idp_sessions SET {sets} WHERE session_id = :sid"),
                {**values, "sid": session_id},
            )


@contextlib.asynccontextmanager
async def bastion_side(
    fed: Federation, adjust: Callable[[ResolvedProvider], ResolvedProvider] | None = None
) -> AsyncIterator[Bastion]:
    settings = load_config(fed.gateway.config_path, os.environ)
    key = derive_key(load_master_key(settings), "idp-session")
    providers = {}
    for p in settings.identity_providers:
        resolved = resolve(p)
        providers[p.name] = OidcProvider(
            adjust(resolved) if adjust else resolved,
            redirect_uri=f"{settings.public_url}/login/idp/{p.name}/callback",
        )
    try:
        async with gateway_store(fed.gateway) as store:
            yield Bastion(store, key, providers, idjag_sources(settings, store, providers, key))
    finally:
        for provider in providers.values():
            await provider.aclose()


def request_for(user_id: str, scopes: tuple[str, ...] = ("mcp:read", "mcp:write")) -> IdJagRequest:
    return IdJagRequest(
        user_id=user_id, audience=AUDIENCE, resource=RESOURCE, scopes=scopes, client_id=CLIENT_AT_UPSTREAM
    )


async def sign_in(
    http: httpx2.AsyncClient, fed: Federation, login: str = "alice"
) -> tuple[str, dict[str, Any]]:
    """The user signs in to Bastion through the IdP (an MCP client's authorization); their
    Bastion user id and Bastion's tokens for the client."""
    response = await http.post(
        f"{fed.gateway.base}/register",
        json={
            "redirect_uris": [REDIRECT],
            "application_type": "native",
            "token_endpoint_auth_method": "none",
            "grant_types": ["authorization_code", "refresh_token"],
            "client_name": "EMA test client",
        },
    )
    assert response.status_code == 201, response.text
    client_id = str(response.json()["client_id"])
    resource = fed.gateway.url("a")
    proof = pkce()
    url = authorize_url(fed.gateway.base, client_id=client_id, resource=resource, challenge=proof.challenge)
    final = await sign_in_via_idp(http, fed, url, login=login)
    code = query_of(final.headers["location"])["code"]
    tokens = await exchange_code(
        http, fed.gateway.base, code=code, verifier=proof.verifier, client_id=client_id, resource=resource
    )
    assert tokens.status_code == 200, tokens.text
    claims = jwt.decode(tokens.json()["access_token"], options={"verify_signature": False})
    return str(claims["sub"]), {**tokens.json(), "client_id": client_id}


async def verified_id_jag(http: httpx2.AsyncClient, fed: Federation, id_jag: IdJag) -> dict[str, Any]:
    header = jwt.get_unverified_header(id_jag.assertion)
    assert header["typ"] == "oauth-id-jag+jwt"
    assert header["alg"] == "RS256"
    jwks = await idp_jwks(http, fed.idp)
    claims = jwt.decode(
        id_jag.assertion,
        jwks[header["kid"]],
        algorithms=["RS256"],
        issuer=fed.idp.issuer,
        audience=AUDIENCE,
        options={"require": ["iss", "sub", "aud", "exp", "iat", "jti", "client_id"]},
    )
    return dict(claims)


async def refusal(bastion: Bastion, fed: Federation, user_id: str, **switches: Any) -> IdJagUnavailable:
    """The IdJagUnavailable raised while the IdP runs with ``switches``."""
    with fed.idp.changed(**switches), pytest.raises(IdJagUnavailable) as refused:
        await bastion.source.id_jag(request_for(user_id))
    return refused.value


def assert_no_secret_logged(caplog: pytest.LogCaptureFixture, *secrets: str) -> None:
    text = caplog.text + "".join(str(r.args) for r in caplog.records)
    assert "eyJ" not in text  # no JWT (ID token, ID-JAG) at all
    for secret in secrets:
        assert secret not in text


# -- the ID-JAG ----------------------------------------------------------------------------------


async def test_an_id_jag_for_the_signed_in_user(
    fed: Federation, http: httpx2.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    user_id, _ = await sign_in(http, fed)
    caplog.clear()  # from here on: Bastion's side only (the browser's cookies are not ours)
    before = len(fed.idp.id_jag_requests())
    async with bastion_side(fed) as bastion:
        session = await bastion.session(user_id)
        id_token = bastion.opened(session, "id")
        id_claims = verify_id_token(
            id_token, await idp_jwks(http, fed.idp), issuer=fed.idp.issuer, audience="bastion-gateway"
        )
        assert session.id_token_expires_at == id_claims["exp"]
        assert session.sealed_id_token is not None
        assert id_token not in session.sealed_id_token

        started = time.time()
        id_jag = await bastion.source.id_jag(request_for(user_id))
        claims = await verified_id_jag(http, fed, id_jag)
        assert claims["sub"] == ALICE["sub"]  # the user's subject at the IdP
        assert claims["client_id"] == CLIENT_AT_UPSTREAM
        assert claims["resource"] == RESOURCE
        assert claims["scope"] == "mcp:read mcp:write"
        assert claims["email"] == ALICE["email"]
        assert claims["exp"] - claims["iat"] == 300
        assert started + 295 <= id_jag.expires_at <= time.time() + 300
        assert id_jag.scopes == ("mcp:read", "mcp:write")

        # the ID token was valid for long enough: no refresh at the IdP
        assert (await bastion.session(user_id)).sealed_refresh_token == session.sealed_refresh_token

        # what Bastion sent: its own client authentication at the IdP, the ID token as subject
        requests = fed.idp.id_jag_requests()[before:]
        assert requests == [
            {
                "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
                "requested_token_type": ID_JAG_TYPE,
                "subject_token_type": ID_TOKEN_TYPE,
                "audience": AUDIENCE,
                "resource": RESOURCE,
                "scope": "mcp:read mcp:write",
                "client_id": "bastion-gateway",
                "subject_token_present": True,
            }
        ]

        # no scope asked: none sent, none in the ID-JAG, the granted scopes unknown
        unscoped = await bastion.source.id_jag(request_for(user_id, scopes=()))
        assert "scope" not in await verified_id_jag(http, fed, unscoped)
        assert unscoped.scopes is None
        assert "scope" not in fed.idp.id_jag_requests()[-1]
        refresh_token = bastion.opened(session, "refresh")
    assert_no_secret_logged(caplog, id_jag.assertion, unscoped.assertion, id_token, refresh_token)


async def test_an_id_token_near_its_expiry_is_renewed_with_the_refresh_token(
    fed: Federation, http: httpx2.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    user_id, _ = await sign_in(http, fed)
    caplog.clear()  # from here on: Bastion's side only (the browser's cookies are not ours)
    async with bastion_side(fed) as bastion:
        old = await bastion.session(user_id)
        old_id_token, old_refresh = bastion.opened(old, "id"), bastion.opened(old, "refresh")
        # 59 seconds left: less than the minute an exchange needs
        await bastion.set_columns(old.session_id, id_token_expires_at=time.time() + 59)
        await asyncio.sleep(1.1)  # a new iat: the renewed ID token differs from the first

        id_jag = await bastion.source.id_jag(request_for(user_id))
        assert (await verified_id_jag(http, fed, id_jag))["sub"] == ALICE["sub"]

        renewed = await bastion.session(user_id)
        assert renewed.session_id == old.session_id
        new_id_token, new_refresh = bastion.opened(renewed, "id"), bastion.opened(renewed, "refresh")
        assert new_id_token != old_id_token
        assert new_refresh != old_refresh  # the IdP rotates refresh tokens: the new one is kept
        new_claims = verify_id_token(
            new_id_token, await idp_jwks(http, fed.idp), issuer=fed.idp.issuer, audience="bastion-gateway"
        )
        assert new_claims["sub"] == ALICE["sub"]
        assert renewed.id_token_expires_at == new_claims["exp"]
        assert renewed.checked_at > old.checked_at
        assert renewed.expires_at == old.expires_at  # a refresh never extends the session

        # the renewed token serves the next exchanges without another refresh
        again = await bastion.source.id_jag(request_for(user_id))
        assert again.assertion != id_jag.assertion
        assert (await bastion.session(user_id)).sealed_refresh_token == renewed.sealed_refresh_token

        # an ID token already expired is renewed the same way
        await bastion.set_columns(old.session_id, id_token_expires_at=time.time() - 10)
        await bastion.source.id_jag(request_for(user_id))
        assert bastion.opened(await bastion.session(user_id), "refresh") != new_refresh
    assert_no_secret_logged(caplog, old_refresh, new_refresh, id_jag.assertion)


async def test_concurrent_requests_renew_the_id_token_once(fed: Federation, http: httpx2.AsyncClient) -> None:
    user_id, _ = await sign_in(http, fed, "dave")
    async with bastion_side(fed) as bastion:
        session = await bastion.session(user_id)
        await bastion.set_columns(session.session_id, id_token_expires_at=time.time() - 1)
        results = await asyncio.gather(*(bastion.source.id_jag(request_for(user_id)) for _ in range(4)))
        assert len({r.assertion for r in results}) == 4
        # one refresh only: a rotated refresh token presented twice would end the grant at the IdP
        renewed = await bastion.session(user_id)
        assert renewed.sealed_refresh_token != session.sealed_refresh_token
        await bastion.set_columns(session.session_id, id_token_expires_at=time.time() - 1)
        await bastion.source.id_jag(request_for(user_id))  # the kept refresh token still works


async def test_a_refresh_by_the_mcp_client_stores_the_idps_new_id_token(
    fed: Federation, http: httpx2.AsyncClient
) -> None:
    user_id, tokens = await sign_in(http, fed)
    async with bastion_side(fed) as bastion:
        before = await bastion.session(user_id)
        await asyncio.sleep(1.1)  # a new iat: the IdP's new ID token differs from the first
        refreshed = await http.post(
            f"{fed.gateway.base}/token",
            data={
                "grant_type": "refresh_token",
                "refresh_token": tokens["refresh_token"],
                "client_id": tokens["client_id"],
            },
        )
        assert refreshed.status_code == 200, refreshed.text  # re-checked at the IdP (recheck_interval 0)
        after = await bastion.session(user_id)
        assert after.session_id == before.session_id
        assert after.checked_at > before.checked_at
        assert after.sealed_id_token != before.sealed_id_token
        assert bastion.opened(after, "id") != bastion.opened(before, "id")
        assert after.id_token_expires_at is not None
        assert after.id_token_expires_at > (before.id_token_expires_at or 0)


# -- sign in again ---------------------------------------------------------------------------


async def test_no_idp_session_means_signing_in_again(fed: Federation, http: httpx2.AsyncClient) -> None:
    user_id, _ = await sign_in(http, fed, "carol")
    async with bastion_side(fed) as bastion:
        await bastion.source.id_jag(request_for(user_id))
        assert await bastion.store.idp_sessions.delete_for_user(user_id) >= 1
        with pytest.raises(IdJagUnavailable) as ended:
            await bastion.source.id_jag(request_for(user_id))
        assert ended.value.sign_in is True
        label = bastion.providers["entra"].provider.label
        assert f"Sign in to Bastion again through {label}" in ended.value.message
        assert "eyJ" not in ended.value.detail

        with pytest.raises(IdJagUnavailable) as never:
            await bastion.source.id_jag(request_for("x_never_signed_in"))
        assert never.value.sign_in is True


async def test_an_expired_session_means_signing_in_again(fed: Federation, http: httpx2.AsyncClient) -> None:
    user_id, _ = await sign_in(http, fed, "carol")
    async with bastion_side(fed) as bastion:
        session = await bastion.session(user_id)
        await bastion.set_columns(session.session_id, expires_at=time.time() - 1)
        with pytest.raises(IdJagUnavailable) as ended:
            await bastion.source.id_jag(request_for(user_id))
        assert ended.value.sign_in is True


async def test_an_expired_id_token_without_refresh_token_means_signing_in_again(
    fed: Federation, http: httpx2.AsyncClient
) -> None:
    user_id, _ = await sign_in(http, fed, "carol")
    async with bastion_side(fed) as bastion:
        session = await bastion.session(user_id)
        await bastion.set_columns(
            session.session_id, sealed_refresh_token=None, id_token_expires_at=time.time() + 30
        )
        with pytest.raises(IdJagUnavailable) as ended:
            await bastion.source.id_jag(request_for(user_id))
        assert ended.value.sign_in is True
        # a session from before 0007 (no ID token at all) is no different
        await bastion.set_columns(session.session_id, sealed_id_token=None, id_token_expires_at=None)
        with pytest.raises(IdJagUnavailable) as old:
            await bastion.source.id_jag(request_for(user_id))
        assert old.value.sign_in is True


async def test_a_refresh_refused_by_the_idp_ends_the_session(
    fed: Federation, http: httpx2.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    user_id, _ = await sign_in(http, fed, "carol")
    caplog.clear()  # from here on: Bastion's side only (the browser's cookies are not ours)
    async with bastion_side(fed) as bastion:
        session = await bastion.session(user_id)
        refresh_token = bastion.opened(session, "refresh")
        await bastion.set_columns(session.session_id, id_token_expires_at=time.time() - 1)
        fed.idp.disable("carol")
        try:
            with pytest.raises(IdJagUnavailable) as refused:
                await bastion.source.id_jag(request_for(user_id))
        finally:
            fed.idp.enable("carol")
        assert refused.value.sign_in is True
        assert await bastion.store.idp_sessions.get(session.session_id) is None  # the session is over
    assert_no_secret_logged(caplog, refresh_token)


# -- the IdP refuses, or cannot be reached ----------------------------------------------------


async def test_the_idp_refusing_the_exchange_is_named_by_its_error_code(
    fed: Federation, http: httpx2.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    user_id, _ = await sign_in(http, fed)
    caplog.clear()  # from here on: Bastion's side only (the browser's cookies are not ours)
    description = "AADSTS99999: policy forbids <script>this</script> for tenant 1234"
    async with bastion_side(fed) as bastion:
        session = await bastion.session(user_id)
        refused = await refusal(
            bastion, fed, user_id, id_jag_error="invalid_grant", id_jag_error_description=description
        )
        assert refused.sign_in is False
        assert "invalid_grant" in refused.message
        assert AUDIENCE in refused.message
        assert "AADSTS99999" not in refused.message  # the IdP's description stays private
        assert "<script>" not in refused.message
        # refusing an exchange does not end the sign-in
        assert await bastion.store.idp_sessions.get(session.session_id) == session

        target = await refusal(bastion, fed, user_id, id_jag_audiences=["https://elsewhere.example"])
        assert "invalid_target" in target.message
        assert target.sign_in is False

        denied = await refusal(bastion, fed, user_id, id_jag_error="access_denied")
        assert "access_denied" in denied.message

        # step-up: a new sign-in can cure it
        step_up = await refusal(bastion, fed, user_id, id_jag_error="insufficient_user_authentication")
        assert step_up.sign_in is True
        assert "insufficient_user_authentication" in step_up.message

        await bastion.source.id_jag(request_for(user_id))  # and all is well again
        id_token = bastion.opened(session, "id")
    assert_no_secret_logged(caplog, id_token)


async def test_the_idp_down_is_temporary(fed: Federation, http: httpx2.AsyncClient) -> None:
    user_id, _ = await sign_in(http, fed)
    dead = f"http://127.0.0.1:{free_port()}/tenant-a/v2.0/.well-known/openid-configuration"

    def unreachable(resolved: ResolvedProvider) -> ResolvedProvider:
        return dataclasses.replace(resolved, discovery_url=dead)

    async with bastion_side(fed, unreachable) as bastion:
        session = await bastion.session(user_id)
        with pytest.raises(IdJagUnavailable) as down:
            await bastion.source.id_jag(request_for(user_id))
        assert down.value.sign_in is False
        assert "try again later" in down.value.message
        # an expired ID token cannot be renewed either; the session stays
        await bastion.set_columns(session.session_id, id_token_expires_at=time.time() - 1)
        with pytest.raises(IdJagUnavailable) as renew:
            await bastion.source.id_jag(request_for(user_id))
        assert renew.value.sign_in is False
        assert await bastion.store.idp_sessions.get(session.session_id) is not None


async def test_the_idp_too_slow_is_temporary(fed: Federation, http: httpx2.AsyncClient) -> None:
    user_id, _ = await sign_in(http, fed)

    def impatient(resolved: ResolvedProvider) -> ResolvedProvider:
        return dataclasses.replace(resolved, config=resolved.config.model_copy(update={"timeout": 1.0}))

    async with bastion_side(fed, impatient) as bastion:
        await bastion.providers["entra"].metadata()
        slow = await refusal(bastion, fed, user_id, delay_ms=3000, delay_endpoints=["token"])
        assert slow.sign_in is False
        assert "did not answer in time" in slow.message
