"""Per-user downstream credentials against a real OAuth provider (issue #7): panva's oidc-provider
as the SaaS provider (``run_saas_provider``), Bastion's provider client driving its real sign-in
pages (authorization code + PKCE), and the ConnectionVault on the real memory and SQLite stores.

The provider counts the token requests it gets, so "exactly one refresh" is what the provider
saw, not what Bastion believes it did."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

from bastion.config.connections import ApiKeyConnection, OAuthConnection
from bastion.core.errors import UpstreamCredentialsUnavailable
from bastion.core.records import VaultRecord
from bastion.store import Store, open_store
from bastion.vault.connections import ConnectionVault
from bastion.vault.envelope import MasterKeys, VaultCipher
from bastion.vault.model import ConnectionMissing, ProviderRefused, ProviderTokens
from bastion.vault.presets import ResolvedConnection, resolve
from bastion.vault.provider import Providers
from tests.support.idp import (
    SAAS_CLIENT_ID,
    SAAS_CLIENT_SECRET,
    SaasProvider,
    idp_refresh,
    idp_sign_in,
    pkce_pair,
    query_params,
    run_saas_provider,
)

pytestmark = [pytest.mark.node, pytest.mark.timeout(90)]

CALLBACK = "http://127.0.0.1:53997/connect/callback"
SCOPES = ["openid", "email", "crm:read", "crm:write", "offline_access"]


@pytest.fixture(scope="module")
def saas(flow_tmp: Path) -> Iterator[SaasProvider]:
    with run_saas_provider(flow_tmp / "vault-saas", redirect_uris=[CALLBACK]) as provider:
        yield provider


@pytest.fixture(scope="module")
def crm(saas: SaasProvider) -> ResolvedConnection:
    """A generic connection: endpoints from the provider's metadata (discovery)."""
    config = {
        "name": "crm",
        "type": "oauth",
        "label": "CRM",
        "client_id": SAAS_CLIENT_ID,
        "client_secret": SAAS_CLIENT_SECRET,
        "issuer": saas.issuer,
        "scopes": SCOPES,
        "account_claim": "email",
    }
    return resolve(OAuthConnection.model_validate(config))


DESK = resolve(ApiKeyConnection.model_validate({"name": "desk", "type": "api_key", "label": "Desk"}))


@pytest.fixture
async def providers(crm: ResolvedConnection) -> AsyncIterator[Providers]:
    opened = Providers([crm])
    try:
        yield opened
    finally:
        await opened.aclose()


