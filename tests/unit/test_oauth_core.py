"""The authorization server's building blocks without HTTP: scopes, opaque values, the
authorization request's validation order, the master key and the key-ring holder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bastion.config.model import Settings
from bastion.core.records import ClientRecord
from bastion.oauth.authorize import (
    NotRedirectable,
    Redirectable,
    parse_authorization_request,
    success_location,
    with_query,
)
from bastion.oauth.errors import InvalidScope
from bastion.oauth.keystore import KeyRingHolder, MasterKeyError, load_master_key
from bastion.oauth.opaque import derive_key, digest, new_opaque, successor
from bastion.oauth.registry import ClientRegistry
from bastion.oauth.scopes import grant_scopes, narrowed, parse_scope
from bastion.store.memory import MemoryStore

ISSUER = "https://gw.example.com"
RESOURCE = ISSUER + "/mcp/demo"
CHALLENGE = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
REDIRECT = "http://127.0.0.1:4000/cb"


def test_scope_parsing_and_granting() -> None:
    assert parse_scope(None) == ()
    assert parse_scope("  mcp  mcp read ") == ("mcp", "read")
    with pytest.raises(InvalidScope):
        parse_scope('bad"scope')
    assert grant_scopes((), known=["mcp", "read"], client_scope=None) == ("mcp", "read")
    assert grant_scopes((), known=["mcp", "read"], client_scope="read") == ("read",)
    assert grant_scopes(("mcp", "offline_access"), known=["mcp"], client_scope=None) == (
        "mcp",
        "offline_access",
    )
    with pytest.raises(InvalidScope, match="admin"):
        grant_scopes(("admin",), known=["mcp"], client_scope=None)
    with pytest.raises(InvalidScope):
        grant_scopes(("mcp",), known=["mcp", "read"], client_scope="read")
    assert narrowed((), ["mcp", "read"]) == ("mcp", "read")
    assert narrowed(("read",), ["mcp", "read"]) == ("read",)
    with pytest.raises(InvalidScope):
        narrowed(("write",), ["mcp", "read"])


def test_opaque_values_are_stored_as_digests_and_successors_are_reproducible() -> None:
    token = new_opaque()
    assert len(token) >= 43
    assert digest(token) != token
    assert len(digest(token)) == 64
    key = derive_key(b"k" * 32, "refresh-successor")
    assert successor(key, token) == successor(key, token)
    assert successor(key, token) != successor(derive_key(b"k" * 32, "other"), token)
    assert successor(key, token) != successor(key, new_opaque())


def test_redirect_locations_keep_the_registered_query() -> None:
    assert with_query("https://app/cb?x=1", {"code": "c", "state": None}) == "https://app/cb?x=1&code=c"
    location = success_location("https://app/cb", "c o", state="s&t", issuer=ISSUER)
    assert location == "https://app/cb?code=c+o&state=s%26t&iss=https%3A%2F%2Fgw.example.com"


async def _registry() -> ClientRegistry:
    store = MemoryStore()
    await store.clients.put(
        ClientRecord(
            client_id="app",
            source="config",
            client_name="App",
            redirect_uris=(REDIRECT,),
            grant_types=("authorization_code",),
            token_endpoint_auth_method="none",
        )
    )
    return ClientRegistry(store.clients, cimd=None)


def _query(**changes: str | None) -> dict[str, list[str]]:
    base: dict[str, str | None] = {
        "response_type": "code",
        "client_id": "app",
        "redirect_uri": REDIRECT,
        "code_challenge": CHALLENGE,
        "code_challenge_method": "S256",
        "resource": RESOURCE,
        "state": "xyz",
    }
    base.update(changes)
    return {k: [v] for k, v in base.items() if v is not None}


async def _parse(query: dict[str, list[str]]) -> object:
    return await parse_authorization_request(
        query, registry=await _registry(), issuer=ISSUER, resources=[RESOURCE], scopes=["mcp"]
    )


async def test_a_valid_request_gets_default_scopes() -> None:
    _client, request = await _parse(_query())  # type: ignore[misc]
    assert request.scopes == ("mcp",)
    assert request.resource == RESOURCE
    # loopback redirect URIs match on any port (RFC 8252 §7.3)
    _client, other = await _parse(_query(redirect_uri="http://127.0.0.1:5999/cb"))  # type: ignore[misc]
    assert other.redirect_uri == "http://127.0.0.1:5999/cb"


@pytest.mark.parametrize(
    "changes",
    [
        {"client_id": "nobody"},
        {"client_id": None},
        {"redirect_uri": "http://127.0.0.1:4000/other"},
        {"redirect_uri": "https://evil.example/cb"},
    ],
)
async def test_errors_before_the_redirect_uri_is_trusted_are_never_redirected(
    changes: dict[str, str | None],
) -> None:
    with pytest.raises(NotRedirectable):
        await _parse(_query(**changes))


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"code_challenge": None}, "invalid_request"),
        ({"code_challenge_method": "plain"}, "invalid_request"),
        ({"response_type": "token"}, "unsupported_response_type"),
        ({"resource": None}, "invalid_target"),
        ({"resource": ISSUER + "/mcp/other"}, "invalid_target"),
        ({"scope": "admin"}, "invalid_scope"),
        ({"prompt": "select_account none"}, "invalid_request"),
        ({"response_mode": "fragment"}, "invalid_request"),
    ],
)
async def test_later_errors_go_back_with_state_and_iss(changes: dict[str, str | None], error: str) -> None:
    with pytest.raises(Redirectable) as caught:
        await _parse(_query(**changes))
    location = caught.value.location
    assert location.startswith(REDIRECT + "?")
    assert f"error={error}" in location
    assert "state=xyz" in location
    assert "iss=https%3A%2F%2Fgw.example.com" in location


def test_master_key_from_config_file_or_generated(tmp_path: Path) -> None:
    key_file = tmp_path / "master.key"
    sqlite = Settings(storage=f"sqlite:///{tmp_path}/b.db", auth={"master_key_file": str(key_file)})  # type: ignore[arg-type]
    key = load_master_key(sqlite)
    assert len(key) == 32
    assert oct(os.stat(key_file).st_mode & 0o777) == "0o600"
    assert load_master_key(sqlite) == key  # read back, not regenerated
    postgres = Settings(
        storage="postgresql://u@h/db",
        auth={"master_key_file": str(tmp_path / "absent.key")},  # type: ignore[arg-type]
    )
    with pytest.raises(MasterKeyError, match="every replica must use the same key"):
        load_master_key(postgres)
    given = Settings(auth={"master_key": "00" * 32})  # type: ignore[arg-type]
    assert load_master_key(given) == bytes(32)
    with pytest.raises(MasterKeyError, match=r"auth\.master_key"):
        load_master_key(Settings(auth={"master_key": "short"}))  # type: ignore[arg-type]


async def test_key_ring_holder_persists_and_refuses_a_wrong_master_key() -> None:
    store = MemoryStore()
    holder = KeyRingHolder(store, b"a" * 32, alg="ES256", max_token_lifetime_s=900)
    ring = await holder.load()
    again = await KeyRingHolder(store, b"a" * 32, alg="ES256", max_token_lifetime_s=900).load()
    assert again.active.kid == ring.active.kid
    new = await holder.rotate("EdDSA")
    other = KeyRingHolder(store, b"a" * 32, alg="ES256", max_token_lifetime_s=900)
    await other.load()
    assert other.ring.active.kid == new.kid
    assert other.verification_key(ring.active.kid) is not None  # the old key still verifies
    with pytest.raises(MasterKeyError, match="another master key"):
        await KeyRingHolder(store, b"b" * 32, alg="ES256", max_token_lifetime_s=900).load()


def test_application_type_is_inferred_only_when_asked() -> None:
    from bastion.oauth.registration import _with_application_type

    loopback = {"redirect_uris": ["http://127.0.0.1/cb", "http://localhost:9/x"]}
    assert _with_application_type(loopback) == {**loopback, "application_type": "native"}
    web = {"redirect_uris": ["https://app.example/cb", "http://127.0.0.1/cb"]}
    assert _with_application_type(web) == {**web, "application_type": "web"}
    given = {"redirect_uris": ["https://app.example/cb"], "application_type": "native"}
    assert _with_application_type(given) is given
    assert _with_application_type({"redirect_uris": []}) == {"redirect_uris": []}
    assert _with_application_type("not an object") == "not an object"
