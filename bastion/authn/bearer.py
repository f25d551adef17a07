"""Bearer access tokens at the resource server: RFC 6750 §2.1 header parsing and RFC 9068 §4
JWT access-token validation (``typ``, signature, ``iss``, ``exp``/``nbf``, ``aud`` per RFC 8707).

Each failure is its own class so the challenge (RFC 6750 §3) and the audit record can tell
them apart; none of them ever carries the token. The key source is a small protocol, so this
stage does not import the authorization server (``bastion.oauth``).

Error tree (under ``bastion.core.errors.ClientError``)::

    AuthnError
    ├── MissingToken      401, no error code (RFC 6750 §3.1: no credentials, no error)
    ├── MalformedToken    400, invalid_request (not ``Bearer <b64token>``)
    ├── InvalidToken      401, invalid_token (signature, kid, alg, typ, iss, claims)
    ├── ExpiredToken      401, invalid_token (exp / nbf / iat outside the leeway)
    └── WrongAudience     401, invalid_token (aud does not name this resource)

Tokens in the query string (RFC 6750 §2.3) are never looked at: callers pass the header only.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable
from typing import Any, ClassVar, Protocol

import jwt

from bastion.core.attributes import from_claim
from bastion.core.errors import ClientError
from bastion.core.records import Principal

Clock = Callable[[], float]
DEFAULT_ALGS: frozenset[str] = frozenset({"ES256", "EdDSA", "RS256"})
ACCESS_TOKEN_TYPS = frozenset({"at+jwt", "application/at+jwt"})  # RFC 9068 §4, case-insensitive
REQUIRED_CLAIMS = ("iss", "exp", "aud", "sub", "client_id", "iat", "jti")  # RFC 9068 §2.2
MAX_TOKEN_CHARS = 16_384
# RFC 6750 §2.1: credentials = "Bearer" 1*SP b64token; the scheme is case-insensitive (RFC 9110 §11.1)
_BEARER = re.compile(r"(?i:bearer) +([A-Za-z0-9\-._~+/]+=*)")


class AuthnError(ClientError):
    """A request's credentials were refused. ``error`` is the RFC 6750 §3.1 code, if any."""

    status = 401
    error: ClassVar[str | None] = "invalid_token"
    description: ClassVar[str] = "The access token is invalid"

    def __init__(self, detail: str = "", *, message: str | None = None) -> None:
        super().__init__(message or self.description, detail=detail)


class MissingToken(AuthnError):
    error = None
    description = "Authentication required"


class MalformedToken(AuthnError):
    status = 400
    error = "invalid_request"
    description = "The Authorization header is not a valid Bearer credential"


class InvalidToken(AuthnError):
    pass


class ExpiredToken(AuthnError):
    description = "The access token expired"


class WrongAudience(AuthnError):
    description = "The access token was not issued for this resource"


class VerificationKeys(Protocol):
    """Where public keys come from: Bastion's own key ring, or (later) a remote JWKS cache."""

    def verification_key(self, kid: str) -> jwt.PyJWK | None: ...


def parse_authorization(header_value: str | None) -> str | None:
    """The bearer token in an ``Authorization`` value; None when there is no header."""
    if header_value is None:
        return None
    match = _BEARER.fullmatch(header_value.strip(" \t"))
    if match is None or len(match.group(1)) > MAX_TOKEN_CHARS:
        raise MalformedToken("Authorization is not 'Bearer <b64token>'")
    return match.group(1)


def _number(claims: dict[str, Any], name: str) -> float:
    value = claims[name]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidToken(f"claim {name} is not a finite number")
    return float(value)