@pytest.fixture(params=["memory", "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    opened = await open_store("memory://" if request.param == "memory" else f"sqlite:///{tmp_path}/b.db")
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture(scope="module")
def cipher() -> VaultCipher:
    return VaultCipher(MasterKeys(os.urandom(32)))


def vault_of(
    store: Store, providers: Providers, crm: ResolvedConnection, cipher: VaultCipher, **kw: Any
) -> ConnectionVault:
    return ConnectionVault(
        store.vault, cipher, providers, [crm, DESK], replica_id=kw.pop("replica", "r1"), **kw
    )


async def connect(providers: Providers, login: str = "alice") -> ProviderTokens:
    """The connect flow's provider half: Bastion's authorization URL, the user signing in at the
    provider's real pages in a fresh browser, and the code redeemed with the PKCE verifier."""
    client = providers.get("crm")
    assert client is not None
    await client.discover()
    verifier, challenge = pkce_pair()
    state = secrets.token_urlsafe(16)
    url = client.authorization_url(state, challenge, CALLBACK)
    async with httpx2.AsyncClient(timeout=20) as browser:
        callback = query_params(await idp_sign_in(browser, url, login=login, stop_prefix=CALLBACK))
    assert callback.get("state") == state, callback
    assert "code" in callback, callback
    return await client.redeem(callback["code"], verifier, CALLBACK)


async def connected(
    vault: ConnectionVault, providers: Providers, *, expires_at: float | None, login: str = "alice"
) -> ProviderTokens:
    tokens = await connect(providers, login)
    await vault.save_oauth(login, "crm", dataclasses.replace(tokens, expires_at=expires_at))
    return tokens


def refreshes(saas: SaasProvider) -> int:
    return saas.grant_counts().requests["refresh_token"]


async def stored(store: Store, user: str = "alice") -> VaultRecord:
    record = await store.vault.get(user, "crm")
    assert record is not None
    return record


# -- the provider client against the real provider ---------------------------------------------


async def test_code_pkce_redeem_refresh_revoke(saas: SaasProvider, providers: Providers) -> None:
    before = time.time()
    tokens = await connect(providers)
    assert tokens.account == "alice@crm.test"  # the ID token's claim (userinfo refuses resource tokens)
    assert tokens.refresh_token
    assert tokens.access_token != tokens.refresh_token
    assert tokens.expires_at is not None
    assert before + 3500 < tokens.expires_at <= time.time() + 3600
    assert tokens.scopes is not None
    assert {"crm:read", "crm:write"} <= set(tokens.scopes)
    client = providers.get("crm")
    assert client is not None
    refreshed = await client.refresh(tokens.refresh_token)
    assert refreshed.access_token != tokens.access_token
    assert refreshed.refresh_token
    assert refreshed.refresh_token != tokens.refresh_token
    assert await client.revoke(refreshed.refresh_token, "refresh_token") is True
    with pytest.raises(
        ProviderRefused, match=r"CRM no longer accepts the stored authorization \(invalid_grant\)"
    ):
        await client.refresh(refreshed.refresh_token)


# -- single flight -----------------------------------------------------------------------------


async def test_fifty_concurrent_calls_refresh_once(
    saas: SaasProvider, store: Store, providers: Providers, crm: ResolvedConnection, cipher: VaultCipher
) -> None:
    vault = vault_of(store, providers, crm, cipher)
    old = await connected(vault, providers, expires_at=time.time() - 5)
    saas.reset_grants()
    tokens = await asyncio.gather(*(vault.access_token("alice", "crm") for _ in range(50)))
    assert refreshes(saas) == 1
    assert len(set(tokens)) == 1
    assert tokens[0] != old.access_token
    record = await stored(store)
    secret = cipher.open(record)
    assert secret["access_token"] == tokens[0]
    assert secret["refresh_token"] != old.refresh_token
    assert record.lease_owner is None
    assert record.version == 2
    assert record.status == "ok"
    assert record.expires_at is not None
    assert record.expires_at > time.time() + 3000
    assert await vault.access_token("alice", "crm") == tokens[0]  # fresh now: no refresh
    assert refreshes(saas) == 1


@pytest.mark.parametrize("backend", ["sqlite", "memory"])
async def test_two_replicas_refresh_once(
    saas: SaasProvider, crm: ResolvedConnection, cipher: VaultCipher, tmp_path: Path, backend: str
) -> None:
    url = f"sqlite:///{tmp_path}/shared.db" if backend == "sqlite" else "memory://"
    first = await open_store(url)
    second = await open_store(url) if backend == "sqlite" else first  # memory: one process, one store
    providers_a, providers_b = Providers([crm]), Providers([crm])
    try:
        a = vault_of(first, providers_a, crm, cipher, replica="replica-a")
        b = vault_of(second, providers_b, crm, cipher, replica="replica-b")
        old = await connected(a, providers_a, expires_at=time.time() - 5)
        saas.reset_grants()
        calls = [v.access_token("alice", "crm") for _ in range(25) for v in (a, b)]
        tokens = await asyncio.gather(*calls)
        assert refreshes(saas) == 1
        assert len(set(tokens)) == 1
        assert tokens[0] != old.access_token
    finally:
        await providers_a.aclose()
        await providers_b.aclose()
        await first.close()
        if second is not first:
            await second.close()


async def test_a_lease_held_elsewhere(
    saas: SaasProvider, store: Store, providers: Providers, crm: ResolvedConnection, cipher: VaultCipher
) -> None:
    """A token still valid is used while another replica renews it; an expired one waits for the
    other replica, and takes over when its lease lapses (it crashed)."""
    vault = vault_of(store, providers, crm, cipher)
    old = await connected(vault, providers, expires_at=time.time() + 30)  # within the 60 s margin
    await store.vault.take_lease("alice", "crm", "ghost", time.time() + 1.0, time.time())
    saas.reset_grants()
    assert await vault.access_token("alice", "crm") == old.access_token
    assert refreshes(saas) == 0
    record = await stored(store)
    await store.vault.replace(
        dataclasses.replace(record, expires_at=1.0, version=record.version + 1), record.version
    )
    started = time.monotonic()
    fresh = await vault.access_token("alice", "crm")
    assert fresh != old.access_token
    assert time.monotonic() - started >= 0.5
    assert refreshes(saas) == 1


async def test_a_caller_that_gives_up_does_not_cancel_the_refresh(
    saas: SaasProvider, store: Store, providers: Providers, crm: ResolvedConnection, cipher: VaultCipher
) -> None:
    vault = vault_of(store, providers, crm, cipher)
    await connected(vault, providers, expires_at=time.time() - 5)
    saas.reset_grants()
    with saas.changed(delay_ms=600, delay_endpoints=["token"]):
        impatient = asyncio.ensure_future(vault.access_token("alice", "crm"))
        await asyncio.sleep(0.2)
        impatient.cancel()
        token = await vault.access_token("alice", "crm")
    assert refreshes(saas) == 1
    assert cipher.open(await stored(store))["access_token"] == token  # the rotated tokens were kept


# -- when the provider says no, or nothing -----------------------------------------------------


async def test_provider_unavailable_keeps_everything(
    saas: SaasProvider, store: Store, providers: Providers, crm: ResolvedConnection, cipher: VaultCipher
) -> None:
    vault = vault_of(store, providers, crm, cipher)
    old = await connected(vault, providers, expires_at=time.time() + 30)
    before = await stored(store)
    with saas.changed(refresh_error={"status": 503}):
        assert await vault.access_token("alice", "crm") == old.access_token  # still valid: used
        after = await stored(store)
        assert (after.sealed, after.version, after.status) == (before.sealed, before.version, "ok")
        await store.vault.replace(
            dataclasses.replace(after, expires_at=time.time() - 1, version=after.version + 1), after.version
        )
        with pytest.raises(
            UpstreamCredentialsUnavailable, match="CRM could not be reached; try again shortly"
        ):
            await vault.access_token("alice", "crm")
        record = await stored(store)
        assert record.status == "ok"
        assert record.sealed == before.sealed
        assert record.lease_owner is None
    fresh = await vault.access_token("alice", "crm")  # back: the kept refresh token still works
    assert fresh != old.access_token


async def test_a_refused_refresh_token_asks_to_reconnect(
    saas: SaasProvider, store: Store, providers: Providers, crm: ResolvedConnection, cipher: VaultCipher
) -> None:
    vault = vault_of(store, providers, crm, cipher)
    await connected(vault, providers, expires_at=time.time() - 5)
    saas.reset_grants()
    with saas.changed(refresh_error="invalid_grant"):
        with pytest.raises(ConnectionMissing) as missing:
            await vault.access_token("alice", "crm")
        assert missing.value.reconnect
        assert missing.value.connection == "crm"
        assert (await stored(store)).status == "reconnect"
        with pytest.raises(ConnectionMissing) as again:
            await vault.access_token("alice", "crm")
        assert again.value.reconnect
    assert refreshes(saas) == 1  # the second call did not ask the provider
    assert [(v.connection, v.status) for v in await vault.list("alice")] == [
        ("crm", "reconnect"),
        ("desk", "not_connected"),
    ]
    fresh = await connected(vault, providers, expires_at=None)  # reconnecting replaces the record
    assert (await stored(store)).status == "ok"
    assert await vault.access_token("alice", "crm") == fresh.access_token


async def test_expired_without_a_refresh_token_asks_to_reconnect(
    store: Store, providers: Providers, crm: ResolvedConnection, cipher: VaultCipher
) -> None:
    vault = vault_of(store, providers, crm, cipher)
    await vault.save_oauth(
        "alice", "crm", ProviderTokens(access_token="at-only", expires_at=time.time() + 30)
    )
    assert await vault.access_token("alice", "crm") == "at-only"  # valid: used until it expires
    await vault.save_oauth("alice", "crm", ProviderTokens(access_token="at-only", expires_at=time.time() - 1))
    with pytest.raises(ConnectionMissing) as missing:
        await vault.access_token("alice", "crm")
    assert missing.value.reconnect
    assert (await stored(store)).status == "reconnect"


@pytest.mark.parametrize("rotation", [True, False])
async def test_refresh_token_rotation_or_not(
    saas: SaasProvider,
    store: Store,
    providers: Providers,
    crm: ResolvedConnection,
    cipher: VaultCipher,
    rotation: bool,
) -> None:
    vault = vault_of(store, providers, crm, cipher)
    with saas.changed(refresh_rotation=rotation):
        old = await connected(vault, providers, expires_at=time.time() - 5)
        saas.reset_grants()
        first = await vault.access_token("alice", "crm")
        kept = cipher.open(await stored(store))["refresh_token"]
        assert (kept != old.refresh_token) is rotation  # not rotated: the old one is kept
        await vault.forget_access_token("alice", "crm")
        second = await vault.access_token("alice", "crm")
        assert second not in (first, old.access_token)
        assert refreshes(saas) == 2 == saas.grant_counts().succeeded["refresh_token"]


async def test_forget_makes_the_next_call_refresh(
    saas: SaasProvider, store: Store, providers: Providers, crm: ResolvedConnection, cipher: VaultCipher
) -> None:
    vault = vault_of(store, providers, crm, cipher)
    old = await connected(vault, providers, expires_at=None)  # like Salesforce: no expires_in
    saas.reset_grants()
    assert await vault.access_token("alice", "crm") == old.access_token
    await vault.forget_access_token("alice", "crm")  # the upstream answered 401
    assert (await stored(store)).status == "ok"
    assert await vault.access_token("alice", "crm") != old.access_token
    assert refreshes(saas) == 1
    await vault.save_api_key("alice", "desk", "key-1")
    await vault.forget_access_token("alice", "desk")  # an API key cannot be renewed: unchanged
    assert await vault.access_token("alice", "desk") == "key-1"


# -- what is stored, shown and removed ---------------------------------------------------------


async def test_tampered_rows_are_refused(
    saas: SaasProvider,
    store: Store,
    providers: Providers,
    crm: ResolvedConnection,
    cipher: VaultCipher,
    caplog: pytest.LogCaptureFixture,
) -> None:
    vault = vault_of(store, providers, crm, cipher)
    tokens = await connected(vault, providers, expires_at=time.time() - 5)
    record = await stored(store)
    saas.reset_grants()
    caplog.set_level(logging.INFO, logger="bastion.vault")
    altered = record.sealed[:-6] + ("AAAAAA" if not record.sealed.endswith("AAAAAA") else "BBBBBB")
    moved = dataclasses.replace(record, user_id="bob")  # alice's row copied to bob
    unknown = dataclasses.replace(record, user_id="carol", key_id="0" * 16)
    await store.vault.put(dataclasses.replace(record, sealed=altered))
    await store.vault.put(moved)
    await store.vault.put(unknown)
    for user in ("alice", "bob", "carol"):
        with pytest.raises(ConnectionMissing) as missing:
            await vault.access_token(user, "crm")
        assert missing.value.reconnect
    assert refreshes(saas) == 0  # never used, not even to refresh
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 3
    assert all("refused" in r.getMessage() for r in errors)
    for secret in (tokens.access_token, tokens.refresh_token or "-", record.sealed[3:20]):
        assert secret not in caplog.text


async def test_list_disconnect_and_api_keys(
    saas: SaasProvider, store: Store, providers: Providers, crm: ResolvedConnection, cipher: VaultCipher
) -> None:
    now = [time.time()]
    vault = vault_of(store, providers, crm, cipher, clock=lambda: now[0])
    assert [(v.connection, v.status) for v in await vault.list("alice")] == [
        ("crm", "not_connected"),
        ("desk", "not_connected"),
    ]
    tokens = await connected(vault, providers, expires_at=None)
    await vault.save_api_key("alice", "desk", "desk-key-1")
    assert await vault.access_token("alice", "desk") == "desk-key-1"
    first_use = (await stored(store)).last_used_at
    await vault.access_token("alice", "crm")
    used = (await stored(store)).last_used_at
    now[0] += 30
    await vault.access_token("alice", "crm")
    assert (await stored(store)).last_used_at == used != first_use  # at most one write a minute
    now[0] += 31
    await vault.access_token("alice", "crm")
    assert (await stored(store)).last_used_at == now[0]
    views = await vault.list("alice")
    crm_view, desk_view = views
    assert (crm_view.status, crm_view.kind, crm_view.account, crm_view.label) == (
        "ok",
        "oauth",
        "alice@crm.test",
        "CRM",
    )
    assert (desk_view.status, desk_view.kind, desk_view.scopes) == ("ok", "api_key", ())
    assert tokens.access_token not in repr(views)
    assert "desk-key-1" not in repr(views)
    assert await vault.disconnect("alice", "crm") is True
    assert await store.vault.get("alice", "crm") is None
    async with httpx2.AsyncClient(timeout=20) as http:  # revoked at the provider too
        answer = await idp_refresh(http, saas, client=saas.client, refresh_token=tokens.refresh_token or "")
    assert answer.status_code == 400
    assert answer.json()["error"] == "invalid_grant"
    assert await vault.disconnect("alice", "crm") is False
    assert await vault.disconnect("alice", "desk") is True
    with pytest.raises(ConnectionMissing) as missing:
        await vault.access_token("alice", "desk")
    assert not missing.value.reconnect
    with pytest.raises(ValueError, match="not a configured api_key connection"):
        await vault.save_api_key("alice", "crm", "k")
