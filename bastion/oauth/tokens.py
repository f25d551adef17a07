"""RFC 9068 JWT access tokens, signed by the key ring's active key.

- Header (RFC 9068 §2.1): ``typ: at+jwt``, ``alg`` of the signing key, ``kid`` (its RFC 7638
  thumbprint).
- Claims (RFC 9068 §2.2): ``iss``, ``sub``, ``aud`` (the exact resource URL, RFC 8707 §2, one
  string), ``exp``, ``iat``, ``nbf``, ``jti`` (128 random bits), ``client_id`` and ``scope``
  (space-separated, RFC 9068 §2.2.3 / RFC 8693 §4.2), plus caller-chosen extras such as
  ``groups``/``roles`` (§2.2.3.1) that may not override a registered claim.
- A token is never issued without an audience, and never for longer than the key ring's
  ``max_token_lifetime_s`` (the retirement delay of old keys is derived from it).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import jwt

from bastion.oauth.keys import KeyRing

ACCESS_TOKEN_TYP = "at+jwt"  # noqa: S105 - a media type, not a secret
REGISTERED_CLAIMS = frozenset({"iss", "sub", "aud", "exp", "iat", "nbf", "jti", "client_id", "scope"})


@dataclass(frozen=True, slots=True)
class IssuedToken:
    token: str = field(repr=False)  # the token itself never reaches a log line
    jti: str
    expires_at: int


def _non_empty(name: str, value: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name} must be a non-empty string")
    return value


def _scope_value(scopes: Iterable[str]) -> str:
    """RFC 6749 §3.3 scope-token: printable ASCII except space, ``"`` and ``\\``."""
    unique = sorted(set(scopes))
    for scope in unique:
        if not scope or any(c in ' "\\' or not 0x21 <= ord(c) <= 0x7E for c in scope):
            raise ValueError(f"invalid scope token {scope!r}")
    return " ".join(unique)


def issue_access_token(
    ring: KeyRing,
    *,
    issuer: str,
    subject: str,
    audience: str,
    client_id: str,
    scopes: Iterable[str],
    lifetime_s: int,
    now: float,
    extra_claims: Mapping[str, object] | None = None,
) -> IssuedToken:
    """Sign an access token for one resource (``audience``) with the ring's active key."""
    _non_empty("audience", audience)
    if not 0 < lifetime_s <= ring.max_token_lifetime_s:
        raise ValueError(f"lifetime_s must be in 1..{ring.max_token_lifetime_s} (the key ring's maximum)")
    extras = dict(extra_claims or {})
    clash = REGISTERED_CLAIMS.intersection(extras)
    if clash:
        raise ValueError(f"extra_claims may not set registered claims: {sorted(clash)}")
    issued_at = int(now)
    jti = secrets.token_urlsafe(16)
    claims: dict[str, object] = {
        **extras,
        "iss": _non_empty("issuer", issuer),
        "sub": _non_empty("subject", subject),
        "aud": audience,
        "exp": issued_at + lifetime_s,
        "iat": issued_at,
        "nbf": issued_at,
        "jti": jti,
        "client_id": _non_empty("client_id", client_id),
    }
    scope = _scope_value(scopes)
    if scope:
        claims["scope"] = scope
    key = ring.active
    token = jwt.encode(
        claims, key.private_key, algorithm=key.alg, headers={"typ": ACCESS_TOKEN_TYP, "kid": key.kid}
    )
    return IssuedToken(token=token, jti=jti, expires_at=issued_at + lifetime_s)