def _strings(claims: dict[str, Any], name: str) -> frozenset[str]:
    value = claims.get(name, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidToken(f"claim {name} is not a list of strings")
    return frozenset(value)


def _optional_string(claims: dict[str, Any], name: str) -> str | None:
    value = claims.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidToken(f"claim {name} is not a string")
    return value


class BearerVerifier:
    """Verifies Bastion's JWT access tokens for one issuer; a small cache covers the hot path."""

    def __init__(
        self,
        keys: VerificationKeys,
        *,
        issuer: str,
        clock: Clock,
        leeway_s: float = 30,
        allowed_algs: frozenset[str] = DEFAULT_ALGS,
        cache_size: int = 10_000,
    ) -> None:
        unsafe = {a for a in allowed_algs if a.lower() == "none" or a.upper().startswith("HS")}
        if unsafe or not allowed_algs:
            raise ValueError(f"allowed_algs must be non-empty asymmetric algorithms, not {sorted(unsafe)}")
        self._keys = keys
        self._issuer = issuer
        self._clock = clock
        self._leeway = leeway_s
        self._algs = allowed_algs
        self._cache_size = cache_size
        # (sha256(token), resource) -> (principal, exp, kid)
        self._cache: dict[tuple[bytes, str], tuple[Principal, float, str]] = {}

    def authenticate(self, header_value: str | None, *, resource: str) -> Principal:
        """Authorization header → Principal, or MissingToken / MalformedToken / a verify error."""
        token = parse_authorization(header_value)
        if token is None:
            raise MissingToken("no Authorization header")
        return self.verify(token, resource=resource)

    def verify(self, token: str, *, resource: str) -> Principal:
        cache_key = (hashlib.sha256(token.encode("utf-8")).digest(), resource)
        cached = self._cached(cache_key)
        if cached is not None:
            return cached
        header = self._check_header(token)
        key = self._check_key(header)
        claims = self._check_signature(token, key)
        self._check_issuer(claims)
        self._check_time(claims)
        self._check_audience(claims, resource)
        principal = self._principal(claims)
        self._remember(cache_key, principal, _number(claims, "exp"), header["kid"])
        return principal

    # -- the steps, in order -------------------------------------------------------------------

    def _cached(self, cache_key: tuple[bytes, str]) -> Principal | None:
        entry = self._cache.get(cache_key)
        if entry is None:
            return None
        principal, exp, kid = entry
        # never past exp (no leeway here), and never once the signing key is unpublished
        if self._clock() < exp and self._keys.verification_key(kid) is not None:
            return principal
        self._cache.pop(cache_key, None)
        return None

    def _check_header(self, token: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise InvalidToken("not a JWS compact serialization") from None
        typ, alg, kid = header.get("typ"), header.get("alg"), header.get("kid")
        if not isinstance(typ, str) or typ.lower() not in ACCESS_TOKEN_TYPS:
            raise InvalidToken("typ is not at+jwt")
        if not isinstance(alg, str) or alg not in self._algs:
            raise InvalidToken("alg is not allowed")
        if not isinstance(kid, str) or not kid:
            raise InvalidToken("no kid")
        return header

    def _check_key(self, header: dict[str, Any]) -> jwt.PyJWK:
        key = self._keys.verification_key(header["kid"])
        if key is None:
            raise InvalidToken("unknown kid")
        if key.algorithm_name != header["alg"] or key.algorithm_name not in self._algs:
            raise InvalidToken("alg does not match the key")
        return key

    def _check_signature(self, token: str, key: jwt.PyJWK) -> dict[str, Any]:
        options: jwt.types.Options = {
            "verify_signature": True,
            # time, iss and aud are checked below with the injected clock and typed errors
            "verify_exp": False,
            "verify_nbf": False,
            "verify_iat": False,
            "verify_iss": False,
            "verify_aud": False,
            "require": list(REQUIRED_CLAIMS),
        }
        try:
            return jwt.decode(token, key, algorithms=[key.algorithm_name], options=options)
        except jwt.PyJWTError as exc:
            raise InvalidToken(f"{type(exc).__name__}: {exc}") from None

    def _check_issuer(self, claims: dict[str, Any]) -> None:
        if claims["iss"] != self._issuer:
            raise InvalidToken("iss is not the trusted issuer")

    def _check_time(self, claims: dict[str, Any]) -> None:
        now = self._clock()
        if now >= _number(claims, "exp") + self._leeway:
            raise ExpiredToken("exp has passed")
        for name in ("nbf", "iat"):
            if name in claims and _number(claims, name) > now + self._leeway:
                raise ExpiredToken(f"{name} is in the future", message="The access token is not valid yet")

    def _check_audience(self, claims: dict[str, Any], resource: str) -> None:
        aud = claims["aud"]
        if isinstance(aud, str):
            audiences = [aud]
        elif isinstance(aud, list) and all(isinstance(a, str) for a in aud):
            audiences = aud
        else:
            raise InvalidToken("aud is neither a string nor a list of strings")
        if resource not in audiences:
            raise WrongAudience(f"aud does not contain {resource}")

    def _principal(self, claims: dict[str, Any]) -> Principal:
        sub, client_id, scope = claims["sub"], claims["client_id"], claims.get("scope", "")
        if not isinstance(sub, str) or not sub or not isinstance(client_id, str) or not client_id:
            raise InvalidToken("sub or client_id is not a non-empty string")
        if not isinstance(scope, str):
            raise InvalidToken("scope is not a string")
        attrs = claims.get("attrs", {})
        if not isinstance(attrs, dict):
            raise InvalidToken("claim attrs is not an object")
        return Principal(
            subject=sub,
            client_id=client_id,
            scopes=frozenset(scope.split()),
            groups=_strings(claims, "groups"),
            roles=_strings(claims, "roles"),
            token_id=claims["jti"],
            authenticated=True,
            username=_optional_string(claims, "preferred_username"),
            email=_optional_string(claims, "email"),
            attributes=from_claim(attrs),  # entries of the wrong shape are left out
        )

    def _remember(self, cache_key: tuple[bytes, str], principal: Principal, exp: float, kid: str) -> None:
        if self._cache_size <= 0:
            return
        while len(self._cache) >= self._cache_size:  # evict the oldest entry
            self._cache.pop(next(iter(self._cache)), None)
        self._cache[cache_key] = (principal, exp, kid)
