"""RFC 7662 token introspection, for upstreams that want to check a Bastion token themselves.

Only confidential clients may introspect (§2.1: the endpoint MUST require authorization;
a public client could otherwise probe stolen tokens). An access token is active when its
signature, issuer and expiry hold and it is not revoked; a refresh token only when it belongs
to the asking client. Anything else is ``{"active": false}`` and nothing more (§2.2).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from bastion.oauth.context import OAuthContext
from bastion.oauth.errors import InvalidClient, InvalidRequest
from bastion.oauth.opaque import MAX_PRESENTED_CHARS, digest
from bastion.oauth.rfc7009 import access_token_claims
from bastion.oauth.rfc8707 import require_single

INACTIVE: dict[str, Any] = {"active": False}
_COPIED = ("scope", "client_id", "sub", "aud", "iss", "exp", "iat", "nbf", "jti", "groups", "auth_time")


class IntrospectionEndpoint:
    def __init__(self, ctx: OAuthContext) -> None:
        self._ctx = ctx

    async def handle(self, form: Mapping[str, Sequence[str]], authorization: str | None) -> dict[str, Any]:
        client = await self._ctx.authenticate_client(form, authorization)
        if client.public:
            raise InvalidClient("introspection needs a confidential client")
        token = require_single(form.get("token", ()), "token")
        if not token:
            raise InvalidRequest("token is required")
        claims = access_token_claims(self._ctx, token)
        if claims is not None:
            if claims["jti"] in self._ctx.revoked:
                return dict(INACTIVE)
            return {"active": True, "token_type": "Bearer", **{k: claims[k] for k in _COPIED if k in claims}}
        if len(token) > MAX_PRESENTED_CHARS:
            return dict(INACTIVE)
        record = await self._ctx.store.refresh_tokens.get(digest(token))
        now = time.time()
        if (
            record is None
            or record.revoked
            or record.used_at is not None
            or record.expires_at <= now
            or record.payload.get("client_id") != client.client_id
        ):
            return dict(INACTIVE)
        return {
            "active": True,
            "token_type": "refresh_token",
            "client_id": client.client_id,
            "sub": record.payload.get("user_id"),
            "scope": " ".join(str(s) for s in record.payload.get("scopes", [])),
            "aud": record.payload.get("resource"),
            "iss": self._ctx.issuer,
            "exp": int(record.expires_at),
        }
