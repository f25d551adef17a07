"""Sessions follow the IdP: a sign-in through an identity provider starts an IdP session that
every Bastion refresh token of that sign-in points to.

At each refresh the session is checked: past ``max_session_lifetime`` it is over; when the IdP
gave a refresh token (kept sealed with AES-256-GCM under a key derived from the master key,
bound to the session id) Bastion uses it at most every ``recheck_interval`` seconds — if the IdP
answers ``invalid_grant`` (user disabled or signed out there) the session ends and the MCP
client's refresh fails with ``invalid_grant``. An unreachable IdP makes the refresh fail
temporarily without ending anything. A provider removed from the configuration ends its
sessions.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Mapping
from typing import Literal

from bastion.core.crypto import open_text, seal_text
from bastion.core.errors import Conflict
from bastion.core.records import IdpSession
from bastion.idp.oidc import IdpError, InvalidIdpGrant, OidcProvider
from bastion.store import Store

log = logging.getLogger("bastion.idp")
SessionState = Literal["ok", "ended", "unavailable"]


class IdpSessions:
    def __init__(self, store: Store, providers: Mapping[str, OidcProvider], key: bytes) -> None:
        self._store = store
        self._providers = providers
        self._key = key

    async def start(
        self, *, user_id: str, provider: str, refresh_token: str | None, lifetime_s: float
    ) -> str:
        now = time.time()
        for _ in range(3):
            session_id = "is_" + secrets.token_urlsafe(18)
            sealed = seal_text(self._key, refresh_token, session_id) if refresh_token else None
            try:
                await self._store.idp_sessions.put(
                    IdpSession(
                        session_id=session_id,
                        user_id=user_id,
                        provider=provider,
                        sealed_refresh_token=sealed,
                        auth_time=now,
                        expires_at=now + lifetime_s,
                        checked_at=now,
                    )
                )
            except Conflict:
                continue
            return session_id
        raise RuntimeError("could not allocate an IdP session id")

    async def check(self, session_id: str) -> SessionState:
        sessions = self._store.idp_sessions
        session = await sessions.get(session_id)
        now = time.time()
        if session is None:
            return "ended"
        provider = self._providers.get(session.provider)
        if session.expires_at <= now or provider is None:
            await sessions.delete(session_id)
            return "ended"
        recheck = provider.provider.config.recheck_interval
        if session.sealed_refresh_token is None or now - session.checked_at < recheck:
            return "ok"
        token = open_text(self._key, session.sealed_refresh_token, session_id)
        if token is None:
            log.error(
                "IdP session %s: the sealed refresh token cannot be opened (wrong master key?)", session_id
            )
            await sessions.delete(session_id)
            return "ended"
        try:
            tokens = await provider.refresh(token)
        except InvalidIdpGrant:
            await sessions.delete(session_id)
            return "ended"
        except IdpError as exc:
            log.warning("IdP %s: session re-check failed: %s (%s)", session.provider, exc.message, exc.detail)
            return "unavailable"
        # keep the old refresh token when the IdP does not rotate it
        kept = tokens.refresh_token or token
        await sessions.update_token(session_id, seal_text(self._key, kept, session_id), now)
        return "ok"
