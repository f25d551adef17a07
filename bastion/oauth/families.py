"""Revoking a refresh-token family also revokes the access token it issued last.

RFC 6749 §4.1.2 (a replayed code) and RFC 7009 §2.1 (revoking a refresh token) say the access
tokens of the grant SHOULD go too. Each issuance under a family records that token's ``jti``
(single-use state in the grant store, kept until the token expires); revoking the family puts
it on the revocation list every replica checks. Earlier access tokens of the family were
replaced by this one, and expire within ``auth.access_token_ttl`` of being replaced.
"""

from __future__ import annotations

import contextlib
import time

from bastion.core.errors import Conflict
from bastion.oauth.context import OAuthContext

KIND = "family_access_token"


async def remember(ctx: OAuthContext, family_id: str, jti: str, expires_at: float) -> None:
    """Record ``jti`` as the family's current access token (replacing the previous one)."""
    grants = ctx.store.grants
    await grants.consume(KIND, family_id, time.time())
    # a concurrent issuance under the same family may have recorded its own: either is current
    with contextlib.suppress(Conflict):
        await grants.put(KIND, family_id, {"jti": jti, "exp": expires_at}, expires_at)


async def revoke(ctx: OAuthContext, family_id: str) -> None:
    """Revoke the family in the store and the access token it issued last."""
    now = time.time()
    await ctx.store.refresh_tokens.revoke_family(family_id)
    current = await ctx.store.grants.consume(KIND, family_id, now)
    if current is not None:
        jti, exp = str(current["jti"]), float(current["exp"])
        ctx.revoked.add(jti, exp)
        await ctx.store.revoked_tokens.revoke(jti, exp, now)
