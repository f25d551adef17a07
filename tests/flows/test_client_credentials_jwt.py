"""Machine clients authenticating with ``private_key_jwt`` (RFC 7523 §2.2; the MCP OAuth Client
Credentials extension's recommended method): a signed assertion gets a token for one endpoint
that calls a tool; a replayed, expired, wrongly addressed or foreign-signed assertion gets
``invalid_client`` and no token."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from tests.support.gateway import Gateway, run_gateway
from tests.support.oauth import list_tools
from tests.support.recording import recording_upstream

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
KEY = ec.generate_private_key(ec.SECP256R1())
OTHER_KEY = ec.generate_private_key(ec.SECP256R1())


def _public_jwk() -> dict[str, Any]:
    jwk: dict[str, Any] = json.loads(ECAlgorithm.to_jwk(KEY.public_key()))
    return {**jwk, "kid": "k1", "alg": "ES256", "use": "sig"}


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    tmp: Path = tmp_path_factory.mktemp("cc-jwt")
    client = {
        "client_id": "reporter",
        "name": "Nightly report",
        "grant_types": ["client_credentials"],
        "token_endpoint_auth_method": "private_key_jwt",
        "jwks": {"keys": [_public_jwk()]},
    }
    with (
        recording_upstream() as upstream,
        run_gateway(
            tmp,
            [{"name": "a", "http": {"url": upstream.url}}],
            extra={"auth": {"enabled": True}, "clients": [client]},
        ) as gateway,
    ):
        yield gateway


def _assertion(gw: Gateway, **changes: Any) -> str:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": "reporter",
        "sub": "reporter",
        "aud": f"{gw.base}/token",
        "iat": now,
        "exp": now + 60,
        "jti": secrets.token_urlsafe(12),
    }
    key = changes.pop("key", KEY)
    claims.update(changes)
    return jwt.encode(claims, key, algorithm="ES256", headers={"kid": "k1"})


async def _token(http: httpx2.AsyncClient, gw: Gateway, assertion: str) -> httpx2.Response:
    return await http.post(
        f"{gw.base}/token",
        data={
            "grant_type": "client_credentials",
            "resource": gw.url("a"),
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": assertion,
        },
    )


async def test_a_signed_assertion_gets_a_token_for_the_client_itself(gw: Gateway) -> None:
    async with httpx2.AsyncClient(timeout=30) as http:
        response = await _token(http, gw, _assertion(gw))
        assert response.status_code == 200, response.text
        body = response.json()
        assert "refresh_token" not in body
        claims = jwt.decode(body["access_token"], options={"verify_signature": False})
        assert claims["sub"] == "reporter"
        assert claims["client_id"] == "reporter"
        assert claims["aud"] == gw.url("a")
        assert (await list_tools(http, gw.url("a"), body["access_token"])).status_code == 200
        # the issuer itself is an accepted audience too (RFC 7523 §3)
        assert (await _token(http, gw, _assertion(gw, aud=gw.base))).status_code == 200


@pytest.mark.parametrize(
    "changes",
    [
        {"key": OTHER_KEY},  # not the registered key
        {"aud": "https://elsewhere.example/token"},
        {"exp": int(time.time()) - 3600},
        {"exp": int(time.time()) + 7200},  # a one-shot credential may not live for hours
        {"sub": "someone-else"},
    ],
)
async def test_bad_assertions_get_invalid_client(gw: Gateway, changes: dict[str, Any]) -> None:
    async with httpx2.AsyncClient(timeout=30) as http:
        response = await _token(http, gw, _assertion(gw, **changes))
    assert response.status_code in (400, 401)
    assert response.json()["error"] == "invalid_client"
    assert response.headers["cache-control"] == "no-store"


async def test_a_replayed_assertion_is_refused(gw: Gateway) -> None:
    assertion = _assertion(gw)
    async with httpx2.AsyncClient(timeout=30) as http:
        assert (await _token(http, gw, assertion)).status_code == 200
        again = await _token(http, gw, assertion)
    assert again.json()["error"] == "invalid_client"
