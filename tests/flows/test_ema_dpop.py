"""Enterprise-Managed Authorization with a key-bound ID-JAG (``cnf.jkt``): it is redeemed only
with an RFC 9449 DPoP proof signed by that key, for the token endpoint, used once, and carrying
only the public key."""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from jwt.algorithms import ECAlgorithm

from tests.support.ema import dpop_proof, id_jag, new_key, public_jwk, redeem, thumbprint, trusted_issuer
from tests.support.gateway import Gateway, run_gateway
from tests.support.oauth import list_tools
from tests.support.recording import recording_upstream

IDP_KEY = new_key()
CLIENT_KEY = new_key()
OTHER_KEY = new_key()
SECRET = secrets.token_urlsafe(32)


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    tmp: Path = tmp_path_factory.mktemp("ema-dpop")
    extra = {
        "auth": {"enabled": True, "scopes": ["mcp"]},
        "ema": {"trusted_issuers": [trusted_issuer(IDP_KEY)]},
        "clients": [
            {
                "client_id": "agent",
                "secret_sha256": hashlib.sha256(SECRET.encode()).hexdigest(),
                "grant_types": ["client_credentials"],
            }
        ],
    }
    with (
        recording_upstream() as upstream,
        run_gateway(tmp, [{"name": "a", "http": {"url": upstream.url}}], extra=extra) as g,
    ):
        yield g


def bound(gw: Gateway) -> str:
    return id_jag(IDP_KEY, aud=gw.base, resource=gw.url("a"), cnf={"jkt": thumbprint(CLIENT_KEY)})


async def send(gw: Gateway, proof: str | None) -> httpx2.Response:
    return await redeem(gw.base, bound(gw), client="agent", secret=SECRET, dpop=proof)


async def test_a_valid_proof_redeems_the_bound_id_jag(gw: Gateway) -> None:
    response = await send(gw, dpop_proof(CLIENT_KEY, htu=f"{gw.base}/token"))
    assert response.status_code == 200, response.text
    async with httpx2.AsyncClient(timeout=30) as http:
        listed = await list_tools(http, gw.url("a"), response.json()["access_token"])
    assert listed.status_code == 200, listed.text


def _private_jwk() -> dict[str, Any]:
    jwk = dict(json.loads(ECAlgorithm.to_jwk(CLIENT_KEY)))
    assert "d" in jwk
    return jwk


@pytest.mark.parametrize(
    ("make", "why"),
    [
        (lambda gw: None, "no proof"),
        (lambda gw: dpop_proof(OTHER_KEY, htu=f"{gw.base}/token"), "proof signed by another key"),
        (
            lambda gw: dpop_proof(OTHER_KEY, htu=f"{gw.base}/token", jwk=public_jwk(CLIENT_KEY)),
            "signature does not match the jwk",
        ),
        (lambda gw: dpop_proof(CLIENT_KEY, htu="https://other.example/token"), "proof for another htu"),
        (lambda gw: dpop_proof(CLIENT_KEY, htu=f"{gw.base}/token", htm="GET"), "proof for another method"),
        (lambda gw: dpop_proof(CLIENT_KEY, htu=f"{gw.base}/token", jwk=_private_jwk()), "private d in jwk"),
    ],
)
async def test_bad_proofs_refuse_with_invalid_grant(gw: Gateway, make: Any, why: str) -> None:
    response = await send(gw, make(gw))
    assert response.status_code == 400, (why, response.text)
    assert response.json()["error"] == "invalid_grant", (why, response.text)


async def test_a_replayed_proof_refuses_with_invalid_grant(gw: Gateway) -> None:
    proof = dpop_proof(CLIENT_KEY, htu=f"{gw.base}/token")
    assert (await send(gw, proof)).status_code == 200
    replayed = await send(gw, proof)  # a fresh ID-JAG, the same proof
    assert replayed.status_code == 400, replayed.text
    assert replayed.json()["error"] == "invalid_grant"
