"""Client authentication at the token, revocation and introspection endpoints.

Methods (RFC 8414 ``token_endpoint_auth_methods_supported``): ``none`` (public client: the
``client_id`` parameter only, PKCE protects the code), ``client_secret_basic`` (RFC 6749 §2.3.1:
HTTP Basic with the form-urlencoded id and secret), ``client_secret_post`` (the same two as form
parameters) and ``private_key_jwt`` (RFC 7523 §2.2 / §3, OIDC Core §9: a JWT signed by the
client). Exactly one method per request (RFC 6749 §2.3: MUST NOT use more than one).

This module extracts and checks the presented credential; looking the client up, comparing the
secret hash and remembering assertion ids are the caller's, passed in as small callables.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus

import jwt

from bastion.oauth.errors import InvalidClient, InvalidRequest

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_ALGS = ("ES256", "EdDSA", "RS256", "PS256")
MAX_ASSERTION_LIFETIME = 600  # seconds: a client assertion is a one-shot credential


@dataclass(frozen=True, slots=True)
class PresentedClient:
    client_id: str
    method: str  # none | client_secret_basic | client_secret_post | private_key_jwt
    secret: str | None = None
    assertion: str | None = None


def _one(form: Mapping[str, Sequence[str]], name: str) -> str | None:
    values = form.get(name, ())
    if len(values) > 1:
        raise InvalidRequest(f"{name} must not be repeated")
    return values[0] if values else None


def presented_client(authorization: str | None, form: Mapping[str, Sequence[str]]) -> PresentedClient:
    """Which client the request claims to be, and with which method (no verification yet)."""
    form_id, form_secret = _one(form, "client_id"), _one(form, "client_secret")
    assertion, assertion_type = _one(form, "client_assertion"), _one(form, "client_assertion_type")
    methods = [bool(authorization), form_secret is not None, assertion is not None]
    if sum(methods) > 1:
        raise InvalidRequest("use exactly one client authentication method")
    if authorization:
        scheme, _, credentials = authorization.partition(" ")
        if scheme.lower() != "basic" or not credentials:
            raise InvalidClient("unsupported Authorization scheme for client authentication")
        try:
            decoded = base64.b64decode(credentials.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise InvalidClient("malformed Basic credentials") from None
        raw_id, sep, raw_secret = decoded.partition(":")
        if not sep:
            raise InvalidClient("malformed Basic credentials")
        client_id, secret = unquote_plus(raw_id), unquote_plus(raw_secret)  # RFC 6749 §2.3.1 encoding
        if form_id is not None and form_id != client_id:
            raise InvalidRequest("client_id differs from the authenticated client")
        return PresentedClient(client_id, "client_secret_basic", secret=secret)
    if assertion is not None:
        if assertion_type != ASSERTION_TYPE:
            raise InvalidClient("client_assertion_type must be " + ASSERTION_TYPE)
        try:
            claimed = jwt.decode(assertion, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise InvalidClient("malformed client assertion") from None
        issuer = claimed.get("iss")
        if not isinstance(issuer, str) or not issuer or (form_id is not None and form_id != issuer):
            raise InvalidClient("client assertion iss must be the client_id")
        return PresentedClient(issuer, "private_key_jwt", assertion=assertion)
    if form_id is None:
        raise InvalidClient("client authentication required")
    if form_secret is not None:
        return PresentedClient(form_id, "client_secret_post", secret=form_secret)
    return PresentedClient(form_id, "none")


KeyLookup = Callable[[str, str | None], Awaitable[Any]]  # (client_id, kid) -> verification key or None
SeenBefore = Callable[[str, str, float], Awaitable[bool]]  # (client_id, jti, exp) -> True when replayed


async def verify_client_assertion(
    presented: PresentedClient,
    *,
    audiences: Sequence[str],
    key_for: KeyLookup,
    seen_before: SeenBefore,
    now: float,
    leeway: float = 30,
) -> None:
    """RFC 7523 §3: iss = sub = client_id, aud names this server (its issuer or the endpoint),
    exp in the future and not too far, jti unique (replays refused), signature by a client key."""
    assert presented.assertion is not None
    try:
        header = jwt.get_unverified_header(presented.assertion)
    except jwt.PyJWTError:
        raise InvalidClient("malformed client assertion") from None
    alg = header.get("alg")
    if alg not in ASSERTION_ALGS:
        raise InvalidClient("client assertion algorithm not allowed")
    key = await key_for(presented.client_id, header.get("kid"))
    if key is None:
        raise InvalidClient("no key of this client verifies the assertion")
    try:
        claims = jwt.decode(
            presented.assertion,
            key=key,
            algorithms=[alg],
            audience=list(audiences),
            options={
                "require": ["iss", "sub", "aud", "exp", "jti"],
                "verify_exp": False,
                "verify_iat": False,
            },
        )
    except jwt.PyJWTError as exc:
        raise InvalidClient("client assertion rejected", detail=type(exc).__name__) from None
    if claims["sub"] != presented.client_id or claims["iss"] != presented.client_id:
        raise InvalidClient("client assertion iss and sub must be the client_id")
    exp = claims["exp"]
    if not isinstance(exp, int | float) or exp + leeway < now:
        raise InvalidClient("client assertion expired")
    if exp > now + MAX_ASSERTION_LIFETIME + leeway:
        raise InvalidClient("client assertion lives too long")
    nbf = claims.get("nbf")
    if isinstance(nbf, int | float) and nbf > now + leeway:
        raise InvalidClient("client assertion not yet valid")
    if await seen_before(presented.client_id, str(claims["jti"]), float(exp)):
        raise InvalidClient("client assertion replayed")
