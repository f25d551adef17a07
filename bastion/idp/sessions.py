"""Sessions follow the IdP: a sign-in through an identity provider starts an IdP session that
every Bastion refresh token of that sign-in points to.

At each refresh the session is checked: past ``max_session_lifetime`` it is over; when the IdP
gave a refresh token (kept sealed with AES-256-GCM under a key derived from the master key,
bound to the session id) Bastion uses it at most every ``recheck_interval`` seconds — if the IdP
answers ``invalid_grant`` (user disabled or signed out there) the session ends and the MCP
client's refresh fails with ``invalid_grant``. An unreachable IdP makes the refresh fail
temporarily without ending anything. A provider removed from the configuration ends its
sessions.

The session also keeps the ID token of the sign-in (sealed the same way, with its ``exp``): the
subject token Bastion exchanges at the IdP for the user's ID-JAGs (``idjag.py``) and for
upstream tokens (``session_tokens.py``; a ``token_exchange`` upstream may instead want an IdP
access token, obtained with the refresh token for its scopes, never stored). When a refresh
at the IdP returns a new ID token, it is verified (signature, issuer, audience, the same user)
and replaces the stored one. Refreshes of one session are serialised within a process, and the
session is read again under the lock, so a rotated refresh token is never presented twice.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
import weakref
from collections.abc import Mapping
from typing import Literal

from bastion.core.crypto import open_text, seal_text
from bastion.core.errors import Conflict
from bastion.core.records import IdpSession
from bastion.idp.claims import identity_from_claims
from bastion.idp.oidc import IdpError, InvalidIdpGrant, OidcProvider, TokenSet
from bastion.store import Store

log = logging.getLogger("bastion.idp")
SessionState = Literal["ok", "ended", "unavailable"]

# one lock per IdP session being refreshed (gone once nobody holds it)
_refresh_locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()


def refresh_lock(session_id: str) -> asyncio.Lock:
    """The lock that serialises refreshes of one IdP session in this process (IdPs rotate
    refresh tokens, and some revoke the whole grant when a rotated one is presented again)."""
    lock = _refresh_locks.get(session_id)
    if lock is None:
        lock = asyncio.Lock()
        _refresh_locks[session_id] = lock
    return lock


class IdpSessions:
    def __init__(self, store: Store, providers: Mapping[str, OidcProvider], key: bytes) -> None:
        self._store = store
        self._providers = providers
        self._key = key

    async def start(
        self,
        *,
        user_id: str,
        provider: str,
        refresh_token: str | None,
        lifetime_s: float,
        id_token: str | None = None,
        id_token_expires_at: float | None = None,
    ) -> str:
        now = time.time()
        for _ in range(3):
            session_id = "is_" + secrets.token_urlsafe(18)
            sealed = seal_text(self._key, refresh_token, session_id) if refresh_token else None
            sealed_id = seal_text(self._key, id_token, session_id) if id_token else None
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
                        sealed_id_token=sealed_id,
                        id_token_expires_at=float(id_token_expires_at)
                        if sealed_id and id_token_expires_at is not None
                        else None,
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
        async with refresh_lock(session_id):
            # another task may have refreshed (and rotated the refresh token) meanwhile
            session = await sessions.get(session_id)
            if session is None:
                return "ended"
            if session.sealed_refresh_token is None or now - session.checked_at < recheck:
                return "ok"
            try:
                await self.refresh(provider, session)
            except InvalidIdpGrant:
                return "ended"
            except IdpError as exc:
                log.warning(
                    "IdP %s: session re-check failed: %s (%s)", session.provider, exc.message, exc.detail
                )
                return "unavailable"
        return "ok"

    def open_id_token(self, session: IdpSession) -> str | None:
        """The session's ID token in the clear, if it has one that can be opened."""
        if session.sealed_id_token is None:
            return None
        token = open_text(self._key, session.sealed_id_token, session.session_id)
        if token is None:
            log.error(
                "IdP session %s: the sealed ID token cannot be opened (wrong master key?)", session.session_id
            )
        return token

    async def refresh(self, provider: OidcProvider, session: IdpSession) -> tuple[str, float] | None:
        """Use the session's refresh token at the IdP now (the caller holds
        :func:`refresh_lock`) and store what comes back: the (possibly rotated) refresh token,
        the check time and, when the IdP sent one that verifies and names the same user, the
        new ID token. Returns that ID token and its ``exp``, or None when there is none.

        Raises :class:`InvalidIdpGrant` when the session is over (the IdP refused the refresh
        token, or it cannot be opened: the session is deleted) and :class:`IdpError` when the
        IdP could not be asked (nothing changes)."""
        return (await self.renew(provider, session))[1]

    async def renew(
        self, provider: OidcProvider, session: IdpSession, *, scopes: tuple[str, ...] = ()
    ) -> tuple[TokenSet, tuple[str, float] | None]:
        """:meth:`refresh`, asking the IdP for an access token for ``scopes`` (its default ones
        when empty); returns its whole answer as well (whose access token a token exchange
        presents) besides the verified new ID token."""
        session_id = session.session_id
        token = (
            open_text(self._key, session.sealed_refresh_token, session_id)
            if session.sealed_refresh_token
            else None
        )
        if token is None:
            if session.sealed_refresh_token is not None:
                log.error(
                    "IdP session %s: the sealed refresh token cannot be opened (wrong master key?)",
                    session_id,
                )
                await self._store.idp_sessions.delete(session_id)
            raise InvalidIdpGrant(
                f"{provider.provider.label} gave Bastion no way to renew this sign-in",
                detail="no usable refresh token",
            )
        try:
            tokens = await provider.refresh(token, scopes=scopes)
        except InvalidIdpGrant:
            await self._store.idp_sessions.delete(session_id)
            raise
        now = time.time()
        # keep the old refresh token when the IdP does not rotate it
        sealed = seal_text(self._key, tokens.refresh_token or token, session_id)
        fresh = await self._verified_id_token(provider, session, tokens)
        if fresh is None:
            await self._store.idp_sessions.update_token(session_id, sealed, now)
            return tokens, None
        id_token, exp = fresh
        await self._store.idp_sessions.update_token(
            session_id,
            sealed,
            now,
            sealed_id_token=seal_text(self._key, id_token, session_id),
            id_token_expires_at=exp,
        )
        return tokens, fresh

    async def _verified_id_token(
        self, provider: OidcProvider, session: IdpSession, tokens: TokenSet
    ) -> tuple[str, float] | None:
        """The refreshed ID token and its ``exp`` if it verifies and is the session's user's
        (OIDC Core §12.2), else None (logged, without the token)."""
        if tokens.id_token is None:
            return None
        try:
            claims = await provider.verify_id_token(tokens.id_token, nonce=None)
            same_user = identity_from_claims(provider.provider, claims).user_id == session.user_id
        except IdpError as exc:
            log.warning(
                "IdP %s: the ID token of a refresh is not usable: %s (%s)",
                session.provider,
                exc.message,
                exc.detail,
            )
            return None
        if not same_user:
            log.error(
                "IdP %s: a refresh of session %s returned an ID token for another user; not kept",
                session.provider,
                session.session_id,
            )
            return None
        return tokens.id_token, float(claims["exp"])
