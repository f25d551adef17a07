"""Config clients become store records; client secrets (RFC 6749 §2.3.1) are checked against
the stored SHA-256 in constant time."""

from __future__ import annotations

import hashlib
import secrets

from bastion.config import load_config_text
from bastion.config.clients import OAuthClient
from bastion.core.records import ClientRecord
from bastion.oauth.clients import client_from_config, hash_client_secret, verify_client_secret

SECRET = secrets.token_urlsafe(32)


def one_client(text: str, env: dict[str, str] | None = None) -> OAuthClient:
    (client,) = load_config_text(text, env or {}).clients
    return client


def test_confidential_config_client_record() -> None:
    config = one_client(
        """
clients:
  - client_id: web-app
    name: Web App
    redirect_uris: [https://app.example.com/cb, http://127.0.0.1/cb]
    secret: ${S}
    scope: mcp:read mcp:write
    trusted: true
""",
        {"S": SECRET},
    )
    assert client_from_config(config, now=123.5) == ClientRecord(
        client_id="web-app",
        source="config",
        client_name="Web App",
        redirect_uris=("https://app.example.com/cb", "http://127.0.0.1/cb"),
        grant_types=("authorization_code", "refresh_token"),
        token_endpoint_auth_method="client_secret_basic",
        secret_hash=hashlib.sha256(SECRET.encode()).hexdigest(),
        jwks=None,
        jwks_uri=None,
        scope="mcp:read mcp:write",
        application_type="web",
        trusted=True,
        created_at=123.5,
        expires_at=None,
        last_used_at=None,
        metadata={},
    )


def test_public_and_private_key_jwt_records() -> None:
    public = client_from_config(
        one_client("clients: [{client_id: cli, redirect_uris: ['http://localhost/cb']}]"), now=1.0
    )
    assert (public.token_endpoint_auth_method, public.secret_hash, public.application_type) == (
        "none",
        None,
        "native",
    )
    jwk = {"kty": "EC", "crv": "P-256", "x": "eA", "y": "eQ"}
    robot = client_from_config(
        OAuthClient(
            client_id="robot",
            token_endpoint_auth_method="private_key_jwt",
            jwks={"keys": [jwk]},
            grant_types=["client_credentials"],
        ),
        now=2.0,
    )
    assert robot.jwks == {"keys": [jwk]}
    assert robot.grant_types == ("client_credentials",)
    assert robot.secret_hash is None
    assert not verify_client_secret(robot, "")


def test_verify_client_secret() -> None:
    record = client_from_config(
        one_client(
            "clients: [{client_id: svc, secret: '${S}', grant_types: [client_credentials]}]", {"S": SECRET}
        ),
        now=0.0,
    )
    assert verify_client_secret(record, SECRET)
    assert not verify_client_secret(record, SECRET + "x")
    assert not verify_client_secret(record, SECRET[:-1])
    assert not verify_client_secret(record, "")
    assert not verify_client_secret(record, "\ud800")  # a lone surrogate is just a wrong secret
    assert not verify_client_secret(record, record.secret_hash or "")  # the hash is not the secret


def test_a_malformed_stored_hash_never_matches() -> None:
    record = client_from_config(
        one_client(
            "clients: [{client_id: svc, secret: '${S}', grant_types: [client_credentials]}]", {"S": SECRET}
        ),
        now=0.0,
    )
    upper = ClientRecord(**{**_fields(record), "secret_hash": hash_client_secret(SECRET).upper()})
    assert not verify_client_secret(upper, SECRET)
    empty = ClientRecord(**{**_fields(record), "secret_hash": ""})
    assert not verify_client_secret(empty, "")


def _fields(record: ClientRecord) -> dict[str, object]:
    return {name: getattr(record, name) for name in ClientRecord.__dataclass_fields__}
