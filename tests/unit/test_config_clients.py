"""Pre-registered OAuth clients in bastion.yaml: defaults follow from whether a secret is
given; a secret from the environment is hashed at load and never kept; redirect URIs follow
the registration rules (RFC 8252 §7.3, RFC 6749 §3.1.2); errors name the key."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import pytest

from bastion.config import load_config_text
from bastion.config.clients import KEYGEN_COMMAND, OAuthClient
from bastion.core.errors import ConfigError

SECRET = "k7Qx2m4rT9vYb1nW8zLc3pH6sJ0dF5gA-_uEiOyRqXw"
SECRET_SHA256 = hashlib.sha256(SECRET.encode()).hexdigest()


def load_clients(text: str, env: dict[str, str] | None = None) -> list[OAuthClient]:
    return load_config_text(text, env or {}).clients


def error_of(text: str, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as exc:
        load_config_text(text, env or {})
    return str(exc.value)


def test_no_clients_by_default() -> None:
    assert load_config_text("", {}).clients == []


def test_public_client_defaults() -> None:
    (client,) = load_clients("clients: [{client_id: cli, redirect_uris: ['http://127.0.0.1/cb']}]")
    assert client.token_endpoint_auth_method == "none"
    assert client.grant_types == ["authorization_code", "refresh_token"]
    assert client.secret_sha256 is None
    assert client.trusted is False
    assert not client.confidential


def test_secret_from_env_is_hashed_at_load_and_not_kept() -> None:
    text = """
clients:
  - client_id: web-app
    name: Web App
    redirect_uris: [https://app.example.com/callback]
    secret: ${WEB_APP_SECRET}
    scope: mcp:read
    trusted: true
"""
    (client,) = load_clients(text, {"WEB_APP_SECRET": SECRET})
    assert client.secret is None
    assert client.secret_sha256 == SECRET_SHA256
    assert SECRET not in repr(client)
    assert SECRET not in client.model_dump_json()
    assert client.token_endpoint_auth_method == "client_secret_basic"
    assert client.confidential
    assert client.trusted


def test_secret_sha256_is_accepted_in_any_case() -> None:
    text = (
        f"clients: [{{client_id: svc, secret_sha256: '{SECRET_SHA256.upper()}', "
        "grant_types: [client_credentials], token_endpoint_auth_method: client_secret_post}]"
    )
    (client,) = load_clients(text)
    assert client.secret_sha256 == SECRET_SHA256
    assert client.token_endpoint_auth_method == "client_secret_post"


def test_the_documented_keygen_command_makes_a_matching_pair() -> None:
    code = KEYGEN_COMMAND.removeprefix('python -c "').removesuffix('"')
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    secret, digest = out.split()
    (client,) = load_clients(
        "clients: [{client_id: a, secret: '${S}', grant_types: [client_credentials]}]", {"S": secret}
    )
    assert client.secret_sha256 == digest


def test_private_key_jwt_client_credentials() -> None:
    text = """
clients:
  - client_id: robot
    token_endpoint_auth_method: private_key_jwt
    jwks_uri: https://robot.example.com/jwks.json
    grant_types: [client_credentials]
"""
    (client,) = load_clients(text)
    assert client.confidential
    assert client.jwks_uri == "https://robot.example.com/jwks.json"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "clients: [{client_id: a, redirect_uris: ['http://evil.example/cb']}]",
            "clients[0].redirect_uris: redirect URI 'http://evil.example/cb' must be https",
        ),
        (
            "clients: [{client_id: a, redirect_uris: ['https://a.example/cb#frag']}]",
            "clients[0].redirect_uris: redirect URI 'https://a.example/cb#frag' has a fragment",
        ),
        (
            "clients: [{client_id: a, redirect_uris: ['https://a.example/cb', 'https://a.example/cb']}]",
            "clients[0].redirect_uris: lists a redirect URI twice",
        ),
        (
            "clients: [{client_id: a}]",
            "clients[0]: the authorization_code grant needs at least one redirect URI",
        ),
        (
            "clients: [{client_id: a, grant_types: [client_credentials]}]",
            "clients[0]: client_credentials needs a confidential client",
        ),
        (
            "clients: [{client_id: a, grant_types: [refresh_token], secret_sha256: " + "a" * 64 + "}]",
            "clients[0].grant_types: refresh_token needs authorization_code",
        ),
        (
            "clients: [{client_id: a, grant_types: [password]}]",
            "clients[0].grant_types[0]: Input should be 'authorization_code'",
        ),
        (
            "clients: [{client_id: a, secret_sha256: nothex, grant_types: [client_credentials]}]",
            "clients[0].secret_sha256: must be 64 hex digits",
        ),
        (
            "clients: [{client_id: a, secret: tooshort, grant_types: [client_credentials]}]",
            "clients[0]: secret must be at least 32 characters",
        ),
        (
            f"clients: [{{client_id: a, secret: '{SECRET}', secret_sha256: '{SECRET_SHA256}'}}]",
            "clients[0]: set either secret or secret_sha256, not both",
        ),
        (
            "clients: [{client_id: a, token_endpoint_auth_method: client_secret_basic, "
            "grant_types: [client_credentials]}]",
            "clients[0]: client_secret_basic needs secret or secret_sha256",
        ),
        (
            f"clients: [{{client_id: a, token_endpoint_auth_method: none, secret_sha256: '{SECRET_SHA256}', "
            "redirect_uris: ['https://a.example/cb']}]",
            "clients[0]: a secret is only used with client_secret_basic or client_secret_post",
        ),
        (
            "clients: [{client_id: a, token_endpoint_auth_method: private_key_jwt, "
            "grant_types: [client_credentials]}]",
            "clients[0]: private_key_jwt needs exactly one of jwks or jwks_uri",
        ),
        (
            "clients: [{client_id: a, token_endpoint_auth_method: private_key_jwt, "
            "jwks_uri: 'http://a.example/jwks', grant_types: [client_credentials]}]",
            "clients[0].jwks_uri: must be an https URL",
        ),
        (
            "clients: [{client_id: a, token_endpoint_auth_method: private_key_jwt, "
            "jwks: {keys: []}, grant_types: [client_credentials]}]",
            "clients[0].jwks: must be a JWK Set",
        ),
        (
            "clients: [{client_id: a, jwks_uri: 'https://a.example/jwks', redirect_uris: ['https://a.example/cb']}]",
            "clients[0]: jwks and jwks_uri are only used with private_key_jwt",
        ),
        (
            "clients: [{client_id: 'https://a.example/client.json', redirect_uris: ['https://a.example/cb']}]",
            "clients[0].client_id: must be 1-128 letters",
        ),
        (
            "clients: [{client_id: dcr_abc, redirect_uris: ['https://a.example/cb']}]",
            "clients[0].client_id: must not start with 'dcr_'",
        ),
        (
            "clients: [{client_id: a, redirect_uris: ['https://a.example/cb'], colour: blue}]",
            "clients[0].colour: unknown key",
        ),
        (
            "clients: [{client_id: a, redirect_uris: ['https://a.example/cb']}, "
            "{client_id: a, redirect_uris: ['https://b.example/cb']}]",
            "clients: client_id 'a' is used twice",
        ),
    ],
)
def test_errors_name_the_key(text: str, expected: str) -> None:
    assert expected in error_of(text)


def test_missing_secret_variable_names_the_key() -> None:
    message = error_of("clients: [{client_id: a, secret: '${NOPE}', grant_types: [client_credentials]}]")
    assert "clients[0].secret: environment variable ${NOPE} is not set" in message
