"""``upstream_oauth`` (issue #7): Bastion as the MCP client of an OAuth-protected upstream.
Discovery, PKCE and issuer checks, registration (DCR, CIMD, static) and its reuse, against an
authorization server and upstream played by a real HTTP server on loopback (tests/unit/
test_vault_provider.py's ``Hostile``). The flow against a real oidc-provider is
tests/flows/test_upstream_oauth.py."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx2
import pytest
from pydantic import ValidationError

from bastion.config.model import Settings
from bastion.config.upstream_auth import UpstreamOAuthAuth
from bastion.store.memory_vault import MemoryVaultStore
from bastion.vault.envelope import MasterKeys, VaultCipher
from bastion.vault.model import ProviderUnavailable
from bastion.vault.provider import Providers
from bastion.vault.rfc7591 import REGISTRATIONS_OWNER, Registrations, client_metadata
from bastion.vault.upstream_oauth import UpstreamOAuthSetup, placeholder
from tests.unit.test_vault_provider import Hostile, hostile  # noqa: F401 - the fixture

PUBLIC = "https://bastion.example"


def settings(auth: dict[str, Any], **upstream: Any) -> Settings:
    return Settings.model_validate(
        {
            "public_url": PUBLIC,
            "upstreams": [
                {"name": "crm", "http": {"url": "https://crm.example/mcp"}, "auth": auth, **upstream}
            ],
        }
    )


def test_config_defaults_and_static_client() -> None:
    auth = settings({"type": "upstream_oauth"}).upstreams[0].auth
    assert isinstance(auth, UpstreamOAuthAuth)
    assert (auth.registration, auth.header, auth.template) == ("auto", "authorization", "Bearer {token}")
    with pytest.raises(ValidationError, match="registration: static needs client_id"):
        settings({"type": "upstream_oauth", "registration": "static"})
    with pytest.raises(ValidationError, match="apply to registration: static only"):
        settings({"type": "upstream_oauth", "client_id": "x"})
    with pytest.raises(ValidationError, match="client_secret_basic needs client_secret"):
        settings(
            {
                "type": "upstream_oauth",
                "registration": "static",
                "client_id": "x",
                "token_endpoint_auth_method": "client_secret_basic",
            }
        )


def test_config_needs_http_and_a_connection_name() -> None:
    with pytest.raises(ValidationError, match="needs an http upstream"):
        Settings.model_validate(
            {
                "public_url": PUBLIC,
                "upstreams": [
                    {
                        "name": "crm",
                        "stdio": {"command": "true"},
                        "auth": {"type": "upstream_oauth", "env": "TOKEN"},
                    }
                ],
            }
        )
    with pytest.raises(ValidationError, match="connections has one already"):
        Settings.model_validate(
            {
                "public_url": PUBLIC,
                "connections": [{"name": "crm", "type": "api_key", "label": "CRM"}],
                "upstreams": [
                    {
                        "name": "crm",
                        "http": {"url": "https://crm.example/mcp"},
                        "auth": {"type": "upstream_oauth"},
                    }
                ],
            }
        )


def test_client_metadata_document() -> None:
    document = client_metadata(PUBLIC + "/")
    assert document["client_id"] == PUBLIC + "/oauth/client-metadata.json"
    assert document["redirect_uris"] == [PUBLIC + "/connect/callback"]
    assert document["token_endpoint_auth_method"] == "none"
    assert document["grant_types"] == ["authorization_code", "refresh_token"]


# -- discovery and registration against a loopback authorization server ------------------------


def as_metadata(base: str, **over: Any) -> dict[str, Any]:
    return {
        "issuer": base,
        "authorization_endpoint": base + "/authorize",
        "token_endpoint": base + "/token",
        "registration_endpoint": base + "/register",
        "code_challenge_methods_supported": ["S256"],
        "scopes_supported": ["crm:read", "offline_access"],
        "authorization_response_iss_parameter_supported": True,
        **over,
    }


def publish(server: Hostile, *, resource: str | None = None, **over: Any) -> None:
    base = server.base
    server.json(
        "/.well-known/oauth-protected-resource/mcp",
        {
            "resource": resource or base + "/mcp",
            "authorization_servers": [base],
            "scopes_supported": ["crm:read"],
        },
    )
    server.json("/.well-known/oauth-authorization-server", as_metadata(base, **over))
    server.json(
        "/register",
        {
            "client_id": "dyn-1",
            "client_secret": "dyn-secret",
            "token_endpoint_auth_method": "client_secret_basic",
        },
        status=201,
    )
    server.json("/token", {"access_token": "at", "token_type": "Bearer", "expires_in": 60})


@pytest.fixture
async def http() -> AsyncIterator[httpx2.AsyncClient]:
    async with httpx2.AsyncClient(follow_redirects=False) as client:
        yield client


def cipher() -> VaultCipher:
    return VaultCipher(MasterKeys(bytes(range(32))))


def setup_for(
    server: Hostile, http: httpx2.AsyncClient, registrations: Registrations, **auth: Any
) -> UpstreamOAuthSetup:
    config = UpstreamOAuthAuth.model_validate({"type": "upstream_oauth", **auth})
    return UpstreamOAuthSetup(
        "crm",
        server.base + "/mcp",
        config,
        public_url=PUBLIC,
        registrations=registrations,
        http=http,
    )


async def test_dcr_resolution_resource_and_reuse(hostile: Hostile, http: httpx2.AsyncClient) -> None:  # noqa: F811
    publish(hostile)
    store = MemoryVaultStore()
    registrations = Registrations(store, cipher())
    resolved = await setup_for(hostile, http, registrations).resolve()
    oauth = resolved.oauth
    assert oauth is not None
    assert (oauth.client_id, oauth.client_secret, oauth.auth_method) == (
        "dyn-1",
        "dyn-secret",
        "client_secret_basic",
    )
    assert oauth.issuer == hostile.base
    assert oauth.pkce
    assert oauth.iss_parameter
    assert dict(oauth.authorize_params) == dict(oauth.token_params) == {"resource": hostile.base + "/mcp"}
    assert resolved.scopes == ("crm:read", "offline_access")
    registered = next(s for s in hostile.seen if s["path"] == "/register")
    request = json.loads(registered["body"])
    assert request["application_type"] == "web"
    assert request["redirect_uris"] == [PUBLIC + "/connect/callback"]
    assert request["grant_types"] == ["authorization_code", "refresh_token"]
    assert request["token_endpoint_auth_method"] == "client_secret_basic"
    stored = await store.get(REGISTRATIONS_OWNER, "crm")
    assert stored is not None
    assert "dyn-secret" not in stored.sealed
    # a second process: the kept registration is reused, no new one is made
    again = await setup_for(hostile, http, Registrations(store, cipher())).resolve()
    assert again.oauth is not None
    assert again.oauth.client_id == "dyn-1"
    assert sum(s["path"] == "/register" for s in hostile.seen) == 1


async def test_registration_is_bound_to_the_issuer(hostile: Hostile, http: httpx2.AsyncClient) -> None:  # noqa: F811
    publish(hostile)
    store = MemoryVaultStore()
    registrations = Registrations(store, cipher())
    await setup_for(hostile, http, registrations).resolve()
    assert await registrations.find("crm", hostile.base, PUBLIC + "/connect/callback") is not None
    assert await registrations.find("crm", "https://other.example", PUBLIC + "/connect/callback") is None


async def test_provider_sends_resource_and_checks_iss(hostile: Hostile, http: httpx2.AsyncClient) -> None:  # noqa: F811
    publish(hostile)
    config = UpstreamOAuthAuth.model_validate({"type": "upstream_oauth"})
    setup = setup_for(hostile, http, Registrations(MemoryVaultStore(), cipher()))
    providers = Providers([placeholder("crm", config)], http=http, setups={"crm": setup})
    client = providers.get("crm")
    assert client is not None
    assert await providers.discover() == {}
    url = client.authorization_url("st", "challenge", PUBLIC + "/connect/callback")
    query = parse_qs(urlsplit(url).query)
    assert query["resource"] == [hostile.base + "/mcp"]
    assert query["code_challenge_method"] == ["S256"]
    assert query["scope"] == ["crm:read offline_access"]
    await client.redeem("code", "verifier", PUBLIC + "/connect/callback")
    assert hostile.form()["resource"] == hostile.base + "/mcp"
    assert client.issuer_matches(hostile.base)
    assert not client.issuer_matches(None)  # advertised: required
    assert not client.issuer_matches("https://evil.example")


async def test_no_s256_is_refused(hostile: Hostile, http: httpx2.AsyncClient) -> None:  # noqa: F811
    publish(hostile, code_challenge_methods_supported=["plain"])
    with pytest.raises(ProviderUnavailable, match="PKCE"):
        await setup_for(hostile, http, Registrations(MemoryVaultStore(), cipher())).resolve()
    publish(hostile, code_challenge_methods_supported=None)
    hostile.json(
        "/.well-known/oauth-authorization-server",
        {k: v for k, v in as_metadata(hostile.base).items() if k != "code_challenge_methods_supported"},
    )
    with pytest.raises(ProviderUnavailable, match="PKCE"):
        await setup_for(hostile, http, Registrations(MemoryVaultStore(), cipher())).resolve()


async def test_issuer_mismatch_is_refused(hostile: Hostile, http: httpx2.AsyncClient) -> None:  # noqa: F811
    publish(hostile, issuer="https://evil.example")
    with pytest.raises(ProviderUnavailable, match="another issuer"):
        await setup_for(hostile, http, Registrations(MemoryVaultStore(), cipher())).resolve()


async def test_prm_resource_mismatch_is_refused(hostile: Hostile, http: httpx2.AsyncClient) -> None:  # noqa: F811
    publish(hostile, resource="https://elsewhere.example/mcp")
    with pytest.raises(ProviderUnavailable, match="another resource"):
        await setup_for(hostile, http, Registrations(MemoryVaultStore(), cipher())).resolve()


async def test_cimd_and_static_and_none(hostile: Hostile, http: httpx2.AsyncClient) -> None:  # noqa: F811
    publish(hostile, client_id_metadata_document_supported=True)
    registrations = Registrations(MemoryVaultStore(), cipher())
    cimd = await setup_for(hostile, http, registrations).resolve()
    assert cimd.oauth is not None
    assert (cimd.oauth.client_id, cimd.oauth.auth_method) == (PUBLIC + "/oauth/client-metadata.json", "none")
    static = await setup_for(
        hostile, http, registrations, registration="static", client_id="pre", client_secret="s"
    ).resolve()
    assert static.oauth is not None
    assert (static.oauth.client_id, static.oauth.auth_method) == ("pre", "client_secret_basic")
    publish(hostile, registration_endpoint=None)
    hostile.json(
        "/.well-known/oauth-authorization-server",
        {k: v for k, v in as_metadata(hostile.base).items() if k != "registration_endpoint"},
    )
    with pytest.raises(ProviderUnavailable, match="not set up for Bastion"):
        await setup_for(hostile, http, registrations).resolve()
    assert not any(s["path"] == "/register" for s in hostile.seen)
