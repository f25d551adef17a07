"""bastion.oauth.keys and bastion.oauth.tokens: RFC 9068 access tokens, RFC 7517/7638 key ring.

Real keys, real tokens, real verification through bastion.authn.bearer; no mocks.
"""

from __future__ import annotations

import base64
import hashlib
import json

import jwt
import pytest

from bastion.authn.bearer import BearerVerifier, InvalidToken
from bastion.oauth.keys import (
    InvalidMasterKey,
    KeyRing,
    KeyRingSealError,
    SigningKey,
    jwk_thumbprint,
    master_key_from_text,
)
from bastion.oauth.tokens import issue_access_token

T0 = 1_800_000_000.0
ISSUER = "https://gw.example.com"
RESOURCE = "https://gw.example.com/mcp/files"
MASTER = bytes(range(32))


class Clock:
    """A settable clock: the time source the code under test is given."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _issue(ring: KeyRing, now: float = T0, lifetime_s: int = 600) -> str:
    return issue_access_token(
        ring,
        issuer=ISSUER,
        subject="alice",
        audience=RESOURCE,
        client_id="client-1",
        scopes=["files:read", "files:write"],
        lifetime_s=lifetime_s,
        now=now,
    ).token


@pytest.mark.parametrize("alg", ["ES256", "EdDSA", "RS256"])
def test_round_trip_each_alg(alg: str) -> None:
    clock = Clock()
    ring = KeyRing.generate(T0, clock=clock, alg=alg)
    issued = issue_access_token(
        ring,
        issuer=ISSUER,
        subject="alice",
        audience=RESOURCE,
        client_id="client-1",
        scopes=["files:write", "files:read", "files:read"],
        lifetime_s=300,
        now=T0,
        extra_claims={"groups": ["eng"], "roles": ["admin"]},
    )
    header = jwt.get_unverified_header(issued.token)
    assert header == {"typ": "at+jwt", "alg": alg, "kid": ring.active.kid}
    claims = jwt.decode(issued.token, options={"verify_signature": False})
    assert claims["aud"] == RESOURCE
    assert claims["scope"] == "files:read files:write"
    assert claims["exp"] == claims["iat"] + 300 == issued.expires_at
    assert claims["nbf"] == claims["iat"] == int(T0)
    assert len(base64.urlsafe_b64decode(issued.jti + "==")) == 16
    assert issued.token not in repr(issued)

    principal = BearerVerifier(ring, issuer=ISSUER, clock=clock).verify(issued.token, resource=RESOURCE)
    assert principal.subject == "alice"
    assert principal.client_id == "client-1"
    assert principal.scopes == frozenset({"files:read", "files:write"})
    assert principal.groups == frozenset({"eng"})
    assert principal.roles == frozenset({"admin"})
    assert principal.token_id == issued.jti
    assert principal.authenticated is True


def test_issue_refuses_missing_audience_and_overlong_lifetime() -> None:
    ring = KeyRing.generate(T0, clock=Clock(), max_token_lifetime_s=900)
    kwargs = {"issuer": ISSUER, "subject": "a", "client_id": "c", "scopes": [], "now": T0}
    with pytest.raises(ValueError, match="audience"):
        issue_access_token(ring, audience="", lifetime_s=60, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="lifetime_s"):
        issue_access_token(ring, audience=RESOURCE, lifetime_s=901, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="registered claims"):
        issue_access_token(
            ring,
            audience=RESOURCE,
            lifetime_s=60,
            extra_claims={"aud": "https://other"},
            **kwargs,  # type: ignore[arg-type]
        )


def test_kid_is_rfc7638_thumbprint() -> None:
    # RFC 7638 §3.1 example key and its published thumbprint
    rsa_jwk = {
        "kty": "RSA",
        "n": (
            "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJE"
            "CPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2Q"
            "vzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6"
            "WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
        ),
        "e": "AQAB",
        "alg": "RS256",
        "kid": "2011-04-29",
    }
    assert jwk_thumbprint(rsa_jwk) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
    ring = KeyRing.generate(T0, clock=Clock())
    assert jwk_thumbprint(ring.jwks()["keys"][0]) == ring.active.kid


@pytest.mark.parametrize("alg", ["ES256", "EdDSA", "RS256"])
def test_jwks_has_public_members_only(alg: str) -> None:
    ring = KeyRing.generate(T0, clock=Clock(), alg=alg)
    (jwk,) = ring.jwks()["keys"]
    assert jwk["kid"] == ring.active.kid
    assert jwk["alg"] == alg
    assert jwk["use"] == "sig"
    assert not {"d", "p", "q", "dp", "dq", "qi", "oth", "k"} & set(jwk)
    expected = {"ES256": {"kty", "crv", "x", "y"}, "EdDSA": {"kty", "crv", "x"}, "RS256": {"kty", "n", "e"}}
    assert set(jwk) == expected[alg] | {"kid", "alg", "use"}
    assert "private_key" not in repr(ring.active)


def test_rotation_keeps_old_tokens_until_retire_after() -> None:
    clock = Clock()
    ring = KeyRing.generate(T0, clock=clock, max_token_lifetime_s=3600)
    assert ring.retire_after_s == 7200
    verifier = BearerVerifier(ring, issuer=ISSUER, clock=clock, cache_size=0)
    old_kid = ring.active.kid
    old_token = _issue(ring, now=T0, lifetime_s=3600)

    clock.now = T0 + 60
    new_key = ring.rotate(clock.now)
    assert ring.active is new_key
    assert new_key.kid != old_kid
    assert [k["kid"] for k in ring.jwks()["keys"]] == [new_key.kid, old_kid]
    assert verifier.verify(old_token, resource=RESOURCE).subject == "alice"  # signed before the rotation
    new_token = _issue(ring, now=clock.now)
    assert jwt.get_unverified_header(new_token)["kid"] == new_key.kid
    assert verifier.verify(new_token, resource=RESOURCE).subject == "alice"

    clock.now = T0 + 3600 - 1  # still valid until its own expiry
    assert verifier.verify(old_token, resource=RESOURCE).subject == "alice"

    clock.now = T0 + 60 + 7200  # retire_after has passed: the old kid is gone
    assert [k["kid"] for k in ring.jwks()["keys"]] == [new_key.kid]
    assert ring.verification_key(old_kid) is None
    with pytest.raises(InvalidToken) as refused:
        verifier.verify(old_token, resource=RESOURCE)
    assert refused.value.detail == "unknown kid"
    ring.prune(clock.now)
    assert [k.kid for k in ring.published_keys()] == [new_key.kid]


def test_export_load_round_trip() -> None:
    clock = Clock()
    ring = KeyRing.generate(T0, clock=clock, alg="EdDSA")
    ring.rotate(T0 + 10, alg="ES256")
    blob = ring.export(MASTER)
    assert b"PRIVATE" not in blob
    loaded = KeyRing.load(blob, MASTER, clock=clock)
    assert loaded.jwks() == ring.jwks()
    assert loaded.active.kid == ring.active.kid
    assert [(k.kid, k.alg, k.created_at, k.retired_at, k.not_after) for k in loaded.published_keys()] == [
        (k.kid, k.alg, k.created_at, k.retired_at, k.not_after) for k in ring.published_keys()
    ]
    token = _issue(loaded, now=T0 + 10)  # a loaded ring signs tokens the original ring's JWKS verifies
    assert (
        BearerVerifier(ring, issuer=ISSUER, clock=clock).verify(token, resource=RESOURCE).subject == "alice"
    )


def test_load_with_wrong_master_key() -> None:
    blob = KeyRing.generate(T0, clock=Clock()).export(MASTER)
    with pytest.raises(KeyRingSealError, match="master key is wrong or the key ring data was altered"):
        KeyRing.load(blob, bytes(32), clock=Clock())


def test_every_flipped_byte_is_detected() -> None:
    blob = KeyRing.generate(T0, clock=Clock()).export(MASTER)
    for i in range(len(blob)):
        tampered = bytearray(blob)
        tampered[i] ^= 0x01
        with pytest.raises(KeyRingSealError):
            KeyRing.load(bytes(tampered), MASTER, clock=Clock())


def test_master_key_from_text() -> None:
    key = hashlib.sha256(b"x").digest()
    assert master_key_from_text(key.hex()) == key
    assert master_key_from_text(base64.b64encode(key).decode() + "\n") == key
    assert master_key_from_text(base64.urlsafe_b64encode(key).decode().rstrip("=")) == key
    with pytest.raises(InvalidMasterKey, match="decodes to 16 bytes"):
        master_key_from_text(base64.b64encode(key[:16]).decode())
    with pytest.raises(InvalidMasterKey, match="neither base64"):
        master_key_from_text("not a key!")
    with pytest.raises(InvalidMasterKey):
        KeyRing.generate(T0, clock=Clock()).export(key[:31])


def test_ring_rejects_inconsistent_keys() -> None:
    a, b = SigningKey.generate(T0), SigningKey.generate(T0)
    with pytest.raises(ValueError, match="exactly one active key"):
        KeyRing([a, b], clock=Clock())
    with pytest.raises(ValueError, match="does not fit"):
        KeyRing([SigningKey(a.kid, "EdDSA", T0, a.private_key)], clock=Clock())
    assert json.loads(KeyRing([a], clock=Clock()).export(MASTER))["v"] == 1
