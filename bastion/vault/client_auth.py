"""Bastion's client authentication at a downstream token endpoint: ``client_secret_basic`` (with
the RFC 6749 §2.3.1 form-encoding of both parts), ``client_secret_post``, or an RFC 7523 §2.2
``private_key_jwt`` assertion (iss = sub = the client id, aud = the token endpoint, one minute,
a fresh ``jti``; ``kid`` when configured, and for an Entra certificate its SHA-1 thumbprint as
``x5t``). The key is read when an assertion is made, so a rotated key file needs no restart.
"""

from __future__ import annotations

import base64
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote_plus

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
CLIENT_ASSERTION_TTL_S = 60
Method = Literal["client_secret_basic", "client_secret_post", "private_key_jwt"]
SigningKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


class ClientKeyUnusable(Exception):
    """The private key (or certificate) of private_key_jwt cannot be used; ``str()`` says why,
    without any key material."""


@dataclass(frozen=True, slots=True)
class ClientAuth:
    client_id: str
    method: Method = "client_secret_basic"
    secret: str | None = field(default=None, repr=False)
    private_key_file: str | None = None
    private_key_id: str | None = None
    certificate_file: str | None = None  # Entra names the key by its certificate's thumbprint

    def apply(self, form: dict[str, str], token_endpoint: str) -> dict[str, str]:
        """Adds the client's credentials to ``form``; returns the headers they need. Raises
        :class:`ClientKeyUnusable`."""
        if self.method == "client_secret_basic":
            pair = f"{quote_plus(self.client_id, safe='')}:{quote_plus(self.secret or '', safe='')}"
            return {"authorization": "Basic " + base64.b64encode(pair.encode()).decode("ascii")}
        if self.method == "client_secret_post":
            form |= {"client_id": self.client_id, "client_secret": self.secret or ""}
            return {}
        form |= {
            "client_id": self.client_id,
            "client_assertion_type": CLIENT_ASSERTION_TYPE,
            "client_assertion": self.assertion(token_endpoint),
        }
        return {}

    def assertion(self, audience: str) -> str:
        """An RFC 7523 client assertion for ``audience`` (the token endpoint)."""
        if self.private_key_file is None:
            raise ClientKeyUnusable("private_key_jwt without private_key_file")
        try:
            loaded = serialization.load_pem_private_key(
                Path(self.private_key_file).read_bytes(), password=None
            )
        except (OSError, ValueError, TypeError) as exc:
            raise ClientKeyUnusable(f"private_key_file: {type(exc).__name__}") from None
        signing = signing_key(loaded)
        if signing is None:
            raise ClientKeyUnusable(f"private_key_file: {type(loaded).__name__} is not supported")
        key, alg = signing
        headers: dict[str, Any] = {}
        if self.private_key_id:
            headers["kid"] = self.private_key_id
        if self.certificate_file:
            headers["x5t"] = self._thumbprint()
        now = int(time.time())
        claims = {
            "iss": self.client_id,
            "sub": self.client_id,
            "aud": audience,
            "iat": now,
            "nbf": now,
            "exp": now + CLIENT_ASSERTION_TTL_S,
            "jti": secrets.token_urlsafe(16),
        }
        return jwt.encode(claims, key, algorithm=alg, headers=headers or None)

    def _thumbprint(self) -> str:
        assert self.certificate_file is not None
        try:
            cert = x509.load_pem_x509_certificate(Path(self.certificate_file).read_bytes())
        except (OSError, ValueError) as exc:
            raise ClientKeyUnusable(f"certificate_file: {type(exc).__name__}") from None
        digest = cert.fingerprint(hashes.SHA1())  # noqa: S303 - Entra names certificates by SHA-1 thumbprint
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def signing_key(key: object) -> tuple[SigningKey, str] | None:
    """The key and its JWS algorithm, for the key types an authorization server accepts."""
    if isinstance(key, rsa.RSAPrivateKey):
        return key, "RS256"
    if isinstance(key, ec.EllipticCurvePrivateKey):
        alg = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}.get(key.curve.name)
        return (key, alg) if alg else None
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key, "EdDSA"
    return None


__all__ = ["CLIENT_ASSERTION_TYPE", "ClientAuth", "ClientKeyUnusable", "signing_key"]
