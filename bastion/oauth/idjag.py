"""Bastion as the resource authorization server of Enterprise-Managed Authorization: the RFC 7523
``jwt-bearer`` grant with an ID-JAG (draft-ietf-oauth-identity-assertion-authz-grant §4.4, the
MCP EMA extension §5 and §7). Each rule is one step, in this order, and every failure is
``invalid_grant`` (client authentication failures stay ``invalid_client``):

1. ``typ`` = ``oauth-id-jag+jwt``;           2. ``alg`` in the issuer's allow-list (never none/HS*);
3. ``iss`` is a trusted issuer (never Bastion itself), and this client may present its assertions;
4. the signature verifies with a current key of that issuer (``kid`` rollover: JWKS refetched);
5. ``aud`` = Bastion's issuer (a string, or an array of exactly one);
6. ``client_id`` = the authenticated client;  7. ``resource`` (when present) is one of Bastion's;
8. ``exp``/``iat`` with a small skew (and not older than ``ema.max_assertion_age``);
9. ``jti`` never seen before for that issuer (a replay store every replica shares, kept past exp);
10. ``cnf.jkt`` → a DPoP proof with that key (RFC 9449).
Granted scopes = the ID-JAG's ∩ the requested (none requested: all of the ID-JAG's) ∩ Bastion's;
the access token's ``aud`` is the resource. No refresh token (the client presents a new ID-JAG).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

import httpx2
import jwt

from bastion.config.ema import Ema, TrustedIssuer
from bastion.core.errors import Conflict
from bastion.core.records import UserRecord
from bastion.oauth import dpop
from bastion.oauth.context import OAuthContext
from bastion.oauth.errors import InvalidGrant, InvalidScope, InvalidTarget, UnauthorizedClient
from bastion.oauth.opaque import digest
from bastion.oauth.registry import KnownClient
from bastion.oauth.rfc8414 import TOKEN_PATH
from bastion.oauth.rfc8707 import requested_resource, require_single
from bastion.oauth.scopes import parse_scope

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
ID_JAG_TYP = "oauth-id-jag+jwt"
ID_JAG_PROFILE = "urn:ietf:params:oauth:grant-profile:id-jag"
SKEW_S = 60
REPLAY_KIND = "idjag_jti"
JWKS_TTL_S = 600.0
JWKS_REFETCH_MIN_S = 30.0


class IssuerKeys:
    """One trusted issuer's verification keys: inline, or fetched (cached; refetched once when an
    assertion names an unknown ``kid``, at most every 30 s)."""

    def __init__(self, issuer: TrustedIssuer, http: httpx2.AsyncClient) -> None:
        self._issuer = issuer
        self._http = http
        self._keys: jwt.PyJWKSet | None = (
            jwt.PyJWKSet.from_dict(issuer.jwks) if issuer.jwks is not None else None
        )
        self._fetched_at = 0.0

    async def key(self, kid: str | None) -> jwt.PyJWK | None:
        for refresh in (False, True):
            keys = await self._load(refresh=refresh)
            matches = [k for k in keys.keys if kid is None or k.key_id == kid]
            if len(matches) == 1:
                return matches[0]
        return None

    async def _load(self, *, refresh: bool) -> jwt.PyJWKSet:
        if self._issuer.jwks is not None and self._keys is not None:
            return self._keys
        now = time.time()
        stale = now - self._fetched_at > (JWKS_REFETCH_MIN_S if refresh else JWKS_TTL_S)
        if self._keys is None or stale:
            assert self._issuer.jwks_uri is not None
            try:
                response = await self._http.get(self._issuer.jwks_uri)
                response.raise_for_status()
                self._keys = jwt.PyJWKSet.from_dict(response.json())
            except (httpx2.HTTPError, ValueError, jwt.PyJWTError) as exc:
                if self._keys is None:
                    raise InvalidGrant(
                        "the issuer's signing keys are unavailable", detail=repr(exc)
                    ) from None
            self._fetched_at = now
        assert self._keys is not None
        return self._keys


class IdJagGrant:
    def __init__(self, ctx: OAuthContext, ema: Ema, http: httpx2.AsyncClient | None = None) -> None:
        self._ctx = ctx
        self._ema = ema
        client = http or httpx2.AsyncClient(timeout=10, follow_redirects=False)
        self._issuers = {t.issuer: (t, IssuerKeys(t, client)) for t in ema.trusted_issuers}

    @property
    def enabled(self) -> bool:
        return bool(self._issuers)

    async def redeem(
        self, client: KnownClient, form: Mapping[str, Sequence[str]], dpop_proof: str | None
    ) -> tuple[UserRecord, str, tuple[str, ...], TrustedIssuer]:
        """The user, resource and scopes an ID-JAG grants this client (or an OAuth error)."""
        assertion = require_single(form.get("assertion", ()), "assertion")
        if not assertion or len(assertion) > 16_384:
            raise InvalidGrant("assertion is required")
        header, unverified = _peek(assertion)
        if header.get("typ") != ID_JAG_TYP:
            raise InvalidGrant("the assertion is not an ID-JAG (typ must be oauth-id-jag+jwt)")
        iss = unverified.get("iss")
        if iss == self._ctx.issuer:
            raise InvalidGrant("Bastion does not accept its own ID-JAGs")
        trusted = self._issuers.get(iss) if isinstance(iss, str) else None
        if trusted is None:
            raise InvalidGrant("the assertion's issuer is not trusted")
        issuer, keys = trusted
        if header.get("alg") not in issuer.algorithms:
            raise InvalidGrant("the assertion's algorithm is not allowed for this issuer")
        if issuer.clients and client.client_id not in issuer.clients:
            raise UnauthorizedClient("this client may not present this issuer's assertions")
        claims = await self._verified(assertion, header, keys)
        self._check_audience(claims)
        if claims.get("client_id") != client.client_id:
            raise InvalidGrant("the assertion was issued for another client")
        resource = self._resource(claims, form)
        self._check_time(claims)
        scopes = self._scopes(claims, form)
        jkt = (claims.get("cnf") or {}).get("jkt") if isinstance(claims.get("cnf"), dict) else None
        if jkt is not None:
            await dpop.verify_proof(
                self._ctx, dpop_proof, htu=self._ctx.issuer + TOKEN_PATH, expected_jkt=str(jkt)
            )
        await self._not_replayed(issuer, claims)
        user = await self._user(issuer, claims)
        return user, resource, scopes, issuer

    async def _verified(self, assertion: str, header: dict[str, Any], keys: IssuerKeys) -> dict[str, Any]:
        kid = header.get("kid")
        key = await keys.key(kid if isinstance(kid, str) else None)
        if key is None:
            raise InvalidGrant("the assertion is signed with an unknown key")
        try:
            claims: dict[str, Any] = jwt.decode(
                assertion,
                key,
                algorithms=[str(header["alg"])],
                options={
                    "require": ["iss", "sub", "aud", "client_id", "jti", "exp", "iat"],
                    "verify_aud": False,
                    "verify_exp": False,
                    "verify_iat": False,
                },
            )
        except jwt.PyJWTError as exc:
            raise InvalidGrant("the assertion does not verify", detail=type(exc).__name__) from None
        return claims

    def _check_audience(self, claims: dict[str, Any]) -> None:
        aud = claims["aud"]
        if isinstance(aud, list) and len(aud) == 1:
            aud = aud[0]
        if aud != self._ctx.issuer:
            raise InvalidGrant("the assertion is not addressed to this authorization server")

    def _resource(self, claims: dict[str, Any], form: Mapping[str, Sequence[str]]) -> str:
        known = self._ctx.resources.keys()
        asked = list(form.get("resource", ()))
        granted = claims.get("resource")
        if granted is not None:
            values = granted if isinstance(granted, list) else [granted]
            if not all(isinstance(v, str) for v in values) or len(values) != 1:
                raise InvalidGrant("the assertion's resource is not one resource")
            try:
                resource = requested_resource(values, known)
            except InvalidTarget:
                raise InvalidGrant("the assertion's resource is not served here") from None
            if asked and asked != [resource]:
                raise InvalidTarget("resource differs from the assertion's")
            return resource
        return requested_resource(asked, known)

    def _check_time(self, claims: dict[str, Any]) -> None:
        now = time.time()
        exp, iat = claims["exp"], claims["iat"]
        if not isinstance(exp, int | float) or not isinstance(iat, int | float):
            raise InvalidGrant("the assertion's exp and iat must be numbers")
        if exp + SKEW_S <= now:
            raise InvalidGrant("the assertion expired")
        if iat > now + SKEW_S:
            raise InvalidGrant("the assertion was issued in the future")
        if now - iat > self._ema.max_assertion_age + SKEW_S:
            raise InvalidGrant("the assertion is too old")

    def _scopes(self, claims: dict[str, Any], form: Mapping[str, Sequence[str]]) -> tuple[str, ...]:
        granted = claims.get("scope", "")
        if not isinstance(granted, str):
            raise InvalidGrant("the assertion's scope is not a string")
        offered = [s for s in parse_scope(granted) if s in self._ctx.auth.scopes]
        requested = parse_scope(require_single(form.get("scope", ()), "scope"))
        if not requested:
            return tuple(offered)
        beyond = [s for s in requested if s not in offered]
        if beyond:
            raise InvalidScope("scope beyond what the assertion grants: " + " ".join(beyond[:5]))
        return requested

    async def _not_replayed(self, issuer: TrustedIssuer, claims: dict[str, Any]) -> None:
        key = digest(f"{issuer.issuer}\x00{claims['jti']}")
        try:
            await self._ctx.store.grants.put(REPLAY_KIND, key, {}, float(claims["exp"]) + 2 * SKEW_S)
        except Conflict:
            raise InvalidGrant("the assertion was used before") from None

    async def _user(self, issuer: TrustedIssuer, claims: dict[str, Any]) -> UserRecord:
        users = self._ctx.store.users
        if issuer.subject == "email":
            email = claims.get("email")
            matches = [u for u in await users.list() if isinstance(email, str) and u.email == email]
            if len(matches) != 1 or matches[0].disabled:
                raise InvalidGrant("no single enabled user has the assertion's e-mail address")
            return matches[0]
        sub = str(claims["sub"])
        namespace = f"{issuer.issuer}\x00{claims.get('tenant', '')}"
        user_id = "x_" + hashlib.sha256(f"{namespace}\x00{sub}".encode()).hexdigest()[:24]
        user = await users.get(user_id)
        if user is None:
            if not issuer.provision:
                raise InvalidGrant("the assertion's user is not known here")
            email = claims.get("email")
            user = UserRecord(
                user_id=user_id,
                username=f"ema:{issuer.label}:{(email if isinstance(email, str) else sub).lower()}"[:128],
                password_hash=None,
                display_name=str(claims.get("name") or email or sub)[:200],
                email=email if isinstance(email, str) else None,
                attributes={"idp": f"ema:{issuer.label}", "idp_issuer": issuer.issuer, "idp_subject": sub},
                source=f"ema:{issuer.label}",
                created_at=time.time(),
            )
            try:
                await users.add(user)
            except Conflict:
                existing = await users.get(user_id)
                if existing is None:
                    raise InvalidGrant("the assertion's user cannot be created") from None
                user = existing
        if user.disabled:
            raise InvalidGrant("the user is disabled")
        return user


def _peek(assertion: str) -> tuple[dict[str, Any], dict[str, Any]]:
    try:
        header = jwt.get_unverified_header(assertion)
        payload = jwt.decode(assertion, options={"verify_signature": False})
    except (jwt.PyJWTError, json.JSONDecodeError):
        raise InvalidGrant("the assertion is not a JWT") from None
    return header, payload
