"""The token endpoint (RFC 6749 §3.2, OAuth 2.1 §3.2): three grants.

- ``authorization_code`` (§4.1.3): the code is consumed atomically (one redemption across all
  replicas); the client, ``redirect_uri``, PKCE verifier and ``resource`` must match what was
  authorized. A code presented again revokes what its first redemption issued (RFC 6749
  §4.1.2: SHOULD revoke) — its refresh family and its access token.
- ``refresh_token`` (§6, OAuth 2.1 §4.3.1): rotated on every use; a rotated token presented
  again after the grace window revokes the whole family (RFC 9700 §4.14.2). The user is looked
  up again: a disabled or deleted user gets ``invalid_grant``.
- ``client_credentials`` (§4.4; MCP OAuth Client Credentials extension): confidential clients
  only, for themselves (``sub`` = the client id), no refresh token.
- ``jwt-bearer`` with an ID-JAG (``idjag.py``) and, when the bridge is on, RFC 8693
  ``token-exchange`` for an ID-JAG (``bridge.py``).

Responses carry ``Cache-Control: no-store`` (set by the HTTP layer). Every issuance and
refusal is an audit event; no token, code or secret ever reaches a log line.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from bastion.audit import events
from bastion.core.attributes import AttributeType, claim_value
from bastion.core.records import RotateOutcome, UserRecord
from bastion.oauth import families, rfc7636
from bastion.oauth.bridge import TOKEN_EXCHANGE, TokenExchange
from bastion.oauth.context import OAuthContext
from bastion.oauth.errors import (
    InvalidGrant,
    InvalidRequest,
    UnauthorizedClient,
    UnsupportedGrantType,
)
from bastion.oauth.idjag import JWT_BEARER, IdJagGrant
from bastion.oauth.opaque import MAX_PRESENTED_CHARS, digest, new_opaque, successor
from bastion.oauth.registry import KnownClient
from bastion.oauth.rfc8707 import requested_resource, require_single, same_resource
from bastion.oauth.scopes import OFFLINE_ACCESS, grant_scopes, narrowed, parse_scope
from bastion.oauth.tokens import IssuedToken, issue_access_token

CODE_KIND = "code"
USED_CODE_KIND = "code_used"
USED_CODE_MEMORY_S = 3600  # how long a redeemed code is remembered for reuse detection


def _one(form: Mapping[str, Sequence[str]], name: str) -> str | None:
    return require_single(form.get(name, ()), name)


def _presented(form: Mapping[str, Sequence[str]], name: str) -> str:
    value = _one(form, name)
    if not value:
        raise InvalidRequest(f"{name} is required")
    if len(value) > MAX_PRESENTED_CHARS:
        raise InvalidGrant(f"{name} is not valid")
    return value


MAX_ROLES = 64


def user_roles(user: UserRecord) -> list[str]:
    """The user's roles: from the identity provider (``idp_roles``), or set by an administrator
    (``bastion users add --attr roles=a,b``)."""
    attrs = user.attributes or {}
    raw = attrs.get("idp_roles") or attrs.get("roles") or []
    values = raw.split(",") if isinstance(raw, str) else raw
    if not isinstance(values, list):
        return []
    return sorted({v.strip() for v in values if isinstance(v, str) and v.strip()})[:MAX_ROLES]


def user_attributes(user: UserRecord, declared: Mapping[str, AttributeType]) -> dict[str, object]:
    """The ``attrs`` claim: the declared attributes (``policy.user_attributes``) the user has, each
    as its type (sets as sorted lists), within the size bounds of :mod:`bastion.core.attributes`."""
    return claim_value(user.attributes or {}, declared)


class TokenEndpoint:
    def __init__(
        self, ctx: OAuthContext, idjag: IdJagGrant | None = None, exchange: TokenExchange | None = None
    ) -> None:
        self._ctx = ctx
        self._idjag = idjag
        self._exchange = exchange

    async def handle(
        self, form: Mapping[str, Sequence[str]], authorization: str | None, dpop_proof: str | None = None
    ) -> dict[str, Any]:
        grant_type = _one(form, "grant_type")
        if not grant_type:
            raise InvalidRequest("grant_type is required")
        client = await self._ctx.authenticate_client(form, authorization)
        if grant_type == "authorization_code":
            return await self._authorization_code(client, form)
        if grant_type == "refresh_token":
            return await self._refresh(client, form)
        if grant_type == "client_credentials":
            return await self._client_credentials(client, form)
        if grant_type == JWT_BEARER and self._idjag is not None and self._idjag.enabled:
            return await self._jwt_bearer(client, form, dpop_proof)
        if grant_type == TOKEN_EXCHANGE and self._exchange is not None and self._exchange.enabled:
            return await self._exchange.exchange(client, form, dpop_proof)
        raise UnsupportedGrantType("grant_type is not supported")

    async def _jwt_bearer(
        self, client: KnownClient, form: Mapping[str, Sequence[str]], dpop_proof: str | None
    ) -> dict[str, Any]:
        """Enterprise-Managed Authorization: an ID-JAG for Bastion's own token (no refresh token)."""
        assert self._idjag is not None
        user, resource, scopes, issuer = await self._idjag.redeem(client, form, dpop_proof)
        response, _ = self._access_token(client, user.user_id, resource, scopes, user=user)
        await self._ctx.registry.used(client)
        self._ctx.event(
            events.TOKEN_ISSUED,
            client_id=client.client_id,
            subject=user.user_id,
            status=200,
            detail=f"jwt-bearer (ID-JAG from {issuer.issuer}) for {resource}",
        )
        return response

    # -- authorization_code ------------------------------------------------------------------

    async def _authorization_code(
        self, client: KnownClient, form: Mapping[str, Sequence[str]]
    ) -> dict[str, Any]:
        ctx = self._ctx
        if not client.allows_grant("authorization_code"):
            raise UnauthorizedClient("this client may not use the authorization code grant")
        code_hash = digest(_presented(form, "code"))
        now = time.time()
        payload = await ctx.store.grants.consume(CODE_KIND, code_hash, now)
        if payload is None:
            await self._code_reused(code_hash, now)
            raise InvalidGrant("the code is invalid, expired or already used")
        if payload["client_id"] != client.client_id:
            raise InvalidGrant("the code was issued to another client")
        if _one(form, "redirect_uri") != payload["redirect_uri"]:
            raise InvalidGrant("redirect_uri differs from the authorization request")
        rfc7636.verify(_one(form, "code_verifier"), str(payload["code_challenge"]))
        resource = str(payload["resource"])
        same_resource(resource, form.get("resource", ()))
        user = await self._active_user(str(payload["user_id"]))
        scopes = tuple(str(s) for s in payload["scopes"])
        await self._consent_still_given(client, user.user_id, scopes, resource)
        await self._ctx.idp_session_holds(payload.get("idp_session"))
        response, issued = self._access_token(
            client, user.user_id, resource, scopes, user=user, auth_time=payload.get("auth_time")
        )
        family = None
        if client.allows_grant("refresh_token"):
            family = new_opaque(12)
            response["refresh_token"] = await self._new_refresh(
                family=family,
                client=client,
                user_id=user.user_id,
                resource=resource,
                scopes=scopes,
                auth_time=payload.get("auth_time"),
                idp_session=payload.get("idp_session"),
            )
            await families.remember(ctx, family, issued.jti, issued.expires_at)
        await ctx.store.grants.put(
            USED_CODE_KIND,
            code_hash,
            {"family": family, "jti": issued.jti, "exp": issued.expires_at},
            now + USED_CODE_MEMORY_S,
        )
        await ctx.registry.used(client)
        ctx.event(
            events.TOKEN_ISSUED,
            client_id=client.client_id,
            subject=user.user_id,
            status=200,
            detail=f"authorization_code for {resource}",
        )
        return response

    async def _code_reused(self, code_hash: str, now: float) -> None:
        used = await self._ctx.store.grants.consume(USED_CODE_KIND, code_hash, now)
        if used is None:
            return
        if used.get("family"):
            await families.revoke(self._ctx, str(used["family"]))
        await self._revoke_access_token(str(used["jti"]), float(used["exp"]))
        self._ctx.event(
            events.TOKEN_REUSE_DETECTED, detail="authorization code presented twice; its tokens revoked"
        )

    # -- refresh_token -----------------------------------------------------------------------

    async def _refresh(self, client: KnownClient, form: Mapping[str, Sequence[str]]) -> dict[str, Any]:
        ctx = self._ctx
        if not client.allows_grant("refresh_token"):
            raise UnauthorizedClient("this client may not use refresh tokens")
        presented = _presented(form, "refresh_token")
        old_hash = digest(presented)
        record = await ctx.store.refresh_tokens.get(old_hash)
        if record is None or record.payload.get("client_id") != client.client_id:
            raise InvalidGrant("the refresh token is invalid")  # another client's token: not rotated
        payload = record.payload
        resource = str(payload["resource"])
        same_resource(resource, form.get("resource", ()))
        scopes = narrowed(parse_scope(_one(form, "scope")), [str(s) for s in payload["scopes"]])
        user_id = str(payload["user_id"])
        now = time.time()
        user: UserRecord | None = None
        if not record.revoked and record.expires_at > now:
            # checked before rotating: an IdP that is briefly unreachable must not cost the
            # client its refresh token (a retry after the grace window would look like reuse)
            try:
                user = await self._active_user(user_id)
                await self._ctx.idp_session_holds(payload.get("idp_session"))
            except InvalidGrant:
                await families.revoke(ctx, record.family_id)
                raise
        new_token = successor(ctx.refresh_key, presented)
        result = await ctx.store.refresh_tokens.rotate(
            old_hash, digest(new_token), now, ctx.auth.refresh_grace
        )
        if result.outcome is RotateOutcome.REUSE_DETECTED:
            if result.family_id:
                await families.revoke(ctx, result.family_id)  # the store revoked the family itself
            ctx.event(
                events.TOKEN_REUSE_DETECTED,
                client_id=client.client_id,
                subject=str(payload["user_id"]),
                detail="rotated refresh token presented again; family revoked",
            )
            raise InvalidGrant("the refresh token was already used")
        if result.outcome is RotateOutcome.INVALID or user is None:
            raise InvalidGrant("the refresh token is invalid, expired or revoked")
        response, issued = self._access_token(
            client, user_id, resource, scopes, user=user, auth_time=payload.get("auth_time")
        )
        if result.family_id:
            await families.remember(ctx, result.family_id, issued.jti, issued.expires_at)
        response["refresh_token"] = new_token
        ctx.event(
            events.TOKEN_ISSUED,
            client_id=client.client_id,
            subject=user_id,
            status=200,
            detail=f"refresh_token ({result.outcome.value}) for {resource}",
        )
        return response

    async def _new_refresh(
        self,
        *,
        family: str,
        client: KnownClient,
        user_id: str,
        resource: str,
        scopes: tuple[str, ...],
        auth_time: object,
        idp_session: object = None,
    ) -> str:
        token = new_opaque()
        payload = {
            "idp_session": idp_session if isinstance(idp_session, str) else None,
            "client_id": client.client_id,
            "user_id": user_id,
            "resource": resource,
            "scopes": list(scopes),
            "auth_time": auth_time,
        }
        expires = time.time() + self._ctx.auth.refresh_token_ttl
        await self._ctx.store.refresh_tokens.issue(
            family, digest(token), payload, expires, user_id=user_id, client_id=client.client_id
        )
        return token

    # -- client_credentials ------------------------------------------------------------------

    async def _client_credentials(
        self, client: KnownClient, form: Mapping[str, Sequence[str]]
    ) -> dict[str, Any]:
        ctx = self._ctx
        if client.public or not client.allows_grant("client_credentials"):
            raise UnauthorizedClient("this client may not use the client credentials grant")
        resource = requested_resource(form.get("resource", ()), ctx.resources.keys())
        requested = parse_scope(_one(form, "scope"))
        scopes = grant_scopes(requested, known=ctx.auth.scopes, client_scope=client.record.scope)
        scopes = tuple(s for s in scopes if s != OFFLINE_ACCESS)
        response, _ = self._access_token(client, client.client_id, resource, scopes)
        await ctx.registry.used(client)
        ctx.event(
            events.TOKEN_ISSUED,
            client_id=client.client_id,
            subject=client.client_id,
            status=200,
            detail=f"client_credentials for {resource}",
        )
        return response

    # -- shared ------------------------------------------------------------------------------

    async def _consent_still_given(
        self, client: KnownClient, user_id: str, scopes: tuple[str, ...], resource: str
    ) -> None:
        """A consent withdrawn between the code and its redemption (``bastion grants revoke``)
        stops the redemption too; trusted pre-registered clients need no consent."""
        if client.record.trusted and client.source == "config":
            return
        consent = await self._ctx.store.consents.get(user_id, client.client_id)
        if consent is None or not (set(scopes) <= consent.scopes and resource in consent.resources):
            raise InvalidGrant("the user's consent for this client was withdrawn")

    async def _active_user(self, user_id: str) -> UserRecord:
        user = await self._ctx.store.users.get(user_id)
        if user is None or user.disabled:
            raise InvalidGrant("the user is disabled or no longer exists")
        return user

    def _access_token(
        self,
        client: KnownClient,
        subject: str,
        resource: str,
        scopes: tuple[str, ...],
        *,
        user: UserRecord | None = None,
        auth_time: object = None,
    ) -> tuple[dict[str, Any], IssuedToken]:
        ctx = self._ctx
        extra: dict[str, object] = {}
        if user is not None:
            # who the user is, for policy rules that name users (``allow: {users: [alice]}``)
            extra["preferred_username"] = user.username
            if user.email:
                extra["email"] = user.email
            if user.groups:
                extra["groups"] = sorted(user.groups)
            roles = user_roles(user)
            if roles:
                extra["roles"] = roles  # policy rules may name roles (``allow: {roles: [...]}``)
            attrs = user_attributes(user, ctx.user_attributes)
            if attrs:
                extra["attrs"] = attrs  # and attributes (``allow: {attributes: {...}}``)
        if isinstance(auth_time, int | float):
            extra["auth_time"] = int(auth_time)
        token_scopes = [s for s in scopes if s != OFFLINE_ACCESS]
        issued = issue_access_token(
            ctx.keys.ring,
            issuer=ctx.issuer,
            subject=subject,
            audience=resource,
            client_id=client.client_id,
            scopes=token_scopes,
            lifetime_s=ctx.auth.access_token_ttl,
            now=time.time(),
            extra_claims=extra,
        )
        response: dict[str, Any] = {
            "access_token": issued.token,
            "token_type": "Bearer",
            "expires_in": ctx.auth.access_token_ttl,
        }
        if scopes:
            response["scope"] = " ".join(scopes)
        return response, issued

    async def _revoke_access_token(self, jti: str, expires_at: float) -> None:
        self._ctx.revoked.add(jti, expires_at)
        await self._ctx.store.revoked_tokens.revoke(jti, expires_at, time.time())
