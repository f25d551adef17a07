"""The signing key ring for Bastion's own access tokens.

- Public keys are published as a JWK Set (RFC 7517 §5) with ``use: "sig"`` and ``alg``;
  members per RFC 7518 §6.2 (EC), §6.3 (RSA) and RFC 8037 §2 (OKP/Ed25519).
- Each ``kid`` is the key's JWK thumbprint (RFC 7638 §3), base64url without padding.
- Rotation: one *active* key signs; a retired key stays published (and accepted for
  verification) until ``retire_after_s`` (default 2x the longest access-token lifetime) has
  passed, so every token it signed expires before its key disappears.
- At rest: each private key is PKCS#8 DER sealed with AES-256-GCM (NIST SP 800-38D) under a
  32-byte master key, a random 96-bit nonce, and the key's metadata (its kid first) as
  associated data. A wrong master key and altered data both raise :class:`KeyRingSealError`.

The clock is injected: ``now`` parameters, and a ``clock`` callable for the lookups that a
verifier makes without one.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any, TypeAlias

import jwt
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from bastion.core.crypto import key_from_text

PrivateKey: TypeAlias = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey
Clock: TypeAlias = Callable[[], float]
_PRIVATE_KEY_TYPES = (ec.EllipticCurvePrivateKey, ed25519.Ed25519PrivateKey, rsa.RSAPrivateKey)

ALGORITHMS: frozenset[str] = frozenset({"ES256", "EdDSA", "RS256"})
DEFAULT_ALG = "ES256"
RSA_KEY_BITS = 3072
DEFAULT_MAX_TOKEN_LIFETIME_S = 3600
MASTER_KEY_BYTES = 32

_FORMAT = "bastion-keyring"
_VERSION = 1
_AAD_PREFIX = b"bastion-keyring-v1\x00"
# RFC 7638 §3.2: the required members of each key type, in lexicographic order
_THUMBPRINT_MEMBERS = {"EC": ("crv", "kty", "x", "y"), "OKP": ("crv", "kty", "x"), "RSA": ("e", "kty", "n")}


class KeyRingSealError(Exception):
    """The sealed key ring cannot be opened: the master key is wrong or the data was altered."""


class InvalidMasterKey(ValueError):
    """The master key is not 32 bytes written as base64, base64url or hex."""


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode_strict(text: str) -> bytes:
    """Decode unpadded base64url, refusing any non-canonical spelling (so no byte can change silently)."""
    raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if _b64url(raw) != text:
        raise ValueError("non-canonical base64url")
    return raw


def _public_members(private_key: PrivateKey) -> dict[str, str]:
    """The public JWK members of a key (no kid/alg/use, never private parts)."""
    public = private_key.public_key()
    if isinstance(public, ec.EllipticCurvePublicKey):
        jwk = ECAlgorithm.to_jwk(public, as_dict=True)
    elif isinstance(public, ed25519.Ed25519PublicKey):
        jwk = OKPAlgorithm.to_jwk(public, as_dict=True)
    else:
        jwk = RSAAlgorithm.to_jwk(public, as_dict=True)
    return {name: str(jwk[name]) for name in _THUMBPRINT_MEMBERS[str(jwk["kty"])]}


def jwk_thumbprint(members: dict[str, str]) -> str:
    """RFC 7638 §3: SHA-256 over the required members, sorted, no whitespace; base64url."""
    required = {name: members[name] for name in _THUMBPRINT_MEMBERS[members["kty"]]}
    canonical = json.dumps(required, separators=(",", ":"), sort_keys=True).encode("utf-8")
    return _b64url(hashlib.sha256(canonical).digest())


def _alg_matches(alg: str, private_key: PrivateKey) -> bool:
    if alg == "ES256":
        return isinstance(private_key, ec.EllipticCurvePrivateKey) and isinstance(
            private_key.curve, ec.SECP256R1
        )
    if alg == "EdDSA":
        return isinstance(private_key, ed25519.Ed25519PrivateKey)
    return alg == "RS256" and isinstance(private_key, rsa.RSAPrivateKey) and private_key.key_size >= 2048


def generate_private_key(alg: str = DEFAULT_ALG) -> PrivateKey:
    if alg == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    if alg == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    if alg == "RS256":
        return rsa.generate_private_key(public_exponent=65537, key_size=RSA_KEY_BITS)
    raise ValueError(f"unsupported signing algorithm {alg!r}; use one of {sorted(ALGORITHMS)}")


@dataclass(frozen=True, slots=True)
class SigningKey:
    """One signing key. ``retired_at`` is when it stopped signing; ``not_after`` when it is unpublished."""

    kid: str
    alg: str
    created_at: float
    private_key: PrivateKey = field(repr=False, compare=False)
    retired_at: float | None = None
    not_after: float | None = None

    @classmethod
    def generate(cls, now: float, alg: str = DEFAULT_ALG) -> SigningKey:
        private_key = generate_private_key(alg)
        return cls(jwk_thumbprint(_public_members(private_key)), alg, now, private_key)

    @property
    def active(self) -> bool:
        return self.retired_at is None

    def published(self, now: float) -> bool:
        return self.not_after is None or now < self.not_after

    def public_jwk(self) -> dict[str, str]:
        return {**_public_members(self.private_key), "kid": self.kid, "alg": self.alg, "use": "sig"}

    def metadata(self) -> dict[str, Any]:
        return {
            "kid": self.kid,
            "alg": self.alg,
            "created_at": self.created_at,
            "retired_at": self.retired_at,
            "not_after": self.not_after,
        }


def _aad(meta: dict[str, Any]) -> bytes:
    return _AAD_PREFIX + json.dumps(meta, separators=(",", ":"), sort_keys=True).encode("utf-8")


class KeyRing:
    """One active signing key plus the retired keys still published for verification."""

    def __init__(
        self,
        keys: Iterable[SigningKey],
        *,
        clock: Clock,
        max_token_lifetime_s: int = DEFAULT_MAX_TOKEN_LIFETIME_S,
        retire_after_s: float | None = None,
    ) -> None:
        if max_token_lifetime_s <= 0:
            raise ValueError("max_token_lifetime_s must be positive")
        self.max_token_lifetime_s = max_token_lifetime_s
        self.retire_after_s = 2.0 * max_token_lifetime_s if retire_after_s is None else retire_after_s
        if self.retire_after_s < max_token_lifetime_s:
            raise ValueError("retire_after_s must be at least the longest access-token lifetime")
        self._clock = clock
        self._set_keys(tuple(keys))

    @classmethod
    def generate(
        cls,
        now: float,
        *,
        clock: Clock,
        alg: str = DEFAULT_ALG,
        max_token_lifetime_s: int = DEFAULT_MAX_TOKEN_LIFETIME_S,
        retire_after_s: float | None = None,
    ) -> KeyRing:
        return cls(
            [SigningKey.generate(now, alg)],
            clock=clock,
            max_token_lifetime_s=max_token_lifetime_s,
            retire_after_s=retire_after_s,
        )

    def _set_keys(self, keys: tuple[SigningKey, ...]) -> None:
        active = [k for k in keys if k.active]
        if len(active) != 1:
            raise ValueError(f"a key ring needs exactly one active key, got {len(active)}")
        if len({k.kid for k in keys}) != len(keys):
            raise ValueError("duplicate kid in key ring")
        for k in keys:
            if k.alg not in ALGORITHMS or not _alg_matches(k.alg, k.private_key):
                raise ValueError(f"key {k.kid}: algorithm {k.alg!r} does not fit its key")
        # built once: verification on the hot path is a dict lookup
        by_kid = {k.kid: (k, jwt.PyJWK(k.public_jwk())) for k in keys}
        self._keys, self._active, self._by_kid = keys, active[0], by_kid

    @property
    def active(self) -> SigningKey:
        return self._active

    def published_keys(self, now: float | None = None) -> tuple[SigningKey, ...]:
        """The published keys at ``now`` (default: the ring's clock), active first."""
        at = self._clock() if now is None else now
        return tuple(k for k in sorted(self._keys, key=lambda k: not k.active) if k.published(at))

    def rotate(self, now: float, *, alg: str | None = None) -> SigningKey:
        """Make a new active key; the old one keeps verifying until ``now + retire_after_s``."""
        new = SigningKey.generate(now, alg or self._active.alg)
        old = replace(self._active, retired_at=now, not_after=now + self.retire_after_s)
        kept = tuple(k for k in self._keys if not k.active and k.published(now))
        self._set_keys((new, old, *kept))
        return new

    def prune(self, now: float) -> None:
        """Forget retired keys past their ``not_after`` (also done by :meth:`rotate`)."""
        self._set_keys(tuple(k for k in self._keys if k.published(now)))

    def jwks(self, now: float | None = None) -> dict[str, list[dict[str, str]]]:
        """RFC 7517 §5 JWK Set of the published public keys (never a private member)."""
        return {"keys": [k.public_jwk() for k in self.published_keys(now)]}

    def verification_key(self, kid: str) -> jwt.PyJWK | None:
        """The public key for ``kid`` if it is published now, else None."""
        found = self._by_kid.get(kid)
        if found is None:
            return None
        key, verifier = found
        return verifier if key.published(self._clock()) else None

    # -- persistence -------------------------------------------------------------------------

    def export(self, master_key: bytes) -> bytes:
        """Seal every private key (PKCS#8 DER, AES-256-GCM, metadata as associated data)."""
        aead = AESGCM(_check_master_key(master_key))
        entries = []
        for k in self._keys:
            der = k.private_key.private_bytes(
                serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
            nonce = os.urandom(12)
            meta = k.metadata()
            sealed = aead.encrypt(nonce, der, _aad(meta))
            entries.append({**meta, "nonce": _b64url(nonce), "sealed": _b64url(sealed)})
        doc = {"format": _FORMAT, "v": _VERSION, "keys": entries}
        return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode("utf-8")

    @classmethod
    def load(
        cls,
        blob: bytes,
        master_key: bytes,
        *,
        clock: Clock,
        max_token_lifetime_s: int = DEFAULT_MAX_TOKEN_LIFETIME_S,
        retire_after_s: float | None = None,
    ) -> KeyRing:
        aead = AESGCM(_check_master_key(master_key))
        try:
            keys = [_open_entry(aead, entry) for entry in _parse_blob(blob)]
            return cls(
                keys, clock=clock, max_token_lifetime_s=max_token_lifetime_s, retire_after_s=retire_after_s
            )
        except KeyRingSealError:
            raise
        except (ValueError, KeyError, TypeError) as exc:
            raise KeyRingSealError(f"the key ring data was altered or is not a key ring ({exc})") from None


def _parse_blob(blob: bytes) -> list[dict[str, Any]]:
    doc = json.loads(blob)
    if not isinstance(doc, dict) or doc.get("format") != _FORMAT or doc.get("v") != _VERSION:
        raise ValueError("unknown format or version")
    if set(doc) != {"format", "v", "keys"} or not isinstance(doc["keys"], list):
        raise ValueError("unexpected members")
    return [e if isinstance(e, dict) else {} for e in doc["keys"]]


def _open_entry(aead: AESGCM, entry: dict[str, Any]) -> SigningKey:
    meta = {name: entry[name] for name in ("kid", "alg", "created_at", "retired_at", "not_after")}
    if set(entry) != {*meta, "nonce", "sealed"}:
        raise ValueError("unexpected members")
    nonce = _b64url_decode_strict(entry["nonce"])
    try:
        der = aead.decrypt(nonce, _b64url_decode_strict(entry["sealed"]), _aad(meta))
    except InvalidTag:
        raise KeyRingSealError(
            f"cannot open signing key {meta['kid']}: the master key is wrong or the key ring data was altered"
        ) from None
    private_key = serialization.load_der_private_key(der, password=None)
    if not isinstance(private_key, _PRIVATE_KEY_TYPES):
        raise ValueError("unsupported key type")
    if jwk_thumbprint(_public_members(private_key)) != meta["kid"]:
        raise ValueError("kid does not match the key's thumbprint")
    return SigningKey(
        kid=meta["kid"],
        alg=meta["alg"],
        created_at=float(meta["created_at"]),
        private_key=private_key,
        retired_at=None if meta["retired_at"] is None else float(meta["retired_at"]),
        not_after=None if meta["not_after"] is None else float(meta["not_after"]),
    )


def _check_master_key(master_key: bytes) -> bytes:
    if not isinstance(master_key, bytes) or len(master_key) != MASTER_KEY_BYTES:
        raise InvalidMasterKey(f"the master key must be exactly {MASTER_KEY_BYTES} bytes")
    return master_key


def master_key_from_text(text: str) -> bytes:
    """32 bytes written as hex (64 digits), base64 or base64url (padded or not)."""
    try:
        return key_from_text(text)
    except ValueError as exc:
        raise InvalidMasterKey(f"master key: {exc}") from None
