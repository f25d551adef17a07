"""Salesforce's ``instance_url`` (the API base of the user's org): read from the token response
only for presets that keep it, refused unless it is a plain https URL, sealed with the tokens
(no new column), kept across refreshes that do not resend it, and presented through an upstream
template's ``{instance_url}``."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from typing import Any

import httpx2
import pytest

from bastion.config.connections import OAuthConnection
from bastion.config.upstream_auth import UserApiKeyAuth, UserOAuthAuth
from bastion.core.errors import ConfigError, ConnectionRequired
from bastion.core.records import Principal
from bastion.store import Store, open_store
from bastion.vault.connections import ConnectionVault
from bastion.vault.envelope import MasterKeys, VaultCipher
from bastion.vault.intents import ConnectIntents
from bastion.vault.model import ProviderTokens, ProviderUnavailable
from bastion.vault.presets import ResolvedConnection, resolve
from bastion.vault.provider import Providers
from bastion.vault.sources import ConnectionCredentials, Presenter
from bastion.vault.token_response import https_base

BASE = "https://login.example"
ORG = "https://acme.my.salesforce.com"
ALICE = Principal(subject="alice", client_id="claude", authenticated=True)


def oauth(name: str, preset: str, **kw: Any) -> ResolvedConnection:
    config = {
        "name": name,
        "type": "oauth",
        "preset": preset,
        "label": name,
        "client_id": "cid",
        "client_secret": "secret",
        "authorization_endpoint": f"{BASE}/authorize",
        "token_endpoint": f"{BASE}/token",
        **kw,
    }
    return resolve(OAuthConnection.model_validate(config))


SALESFORCE = oauth("sf", "salesforce")
GENERIC = oauth("wiki", "oauth")


def answering(body: dict[str, Any]) -> httpx2.AsyncClient:
    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, json=body)

    return httpx2.AsyncClient(transport=httpx2.MockTransport(handler))


async def refreshed(connection: ResolvedConnection, body: dict[str, Any]) -> ProviderTokens:
    async with answering(body) as http:
        return await Providers([connection], http=http).refresh(connection.name, "rt-0")


# -- reading it --------------------------------------------------------------------------------


def test_only_the_presets_that_keep_it_read_it() -> None:
    kept = {
        c.name: c.oauth.keeps_instance_url for c in (SALESFORCE, GENERIC, oauth("gh", "github")) if c.oauth
    }
    assert kept == {"sf": True, "wiki": False, "gh": False}


async def test_a_salesforce_answer_keeps_its_instance_url() -> None:
    body = {"access_token": "00D!at", "token_type": "Bearer", "instance_url": ORG + "/"}
    tokens = await refreshed(SALESFORCE, body)
    assert (tokens.access_token, tokens.instance_url) == ("00D!at", ORG)  # without the trailing /
    assert "00D!at" not in repr(tokens)
    assert (await refreshed(SALESFORCE, {"access_token": "at"})).instance_url is None  # not sent


async def test_another_preset_ignores_it() -> None:
    body = {"access_token": "at", "token_type": "Bearer", "instance_url": "http://evil.example"}
    assert (await refreshed(GENERIC, body)).instance_url is None


@pytest.mark.parametrize(
    "value",
    [
        "http://acme.my.salesforce.com",
        "https://",
        "https://user:pw@acme.my.salesforce.com",
        "https://evil.example@acme.my.salesforce.com",
        "https://acme.my.salesforce.com?x=1",
        "https://acme.my.salesforce.com?",
        "https://acme.my.salesforce.com#frag",
        "https://acme.my.salesforce.com:99999",
        "https://acme.my.salesforce.com\\@evil.example",
        "https://acme my.salesforce.com",
        "https://acme.my.salesforce.com\r\nx-evil: 1",
        "javascript:alert(1)",
        "https://" + "a" * 2100 + ".example",
        42,
        ["https://acme.my.salesforce.com"],
        "",
    ],
)
async def test_an_instance_url_that_is_not_a_plain_https_url_makes_the_answer_unusable(value: object) -> None:
    assert https_base(value) is None
    with pytest.raises(ProviderUnavailable, match="unusable answer"):
        await refreshed(SALESFORCE, {"access_token": "at", "instance_url": value})


@pytest.mark.parametrize(
    ("value", "kept"),
    [
        (ORG, ORG),
        (ORG + "/", ORG),
        ("https://ACME.my.salesforce.com:443", "https://ACME.my.salesforce.com:443"),
        ("https://eu5.salesforce.com/base/", "https://eu5.salesforce.com/base"),
    ],
)
def test_plain_https_urls_are_kept(value: str, kept: str) -> None:
    assert https_base(value) == kept


# -- storing it --------------------------------------------------------------------------------


class Refresher:
    def __init__(self) -> None:
        self.next = ProviderTokens(access_token="at-2", expires_at=None)

    async def refresh(self, connection: str, refresh_token: str) -> ProviderTokens:
        return self.next


@pytest.fixture
async def store() -> AsyncIterator[Store]:
    opened = await open_store("memory://")
    try:
        yield opened
    finally:
        await opened.close()


async def test_the_vault_seals_it_with_the_tokens_and_keeps_it_across_refreshes(store: Store) -> None:
    cipher = VaultCipher(MasterKeys(os.urandom(32)))
    refresher = Refresher()
    now = [1000.0]
    vault = ConnectionVault(
        store.vault, cipher, refresher, [SALESFORCE, GENERIC], replica_id="r1", clock=lambda: now[0]
    )
    assert [vault.keeps_instance_url(n) for n in ("sf", "wiki", "nope")] == [True, False, False]
    tokens = ProviderTokens(access_token="at-1", refresh_token="rt-1", expires_at=1100.0, instance_url=ORG)
    await vault.save_oauth("alice", "sf", tokens)
    record = await store.vault.get("alice", "sf")
    assert record is not None
    assert cipher.open(record) == {"access_token": "at-1", "refresh_token": "rt-1", "instance_url": ORG}
    assert ORG not in repr(record)  # inside the sealed JSON, not a column
    credential = await vault.credential("alice", "sf")
    assert (credential.secret, credential.instance_url) == ("at-1", ORG)
    assert await vault.access_token("alice", "sf") == "at-1"

    now[0] = 1090.0  # within the refresh margin: refreshed, and the answer has no instance_url
    refresher.next = ProviderTokens(access_token="at-2", expires_at=5000.0)
    assert (await vault.credential("alice", "sf")).instance_url == ORG
    record = await store.vault.get("alice", "sf")
    assert record is not None
    assert cipher.open(record) == {"access_token": "at-2", "refresh_token": "rt-1", "instance_url": ORG}

    now[0] = 4990.0  # a refresh that names a new one replaces it
    moved = "https://acme2.my.salesforce.com"
    refresher.next = ProviderTokens(access_token="at-3", expires_at=9000.0, instance_url=moved)
    credential = await vault.credential("alice", "sf")
    assert (credential.secret, credential.instance_url) == ("at-3", moved)

    await vault.save_oauth("alice", "wiki", ProviderTokens(access_token="w-1"))
    assert (await vault.credential("alice", "wiki")).instance_url is None
    listed = {v.connection: v for v in await vault.list("alice")}
    assert listed["sf"].status == "ok"
    assert ORG not in json.dumps([str(v) for v in listed.values()])  # "My connections": not shown


# -- presenting it -------------------------------------------------------------------------------


def user_oauth(template: str, connection: str = "sf", **kw: Any) -> UserOAuthAuth:
    return UserOAuthAuth.model_validate(
        {"type": "user_oauth", "connection": connection, "template": template, **kw}
    )


def test_the_template_puts_it_in_the_header() -> None:
    presenter = Presenter(user_oauth("{instance_url} Bearer {token}", header="x-sf"), stdio=False)
    assert presenter.needs_instance_url
    sent = presenter.present("t{instance_url}", "alice", instance_url=ORG)
    assert sent.headers == (("x-sf", f"{ORG} Bearer t{{instance_url}}"),)  # the token is not expanded
    plain = Presenter(user_oauth("Bearer {token}"), stdio=False)
    assert not plain.needs_instance_url
    assert plain.present("t", None, instance_url=ORG).headers == (("authorization", "Bearer t"),)
    stdio = Presenter(user_oauth("{instance_url} {token}", env="SF_TOKEN"), stdio=True)
    assert not stdio.needs_instance_url  # the template is for headers: a process gets the token
    assert stdio.present("t", None, instance_url=ORG).env == (("SF_TOKEN", "t"),)


async def test_an_upstream_gets_it_and_a_credential_stored_without_it_asks_to_reconnect(
    store: Store,
) -> None:
    vault = ConnectionVault(
        store.vault,
        VaultCipher(MasterKeys(os.urandom(32))),
        Refresher(),
        [SALESFORCE, GENERIC],
        replica_id="r1",
    )
    intents = ConnectIntents(store.grants, "https://bastion.example")

    def source(auth: UserOAuthAuth | UserApiKeyAuth) -> ConnectionCredentials:
        return ConnectionCredentials(
            "crm", auth, label="Salesforce", tokens=vault, intents=intents, stdio=False
        )

    crm = source(user_oauth("Bearer {token}; instance={instance_url}"))
    await vault.save_oauth("alice", "sf", ProviderTokens(access_token="at-1", instance_url=ORG))
    sent = await crm.credential(ALICE)
    assert sent.headers == (("authorization", f"Bearer at-1; instance={ORG}"),)

    await vault.save_oauth("alice", "sf", ProviderTokens(access_token="at-old"))  # stored before
    with pytest.raises(ConnectionRequired) as required:
        await crm.credential(ALICE)
    assert "Reconnect your Salesforce account" in str(required.value)

    with pytest.raises(ConfigError, match=r"uses \{instance_url\}, but connection 'wiki' keeps none"):
        source(user_oauth("{instance_url} {token}", connection="wiki"))
    api_key = UserApiKeyAuth.model_validate(
        {"type": "user_api_key", "connection": "desk", "template": "{instance_url}:{token}"}
    )
    with pytest.raises(ConfigError, match="connection 'desk' keeps none"):
        source(api_key)
