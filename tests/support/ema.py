"""Enterprise-Managed Authorization test helpers: a throwaway IdP signing key, ID-JAGs minted
with it, and RFC 9449 DPoP proofs."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from typing import Any

import httpx2
import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

IDP = "https://idp.example.test"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def public_jwk(key: ec.EllipticCurvePrivateKey) -> dict[str, Any]:
    return dict(json.loads(ECAlgorithm.to_jwk(key.public_key())))


def jwks(key: ec.EllipticCurvePrivateKey, kid: str = "idp-1") -> dict[str, Any]:
    return {"keys": [{**public_jwk(key), "kid": kid, "alg": "ES256", "use": "sig"}]}


def trusted_issuer(key: ec.EllipticCurvePrivateKey, issuer: str = IDP) -> dict[str, Any]:
    return {"issuer": issuer, "jwks": jwks(key), "algorithms": ["ES256"]}


def thumbprint(key: ec.EllipticCurvePrivateKey) -> str:
    """RFC 7638 thumbprint of an EC public key (required members, lexicographic, no spaces)."""
    jwk = public_jwk(key)
    canonical = json.dumps({k: jwk[k] for k in ("crv", "kty", "x", "y")}, separators=(",", ":"))
    digest = hashlib.sha256(canonical.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def id_jag(
    key: ec.EllipticCurvePrivateKey,
    *,
    aud: str,
    resource: str | None,
    client_id: str = "agent",
    issuer: str = IDP,
    **claims: Any,
) -> str:
    now = int(time.time())
    body: dict[str, Any] = {
        "iss": issuer,
        "sub": "user-42",
        "aud": aud,
        "client_id": client_id,
        "jti": secrets.token_urlsafe(12),
        "iat": now,
        "exp": now + 300,
        "resource": resource,
        "scope": "mcp",
        "email": "carol@example.test",
        **claims,
    }
    body = {k: v for k, v in body.items() if v is not None}
    return jwt.encode(body, key, algorithm="ES256", headers={"typ": "oauth-id-jag+jwt", "kid": "idp-1"})


def dpop_proof(
    key: ec.EllipticCurvePrivateKey,
    *,
    htu: str,
    htm: str = "POST",
    jwk: dict[str, Any] | None = None,
    jti: str | None = None,
) -> str:
    claims = {"jti": jti or secrets.token_urlsafe(16), "htm": htm, "htu": htu, "iat": int(time.time())}
    header = {"typ": "dpop+jwt", "jwk": jwk if jwk is not None else public_jwk(key)}
    return jwt.encode(claims, key, algorithm="ES256", headers=header)


async def redeem(
    base: str, assertion: str, *, client: str, secret: str, dpop: str | None = None, **form: str
) -> httpx2.Response:
    headers = {"DPoP": dpop} if dpop is not None else {}
    async with httpx2.AsyncClient(timeout=30) as http:
        return await http.post(
            f"{base}/token",
            data={"grant_type": JWT_BEARER, "assertion": assertion, **form},
            auth=(client, secret),
            headers=headers,
        )
