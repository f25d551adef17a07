"""RFC 7009 token revocation.

The client authenticates as at the token endpoint. A refresh token revokes its whole family
and the access token the family issued last (RFC 7009 §2.1: SHOULD also invalidate the access
tokens of the grant; see ``families``); an access token is added to the revoked-``jti`` list every
replica checks. A token that is unknown, malformed, already revoked or another client's gets
the same 200 as a successful revocation (§2.2), so the endpoint reveals nothing about it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import jwt

from bastion.audit import events
from bastion.oauth import families
from bastion.oauth.context import OAuthContext
from bastion.oauth.errors import InvalidRequest, OAuthError
from bastion.oauth.opaque import MAX_PRESENTED_CHARS, digest
from bastion.oauth.registry import KnownClient
from bastion.oauth.rfc8707 import require_single

MAX_JWT_CHARS = 16_384


def access_token_claims(ctx: OAuthContext, token: str) -> dict[str, Any] | None:
    """The claims of one of Bastion's own access tokens, or None (bad signature, other issuer)."""
    if len(token) > MAX_JWT_CHARS or token.count(".") != 2:
        return None
    try:
        header = jwt.get_unverified_header(token)
        if str(header.get("typ", "")).lower() not in ("at+jwt", "application/at+jwt"):
            return None
        kid = header.get("kid")
        key = ctx.keys.ring.verification_key(kid) if isinstance(kid, str) else None
        if key is None or header.get("alg") != key.algorithm_name:
            return None
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=[key.algorithm_name],
            options={"verify_aud": False, "require": ["exp", "jti"]},
            issuer=ctx.issuer,
            leeway=30,
        )
    except (jwt.PyJWTError, ValueError):
        return None
    return claims


class RevocationEndpoint:
    def __init__(self, ctx: OAuthContext) -> None:
        self._ctx = ctx

    async def handle(self, form: Mapping[str, Sequence[str]], authorization: str | None) -> None:
        client = await self._ctx.authenticate_client(form, authorization)
        token = require_single(form.get("token", ()), "token")
        if not token:
            raise InvalidRequest("token is required")
        hint = require_single(form.get("token_type_hint", ()), "token_type_hint")
        if len(token) > MAX_JWT_CHARS:
            return
        order = (self._access, self._refresh) if hint == "access_token" else (self._refresh, self._access)
        for attempt in order:
            if await attempt(client, token):
                return

    async def _refresh(self, client: KnownClient, token: str) -> bool:
        if len(token) > MAX_PRESENTED_CHARS:
            return False
        record = await self._ctx.store.refresh_tokens.get(digest(token))
        if record is None:
            return False
        if record.payload.get("client_id") == client.client_id:
            await families.revoke(self._ctx, record.family_id)
            self._ctx.event(
                events.TOKEN_REVOKED,
                client_id=client.client_id,
                subject=str(record.payload.get("user_id")),
                detail="refresh token family revoked (RFC 7009)",
            )
        return True

    async def _access(self, client: KnownClient, token: str) -> bool:
        claims = access_token_claims(self._ctx, token)
        if claims is None:
            return False
        if claims.get("client_id") == client.client_id:
            jti, exp = str(claims["jti"]), float(claims["exp"])
            self._ctx.revoked.add(jti, exp)
            await self._ctx.store.revoked_tokens.revoke(jti, exp, time.time())
            self._ctx.event(
                events.TOKEN_REVOKED,
                client_id=client.client_id,
                subject=str(claims.get("sub")),
                detail="access token revoked (RFC 7009)",
            )
        return True


__all__ = ["OAuthError", "RevocationEndpoint", "access_token_claims"]
