"""bastion.authn.bearer: RFC 6750 §2.1 header parsing and RFC 9068 §4 validation failures.

Each bad token is a real token (signed by a real key, or built by hand for attacks that
pyjwt refuses to produce) and each case asserts the exact error class.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from bastion.authn.bearer import (
    AuthnError,
    BearerVerifier,
    ExpiredToken,
    InvalidToken,
    MalformedToken,
    MissingToken,
    WrongAudience,
    parse_authorization,
)
from bastion.core.errors import ClientError
from bastion.oauth.keys import KeyRing

T0 = 1_800_000_000
ISSUER = "https://gw.example.com"
RESOURCE = "https://gw.example.com/mcp/a"


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def ring(clock: Clock) -> KeyRing:
    return KeyRing.generate(T0, clock=clock)


@pytest.fixture
def verifier(ring: KeyRing, clock: Clock) -> BearerVerifier:
    return BearerVerifier(ring, issuer=ISSUER, clock=clock)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claims(**overrides: Any) -> dict[str, Any]:
    claims = {
        "iss": ISSUER,
        "sub": "alice",
        "aud": RESOURCE,
        "exp": T0 + 300,
        "iat": T0,
        "nbf": T0,
        "jti": "j1",
        "client_id": "c1",
        "scope": "read",
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def _sign(ring: KeyRing, claims: dict[str, Any], **header: Any) -> str:
    key = ring.active
    headers = {"typ": "at+jwt", "kid": key.kid, **header}
    return jwt.encode(claims, key.private_key, algorithm=key.alg, headers=headers)


def _by_hand(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> tuple[str, bytes]:
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    return signing_input, signature


def test_valid_token(verifier: BearerVerifier, ring: KeyRing) -> None:
    principal = verifier.authenticate(f"Bearer {_sign(ring, _claims())}", resource=RESOURCE)
    assert (principal.subject, principal.client_id, principal.scopes) == ("alice", "c1", frozenset({"read"}))


def test_username_and_email_claims_reach_the_principal(verifier: BearerVerifier, ring: KeyRing) -> None:
    """Policy rules name users by username or e-mail (``allow: {users: [alice]}``)."""
    token = _sign(ring, _claims(preferred_username="alice", email="alice@acme.example"))
    principal = verifier.verify(token, resource=RESOURCE)
    assert (principal.username, principal.email) == ("alice", "alice@acme.example")
    assert verifier.verify(_sign(ring, _claims(jti="j2")), resource=RESOURCE).username is None


@pytest.mark.parametrize("typ", ["AT+JWT", "application/at+jwt", "Application/AT+JWT"])
def test_typ_is_case_insensitive(verifier: BearerVerifier, ring: KeyRing, typ: str) -> None:
    assert verifier.verify(_sign(ring, _claims(), typ=typ), resource=RESOURCE).authenticated


@pytest.mark.parametrize(
    ("claims", "error"),
    [
        (_claims(exp=T0 - 31), ExpiredToken),  # past exp + 30 s leeway
        (_claims(nbf=T0 + 31), ExpiredToken),  # not yet valid
        (_claims(iat=T0 + 31), ExpiredToken),
        (_claims(iss="https://evil.example.com"), InvalidToken),
        (_claims(aud="https://gw.example.com/mcp/b"), WrongAudience),
        (_claims(aud=["https://gw.example.com/mcp/b", "https://gw.example.com/mcp"]), WrongAudience),
        (_claims(aud=RESOURCE + "/"), WrongAudience),
        (_claims(aud=[]), WrongAudience),
        (_claims(aud=[1]), InvalidToken),
        (_claims(exp=None), InvalidToken),
        (_claims(sub=None), InvalidToken),
        (_claims(client_id=None), InvalidToken),
        (_claims(jti=None), InvalidToken),
        (_claims(exp="soon"), InvalidToken),
        (_claims(scope=["read"]), InvalidToken),
        (_claims(preferred_username=["alice"]), InvalidToken),
        (_claims(email=7), InvalidToken),
    ],
)
def test_claim_failures(verifier: BearerVerifier, ring: KeyRing, claims: dict[str, Any], error: type) -> None:
    with pytest.raises(error) as refused:
        verifier.verify(_sign(ring, claims), resource=RESOURCE)
    assert type(refused.value) is error


def test_leeway_accepts_slightly_expired(verifier: BearerVerifier, ring: KeyRing) -> None:
    assert verifier.verify(_sign(ring, _claims(exp=T0 - 29)), resource=RESOURCE).authenticated
    assert verifier.verify(_sign(ring, _claims(aud=["x", RESOURCE])), resource=RESOURCE).authenticated


def test_wrong_typ_and_missing_kid(verifier: BearerVerifier, ring: KeyRing) -> None:
    for typ in ["JWT", "jwt", "id_token+jwt"]:
        with pytest.raises(InvalidToken):
            verifier.verify(_sign(ring, _claims(), typ=typ), resource=RESOURCE)
    with pytest.raises(InvalidToken):
        verifier.verify(_sign(ring, _claims(), kid="unknown-kid"), resource=RESOURCE)


def test_alg_none(verifier: BearerVerifier, ring: KeyRing) -> None:
    for alg in ["none", "None", "NONE"]:
        signing_input, _ = _by_hand({"typ": "at+jwt", "alg": alg, "kid": ring.active.kid}, _claims())
        with pytest.raises(InvalidToken):
            verifier.verify(signing_input + ".", resource=RESOURCE)


def test_hs256_with_the_public_key_as_secret(verifier: BearerVerifier, ring: KeyRing) -> None:
    public = ring.active.private_key.public_key()
    for secret in [
        public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
        json.dumps(ring.jwks()["keys"][0]).encode(),
    ]:
        signing_input, _ = _by_hand({"typ": "at+jwt", "alg": "HS256", "kid": ring.active.kid}, _claims())
        mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
        with pytest.raises(InvalidToken):
            verifier.verify(f"{signing_input}.{_b64(mac)}", resource=RESOURCE)
    with pytest.raises(ValueError, match="asymmetric"):
        BearerVerifier(ring, issuer=ISSUER, clock=Clock(), allowed_algs=frozenset({"ES256", "HS256"}))


def test_alg_not_allowed_or_not_the_keys(ring: KeyRing, clock: Clock) -> None:
    only_eddsa = BearerVerifier(ring, issuer=ISSUER, clock=clock, allowed_algs=frozenset({"EdDSA"}))
    with pytest.raises(InvalidToken):
        only_eddsa.verify(_sign(ring, _claims()), resource=RESOURCE)
    signing_input, _ = _by_hand({"typ": "at+jwt", "alg": "RS256", "kid": ring.active.kid}, _claims())
    with pytest.raises(InvalidToken):  # an RS256 header naming an ES256 key
        BearerVerifier(ring, issuer=ISSUER, clock=clock).verify(signing_input + ".AAAA", resource=RESOURCE)


def test_tampered_payload_and_signature(verifier: BearerVerifier, ring: KeyRing) -> None:
    header, payload, signature = _sign(ring, _claims()).split(".")
    forged_payload = _b64(json.dumps(_claims(sub="mallory")).encode())
    with pytest.raises(InvalidToken):
        verifier.verify(f"{header}.{forged_payload}.{signature}", resource=RESOURCE)
    raw = bytearray(base64.urlsafe_b64decode(signature + "=="))
    raw[5] ^= 0x01
    with pytest.raises(InvalidToken):
        verifier.verify(f"{header}.{payload}.{_b64(bytes(raw))}", resource=RESOURCE)
    with pytest.raises(InvalidToken):
        verifier.verify("not-a-jwt", resource=RESOURCE)


def test_other_issuers_key_is_unknown(verifier: BearerVerifier, clock: Clock) -> None:
    other = KeyRing.generate(T0, clock=clock)
    with pytest.raises(InvalidToken):
        verifier.verify(_sign(other, _claims()), resource=RESOURCE)


@pytest.mark.parametrize(
    "value", ["Basic eDp5", "Bearer", "Bearer ", "Bearer a b", "Bearer a,b", "", "Bearera", "Bearer\ta"]
)
def test_malformed_authorization(value: str) -> None:
    with pytest.raises(MalformedToken) as refused:
        parse_authorization(value)
    assert refused.value.error == "invalid_request"
    assert refused.value.status == 400


def test_authorization_parsing() -> None:
    assert parse_authorization(None) is None
    assert parse_authorization("bearer abc.DEF-_~+/==") == "abc.DEF-_~+/=="
    assert parse_authorization("BEARER t") == "t"
    with pytest.raises(MalformedToken):
        parse_authorization("Bearer " + "a" * 20_000)


def test_missing_token_has_no_error_code(verifier: BearerVerifier) -> None:
    with pytest.raises(MissingToken) as refused:
        verifier.authenticate(None, resource=RESOURCE)
    assert refused.value.error is None
    assert refused.value.status == 401


def test_errors_are_client_errors_without_the_token(verifier: BearerVerifier, ring: KeyRing) -> None:
    token = _sign(ring, _claims(exp=T0 - 100))
    with pytest.raises(ExpiredToken) as refused:
        verifier.verify(token, resource=RESOURCE)
    error: AuthnError = refused.value
    assert isinstance(error, ClientError)
    assert (error.error, error.status) == ("invalid_token", 401)
    assert token not in f"{error} {error.message} {error.detail}"


def test_cache_never_outlives_exp_or_crosses_resources(ring: KeyRing, clock: Clock) -> None:
    verifier = BearerVerifier(ring, issuer=ISSUER, clock=clock, leeway_s=0, cache_size=2)
    token = _sign(ring, _claims(exp=T0 + 60))
    assert verifier.verify(token, resource=RESOURCE).subject == "alice"
    assert verifier.verify(token, resource=RESOURCE).subject == "alice"  # from the cache
    with pytest.raises(WrongAudience):
        verifier.verify(token, resource="https://gw.example.com/mcp/b")
    clock.now = T0 + 60
    with pytest.raises(ExpiredToken):
        verifier.verify(token, resource=RESOURCE)
    clock.now = T0
    for i in range(5):  # bounded: older entries are evicted
        verifier.verify(_sign(ring, _claims(jti=f"j{i}")), resource=RESOURCE)
    assert len(verifier._cache) == 2
