"""Client authentication (RFC 6749 §2.3, RFC 7523 §3): which method, and every refusal."""

from __future__ import annotations

import base64
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from bastion.oauth.client_auth import (
    ASSERTION_TYPE,
    presented_client,
    verify_client_assertion,
)
from bastion.oauth.errors import InvalidClient, InvalidRequest

KEY = ec.generate_private_key(ec.SECP256R1())
OTHER = ec.generate_private_key(ec.SECP256R1())
ISSUER = "https://gw.example.com"
NOW = time.time()


def basic(client_id: str, secret: str) -> str:
    from urllib.parse import quote_plus

    return "Basic " + base64.b64encode(f"{quote_plus(client_id)}:{quote_plus(secret)}".encode()).decode()


def test_methods() -> None:
    assert presented_client(None, {"client_id": ["pub"]}).method == "none"
    posted = presented_client(None, {"client_id": ["c"], "client_secret": ["s"]})
    assert (posted.method, posted.secret) == ("client_secret_post", "s")
    basic_client = presented_client(basic("c:1", "s&e=cret"), {})
    assert (basic_client.client_id, basic_client.secret, basic_client.method) == (
        "c:1",
        "s&e=cret",
        "client_secret_basic",
    )


@pytest.mark.parametrize(
    ("authorization", "form", "error"),
    [
        (None, {}, InvalidClient),
        ("Bearer abc", {}, InvalidClient),
        ("Basic !!!", {}, InvalidClient),
        ("Basic " + base64.b64encode(b"no-colon").decode(), {}, InvalidClient),
        (basic("c", "s"), {"client_secret": ["s"]}, InvalidRequest),  # two methods at once
        (basic("c", "s"), {"client_id": ["other"]}, InvalidRequest),
        (None, {"client_id": ["a", "b"]}, InvalidRequest),
        (
            None,
            {"client_id": ["c"], "client_assertion": ["x"], "client_assertion_type": ["wrong"]},
            InvalidClient,
        ),
        (None, {"client_assertion": ["not-a-jwt"], "client_assertion_type": [ASSERTION_TYPE]}, InvalidClient),
    ],
)
def test_refusals(authorization: str | None, form: dict[str, list[str]], error: type[Exception]) -> None:
    with pytest.raises(error):
        presented_client(authorization, form)


def assertion(**overrides: Any) -> str:
    claims = {"iss": "m2m", "sub": "m2m", "aud": ISSUER + "/token", "exp": NOW + 60, "jti": "j1", **overrides}
    key = overrides.pop("_key", KEY)
    claims.pop("_key", None)
    return jwt.encode(claims, key, algorithm="ES256", headers={"kid": "k1"})


async def check(token: str, seen: set[str] | None = None) -> None:
    seen = set() if seen is None else seen

    async def key_for(client_id: str, kid: str | None) -> Any:
        return KEY.public_key() if (client_id, kid) == ("m2m", "k1") else None

    async def seen_before(client_id: str, jti: str, exp: float) -> bool:
        replay = jti in seen
        seen.add(jti)
        return replay

    presented = presented_client(
        None, {"client_assertion": [token], "client_assertion_type": [ASSERTION_TYPE]}
    )
    await verify_client_assertion(
        presented, audiences=[ISSUER, ISSUER + "/token"], key_for=key_for, seen_before=seen_before, now=NOW
    )


async def test_private_key_jwt_accepted_once() -> None:
    seen: set[str] = set()
    token = assertion()
    await check(token, seen)
    with pytest.raises(InvalidClient, match="replayed"):
        await check(token, seen)


@pytest.mark.parametrize(
    "overrides",
    [
        {"exp": NOW - 120},
        {"exp": NOW + 3600},
        {"nbf": NOW + 120},
        {"aud": "https://elsewhere.example/token"},
        {"sub": "someone-else"},
        {"_key": OTHER},
    ],
)
async def test_private_key_jwt_refusals(overrides: dict[str, Any]) -> None:
    with pytest.raises(InvalidClient):
        await check(assertion(**overrides))


async def test_private_key_jwt_rejects_none_and_hmac() -> None:
    claims = {"iss": "m2m", "sub": "m2m", "aud": ISSUER, "exp": NOW + 60, "jti": "x"}
    unsigned = jwt.encode(claims, None, algorithm="none")
    with pytest.raises(InvalidClient, match="algorithm"):
        await check(unsigned)
    hmac_token = jwt.encode(claims, "shared-secret-long-enough-for-hs256-keys!!", algorithm="HS256")
    with pytest.raises(InvalidClient, match="algorithm"):
        await check(hmac_token)
