"""User attributes on their way to policy: typed per declaration (``bastion.core.attributes``),
into the access token's ``attrs`` claim (``user_attributes``), out of it into the Principal (the
bearer verifier), and in from an identity provider's claims (``claims.attributes``)."""

from __future__ import annotations

import json
from typing import Any

import jwt
import pytest

from bastion.authn.bearer import BearerVerifier, InvalidToken
from bastion.config.idp import IdentityProvider
from bastion.core.attributes import (
    MAX_CLAIM_CHARS,
    AttributeType,
    claim_value,
    coerce,
    from_claim,
    typed,
)
from bastion.core.records import UserRecord
from bastion.idp.claims import identity_from_claims, provision
from bastion.idp.presets import resolve
from bastion.oauth.keys import KeyRing
from bastion.oauth.token import user_attributes
from bastion.store.memory_authz import MemoryUserStore

DECLARED: dict[str, AttributeType] = {
    "department": "string",
    "level": "long",
    "contractor": "bool",
    "regions": "set",
}


@pytest.mark.parametrize(
    ("value", "kind", "expected"),
    [
        ("sales", "string", "sales"),
        ("x" * 257, "string", None),
        (7, "string", None),
        ("3", "long", 3),
        (" -12 ", "long", -12),
        ("3.5", "long", None),
        ("1" * 20, "long", None),
        (True, "long", None),
        (2**63, "long", None),
        (42, "long", 42),
        ("TRUE", "bool", True),
        ("false", "bool", False),
        ("yes", "bool", None),
        (1, "bool", None),
        ("eu, us,,eu", "set", ("eu", "us")),
        (["us", "eu", 3, "x" * 300], "set", ("eu", "us")),
        ([f"v{i:03}" for i in range(100)], "set", tuple(f"v{i:03}" for i in range(64))),
        ({"a": 1}, "set", None),
    ],
)
def test_values_convert_to_the_declared_type_or_are_left_out(
    value: object, kind: AttributeType, expected: object
) -> None:
    assert coerce(value, kind) == expected
    assert type(coerce(value, kind)) is type(expected)


def test_the_token_claim_holds_the_declared_attributes_the_user_has() -> None:
    user = UserRecord(
        user_id="u1",
        username="ann",
        password_hash=None,
        attributes={
            "department": "finance",
            "level": "3",
            "contractor": "maybe",
            "regions": "us,eu",
            "other": "x",
        },
    )
    assert typed(user.attributes, DECLARED) == {"department": "finance", "level": 3, "regions": ("eu", "us")}
    assert user_attributes(user, DECLARED) == {"department": "finance", "level": 3, "regions": ["eu", "us"]}
    assert user_attributes(user, {}) == {}


def test_the_token_claim_stays_small() -> None:
    declared: dict[str, AttributeType] = {f"a{i:02}": "set" for i in range(32)}
    raw = {name: [f"{name}-{j:02}-" + "x" * 200 for j in range(64)] for name in declared}
    claim = claim_value(raw, declared)
    assert 0 < len(json.dumps(claim, ensure_ascii=False)) <= MAX_CLAIM_CHARS
    assert len(claim) < len(declared)  # what does not fit is left out, whole


def test_attributes_from_the_claim_keep_their_shape() -> None:
    claim = {
        "department": "finance",
        "level": 3,
        "contractor": False,
        "regions": ["us", "eu"],
        "bad": {"x": 1},
    }
    claim |= {"float": 1.5, "mixed": ["a", 1], "long": "x" * 300, 7: "seven"}
    assert from_claim(claim) == (
        ("contractor", False),
        ("department", "finance"),
        ("level", 3),
        ("regions", ("eu", "us")),
    )
    assert from_claim("department=finance") == ()


T0 = 1_800_000_000
ISSUER = "https://gw.example.com"
RESOURCE = f"{ISSUER}/mcp/a"


def _token(ring: KeyRing, **extra: Any) -> str:
    claims = {"iss": ISSUER, "sub": "u1", "aud": RESOURCE, "exp": T0 + 300, "iat": T0, "nbf": T0}
    claims |= {"jti": "j1", "client_id": "c1", "scope": "mcp", **extra}
    key = ring.active
    return jwt.encode(claims, key.private_key, algorithm=key.alg, headers={"typ": "at+jwt", "kid": key.kid})


def test_the_bearer_principal_carries_the_attrs_claim() -> None:
    ring = KeyRing.generate(T0, clock=lambda: T0)
    verifier = BearerVerifier(ring, issuer=ISSUER, clock=lambda: T0)
    token = _token(ring, attrs={"regions": ["us", "eu"], "level": 3, "bad": None})
    assert verifier.verify(token, resource=RESOURCE).attributes == (("level", 3), ("regions", ("eu", "us")))
    assert verifier.verify(_token(ring, jti="j2"), resource=RESOURCE).attributes == ()
    with pytest.raises(InvalidToken, match="access token is invalid"):
        verifier.verify(_token(ring, jti="j3", attrs=["level"]), resource=RESOURCE)


# -- from an identity provider ------------------------------------------------------------------


def _provider(attributes: dict[str, str]) -> Any:
    return resolve(
        IdentityProvider.model_validate(
            {
                "name": "kc",
                "preset": "keycloak",
                "issuer": "https://kc.example/realms/acme",
                "client_id": "bastion",
                "client_secret": "s",
                "claims": {"attributes": attributes},
            }
        )
    )


def test_idp_claims_become_attributes() -> None:
    provider = _provider(
        {
            "department": "department",
            "level": "employee.level",
            "regions": "regions",
            "flag": "flag",
            "gone": "x.y",
        }
    )
    claims = {
        "iss": "https://kc.example/realms/acme",
        "sub": "s1",
        "department": "finance",
        "employee": {"level": 4},
        "regions": ["us", "eu", "us"],
        "flag": {"not": "a value"},
    }
    identity = identity_from_claims(provider, claims)
    assert identity.attributes == {"department": "finance", "level": 4, "regions": ["eu", "us"]}
    long = identity_from_claims(provider, {**claims, "department": "x" * 300, "regions": [1]})
    assert long.attributes == {"level": 4}


async def test_provisioning_replaces_mapped_attributes_and_keeps_the_others() -> None:
    users = MemoryUserStore()
    provider = _provider({"department": "department", "level": "level"})
    claims = {"iss": "https://kc.example/realms/acme", "sub": "s1", "department": "finance", "level": 2}
    first = await provision(users, provider, identity_from_claims(provider, claims))
    assert (first.attributes["department"], first.attributes["level"], first.attributes["idp"]) == (
        "finance",
        2,
        "kc",
    )
    await users.update_profile(
        first.user_id,
        display_name=first.display_name,
        email=first.email,
        groups=first.groups,
        attributes={**first.attributes, "team": "blue", "idp": "forged"},
    )
    claims = {"iss": claims["iss"], "sub": "s1", "department": "sales"}  # no level claim any more
    again = await provision(users, provider, identity_from_claims(provider, claims))
    assert again.attributes["department"] == "sales"
    assert "level" not in again.attributes
    assert again.attributes["team"] == "blue"  # not mapped: kept
    assert again.attributes["idp"] == "kc"  # set by provisioning, always
