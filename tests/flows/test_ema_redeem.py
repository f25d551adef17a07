"""Enterprise-Managed Authorization, Bastion as the resource authorization server: ID-JAGs
minted by a throwaway test IdP (its own key) are redeemed at /token with the jwt-bearer grant
for Bastion's own, audience-bound token; each validation rule refuses with invalid_grant."""

from __future__ import annotations

import hashlib
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

IDP = "https://idp.example.test"
KEY = ec.generate_private_key(ec.SECP256R1())
OTHER = ec.generate_private_key(ec.SECP256R1())
SECRET = secrets.token_urlsafe(32)
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"


def _jwks() -> dict[str, Any]:
    jwk = json.loads(ECAlgorithm.to_jwk(KEY.public_key()))
    return {"keys": [{**jwk, "kid": "idp-1", "alg": "ES256", "use": "sig"}]}


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    tmp: Path = tmp_path_factory.mktemp("ema")
    extra = {
        "auth": {"enabled": True, "scopes": ["mcp", "notes"]},
        "ema": {"trusted_issuers": [{"issuer": IDP, "jwks": _jwks(), "algorithms": ["ES256"]}]},
        "clients": [
            {
                "client_id": "agent",
                "secret_sha256": hashlib.sha256(SECRET.encode()).hexdigest(),
                "grant_types": ["client_credentials"],
            },
            {
                "client_id": "other-agent",
                "secret_sha256": hashlib.sha256(SECRET.encode()).hexdigest(),
                "grant_types": ["client_credentials"],
            },
        ],
    }
    with (
        recording_upstream() as upstream,
        run_gateway(tmp, [{"name": "a", "http": {"url": upstream.url}}], extra=extra) as g,
    ):
        yield g


def id_jag(gw: Gateway, *, key: Any = KEY, header: dict[str, Any] | None = None, **claims: Any) -> str:
    now = int(time.time())
    body: dict[str, Any] = {
        "iss": IDP,
        "sub": "user-42",
        "aud": gw.base,
        "client_id": "agent",
        "jti": secrets.token_urlsafe(12),
        "iat": now,
        "exp": now + 300,
        "resource": gw.url("a"),
        "scope": "mcp notes",
        "email": "carol@example.test",
    }
    body.update(claims)
    body = {k: v for k, v in body.items() if v is not None}
    head = {"typ": "oauth-id-jag+jwt", "kid": "idp-1", **(header or {})}
    return jwt.encode(body, key, algorithm="ES256", headers=head)


async def redeem(gw: Gateway, assertion: str, client: str = "agent", **form: str) -> httpx2.Response:
    async with httpx2.AsyncClient(timeout=30) as http:
        return await http.post(
            f"{gw.base}/token",
            data={"grant_type": JWT_BEARER, "assertion": assertion, **form},
            auth=(client, SECRET),
        )


async def test_metadata_advertises_the_id_jag_profile(gw: Gateway) -> None:
    async with httpx2.AsyncClient() as http:
        meta = (await http.get(f"{gw.base}/.well-known/oauth-authorization-server")).json()
    assert JWT_BEARER in meta["grant_types_supported"]
    assert meta["authorization_grant_profiles_supported"] == ["urn:ietf:params:oauth:grant-profile:id-jag"]


async def test_an_id_jag_is_redeemed_for_an_audience_bound_token(gw: Gateway) -> None:
    response = await redeem(gw, id_jag(gw), scope="mcp")
    assert response.status_code == 200, response.text
    body = response.json()
    assert "refresh_token" not in body
    assert body["scope"] == "mcp"
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["aud"] == gw.url("a")
    assert claims["client_id"] == "agent"
    async with httpx2.AsyncClient(timeout=30) as http:
        assert (await list_tools(http, gw.url("a"), body["access_token"])).status_code == 200


@pytest.mark.parametrize(
    ("make", "why"),
    [
        (lambda gw: id_jag(gw, header={"typ": "JWT"}), "typ"),
        (lambda gw: id_jag(gw, key=OTHER), "signature by another key"),
        (lambda gw: id_jag(gw, header={"kid": "unknown"}), "unknown kid"),
        (lambda gw: id_jag(gw, iss="https://evil.example"), "untrusted issuer"),
        (lambda gw: id_jag(gw, aud=[gw.base, "https://other.example"]), "aud array of two"),
        (lambda gw: id_jag(gw, aud="https://other.example"), "aud of another server"),
        (lambda gw: id_jag(gw, client_id="other-agent"), "client_id mismatch"),
        (lambda gw: id_jag(gw, resource="https://elsewhere.example/mcp"), "resource not ours"),
        (lambda gw: id_jag(gw, exp=int(time.time()) - 600), "expired"),
        (lambda gw: id_jag(gw, iat=int(time.time()) + 600), "iat in the future"),
        (lambda gw: id_jag(gw, cnf={"jkt": "abc"}), "cnf without a DPoP proof"),
    ],
)
async def test_each_rule_refuses_with_invalid_grant(gw: Gateway, make: Any, why: str) -> None:
    response = await redeem(gw, make(gw))
    assert response.status_code == 400, (why, response.text)
    assert response.json()["error"] == "invalid_grant", why


async def test_alg_none_and_replay_and_scope_escalation(gw: Gateway) -> None:
    unsigned = jwt.encode({"iss": IDP}, None, algorithm="none", headers={"typ": "oauth-id-jag+jwt"})
    assert (await redeem(gw, unsigned)).json()["error"] == "invalid_grant"
    once = id_jag(gw)
    assert (await redeem(gw, once)).status_code == 200
    assert (await redeem(gw, once)).json()["error"] == "invalid_grant"  # jti replay
    escalation = await redeem(gw, id_jag(gw, scope="mcp"), scope="mcp notes")
    assert escalation.json()["error"] == "invalid_scope"
