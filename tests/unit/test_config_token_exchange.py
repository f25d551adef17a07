"""``upstreams[].auth: {type: token_exchange}``: what a valid entry looks like, its defaults, and
the errors of the combinations that cannot work (each naming the key)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from bastion.config.idp import IdentityProvider
from bastion.config.model import Settings
from bastion.config.upstream_auth import ACCESS_TOKEN_TYPE, TokenExchangeAuth
from bastion.vault.exchange import exchange_client

ENTRA = {
    "name": "entra",
    "preset": "entra",
    "tenant": "contoso.onmicrosoft.com",
    "client_id": "bastion-app",
    "client_secret": "s3cret",
}


def auth(**fields: Any) -> dict[str, Any]:
    return {"type": "token_exchange", "identity_provider": "entra", "audience": "crm", **fields}


def settings(auth_block: dict[str, Any], *, transport: dict[str, Any] | None = None, **root: Any) -> Settings:
    upstream = {
        "name": "crm",
        **(transport or {"http": {"url": "https://crm.example.com/mcp"}}),
        "auth": auth_block,
    }
    return Settings.model_validate({"identity_providers": [ENTRA], "upstreams": [upstream], **root})


def test_a_minimal_entry_and_its_defaults() -> None:
    upstream = settings(auth()).upstreams[0]
    entry = upstream.auth
    assert isinstance(entry, TokenExchangeAuth)
    assert entry.style == "rfc8693"
    assert entry.presented == "id_token"
    assert entry.token_endpoint is None  # the identity provider's own
    assert entry.requested_token_type is None  # the exchange then asks for an access token
    assert ACCESS_TOKEN_TYPE.endswith(":access_token")
    assert (entry.header, entry.template, entry.refresh_margin) == ("authorization", "Bearer {token}", 60)
    client = exchange_client(entry, IdentityProvider.model_validate(ENTRA))
    assert (client.client_id, client.method, client.secret) == (
        "bastion-app",
        "client_secret_basic",
        "s3cret",
    )


def test_entra_obo_and_an_own_client() -> None:
    entry = TokenExchangeAuth.model_validate(
        {
            "type": "token_exchange",
            "identity_provider": "entra",
            "style": "entra_obo",
            "subject_scopes": ["api://bastion-app/.default"],
            "scopes": ["api://crm-api/.default"],
            "client_id": "other-app",
            "token_endpoint_auth_method": "private_key_jwt",
            "private_key_file": "/run/secrets/key.pem",
            "token_endpoint": "https://login.microsoftonline.com/t/oauth2/v2.0/token",
        }
    )
    assert entry.presented == "access_token"
    client = exchange_client(entry, IdentityProvider.model_validate(ENTRA))
    assert (client.client_id, client.method, client.private_key_file) == (
        "other-app",
        "private_key_jwt",
        "/run/secrets/key.pem",
    )
    assert client.certificate_file is None


def test_rfc8693_with_every_option() -> None:
    entry = TokenExchangeAuth.model_validate(
        auth(
            subject_token="access_token",
            subject_scopes=["bastion-api"],
            resource="urn:crm:api",
            scopes=["crm:read"],
            requested_token_type="urn:ietf:params:oauth:token-type:jwt",
            header="x-crm-token",
            template="{token}",
            refresh_margin=0,
        )
    )
    assert entry.presented == "access_token"
    assert entry.requested_token_type == "urn:ietf:params:oauth:token-type:jwt"
    assert entry.resource == "urn:crm:api"


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"audience": None}, "set audience, resource or scopes"),
        (
            {"style": "entra_obo", "scopes": ["api://x/.default"]},
            "entra_obo names the downstream API by scopes",
        ),
        (
            {"style": "entra_obo", "audience": None, "scopes": ["api://x/.default"]},
            "entra_obo needs scopes",
        ),
        (
            {"style": "entra_obo", "audience": None, "subject_token": "id_token", "subject_scopes": ["a"]},
            "entra_obo presents an access token",
        ),
        (
            {"subject_scopes": ["api://b/.default"]},
            "subject_scopes apply to subject_token: access_token only",
        ),
        ({"client_secret": "x"}, "client_secret need client_id"),
        ({"client_id": "other"}, "client_secret_basic needs client_secret"),
        ({"client_id": "other", "token_endpoint_auth_method": "private_key_jwt"}, "needs private_key_file"),
        ({"token_endpoint": "http://idp.example.com/token"}, "must be an https URL"),
        ({"token_endpoint": "https://as.example.com/token"}, "a token_endpoint of its own needs client_id"),
        ({"resource": "not a uri"}, "must be an absolute URI"),
        ({"resource": "https://crm.example.com/api#frag"}, "must be an absolute URI"),
        ({"requested_token_type": "access_token"}, "must be a token type URN"),
        ({"subject_token": "refresh_token"}, "subject_token"),
        ({"style": "saml"}, "style"),
        ({"template": "Bearer"}, "must contain {token}"),
    ],
)
def test_combinations_that_cannot_work(fields: dict[str, Any], expected: str) -> None:
    with pytest.raises(ValidationError) as caught:
        TokenExchangeAuth.model_validate({k: v for k, v in auth(**fields).items() if v is not None})
    assert expected in str(caught.value)


@pytest.mark.parametrize(
    ("auth_block", "root", "transport", "expected"),
    [
        (
            auth(identity_provider="okta"),
            {},
            None,
            "identity_provider 'okta' is not one of identity_providers",
        ),
        (auth(), {"auth": {"enabled": False}}, None, "auth.type token_exchange needs auth.enabled"),
        (auth(), {}, {"stdio": {"command": "crm-mcp"}}, "on a stdio upstream needs env"),
    ],
)
def test_the_rest_of_the_configuration_must_fit(
    auth_block: dict[str, Any], root: dict[str, Any], transport: dict[str, Any] | None, expected: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        settings(auth_block, transport=transport, **root)
    assert expected in str(caught.value)


def test_stdio_upstreams_get_the_token_in_an_environment_variable() -> None:
    upstream = settings(auth(env="CRM_TOKEN"), transport={"stdio": {"command": "crm-mcp"}}).upstreams[0]
    assert isinstance(upstream.auth, TokenExchangeAuth)
    assert upstream.auth.env == "CRM_TOKEN"
