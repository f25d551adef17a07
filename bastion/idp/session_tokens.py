"""The tokens of a user's sign-in at an identity provider, for Bastion to present on their behalf:
the sign-in's ID token (the subject token of an ID-JAG exchange, ``idjag.py``, or of an RFC 8693
exchange towards an upstream, ``exchange_subjects.py``), or an IdP access token for given scopes
(an RFC 8693 exchange presenting an access token; Entra's on-behalf-of flow).

- The session is the user's newest unexpired sign-in at that provider (``IdpSessions``). Its ID
  token is used while it stays valid for ``MIN_VALIDITY_S`` more seconds; after that it is
  renewed with the session's IdP refresh token (an OIDC refresh returns a new ID token when
  ``openid`` was granted: Entra, Okta, Keycloak, oidc-provider), and both are stored (sealed).
- An access token is asked for with the refresh token each time (the IdP's ``scope``: e.g.
  ``api://<bastion-app-id>/.default``); the rotated refresh token is stored, the access token is
  not (what it is exchanged for is cached by whoever asked). Refreshes of one session are
  serialised (``refresh_lock``) and the session is read again under the lock.
- No session, no ID token and no way to renew it, or the IdP refused the refresh token (the
  session then ends, as at a refresh by the MCP client): :class:`SessionTokenError` with
  ``sign_in=True``, naming the provider to sign in with again.
- The IdP unreachable, slow or answering nonsense: ``sign_in=False``, "try again later".
- The IdP refusing the scopes of an access token (``invalid_scope``, ``consent_required``…):
  its error code in the message, its description only in ``detail``.

No token is ever logged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from bastion.core.credentials import SIGN_IN_ERRORS
from bastion.core.records import IdpSession
from bastion.idp.oidc import IdpError, IdpRefused, InvalidIdpGrant, OidcProvider, TokenSet
from bastion.idp.sessions import IdpSessions, refresh_lock
from bastion.store import Store

log = logging.getLogger("bastion.idp")
MIN_VALIDITY_S = 60.0  # an ID token closer than this to its exp is renewed before use
MIN_FRESH_S = 5.0  # a just-renewed token is used if it has at least this left
DEFAULT_ACCESS_TTL_S = 300  # an IdP access token without expires_in is assumed to live this long


class SessionTokenError(Exception):
    """No token of the user's sign-in now; ``message`` is safe to show, ``detail`` is for the log."""

    def __init__(self, message: str, *, sign_in: bool = False, detail: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.sign_in = sign_in
        self.detail = detail


class SessionTokens:
    """The tokens of users' sign-ins at the identity provider ``provider_name``."""

    def __init__(
        self,
        provider_name: str,
        *,
        store: Store,
        sessions: IdpSessions,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._name = provider_name
        self._store = store
        self._sessions = sessions
        self._clock = clock

    async def id_token(self, provider: OidcProvider, user_id: str) -> tuple[str, float]:
        """The ID token of the user's sign-in and its ``exp``, renewed first when it is close
        to expiry."""
        session = await self._live(provider, user_id)
        found = self._usable(session, self._clock())
        if found is not None:
            return found
        async with refresh_lock(session.session_id):
            # another task may have renewed it (and rotated the refresh token) meanwhile
            current = await self._current(provider, session)
            found = self._usable(current, self._clock())
            if found is not None:
                return found
            if current.sealed_refresh_token is None:
                raise self._sign_in(provider, "ID token expired and no refresh token")
            _, fresh = await self._renew(provider, current, ())
        if fresh is None or fresh[1] - self._clock() < MIN_FRESH_S:
            raise self._sign_in(provider, "the refresh brought no usable ID token")
        return fresh

    async def access_token(
        self, provider: OidcProvider, user_id: str, scopes: tuple[str, ...]
    ) -> tuple[str, float]:
        """An access token for ``scopes`` (the IdP's default ones when empty) obtained now with
        the refresh token of the user's sign-in, and when it expires."""
        session = await self._live(provider, user_id)
        async with refresh_lock(session.session_id):
            current = await self._current(provider, session)
            if current.sealed_refresh_token is None:
                raise self._sign_in(provider, "no refresh token to obtain an access token with")
            asked_at = self._clock()
            tokens, _ = await self._renew(provider, current, scopes)
        expires_at = asked_at + (tokens.expires_in or DEFAULT_ACCESS_TTL_S)
        if tokens.access_token is None or expires_at - self._clock() < MIN_FRESH_S:
            raise SessionTokenError(
                f"{provider.provider.label} gave Bastion no usable access token; try again later",
                detail=f"idp {self._name}: a refresh for {' '.join(scopes) or 'default scopes'} "
                "brought no usable access token",
            )
        return tokens.access_token, expires_at

    # -- the steps ----------------------------------------------------------------------------

    def _sign_in(self, provider: OidcProvider, why: str) -> SessionTokenError:
        return SessionTokenError(
            f"Sign in to Bastion again through {provider.provider.label}: it is needed to reach this "
            "server on your behalf",
            sign_in=True,
            detail=f"idp {self._name}: {why}",
        )

    def _usable(self, session: IdpSession, now: float) -> tuple[str, float] | None:
        expires = session.id_token_expires_at
        if expires is None or expires - now < MIN_VALIDITY_S:
            return None
        token = self._sessions.open_id_token(session)
        return (token, expires) if token is not None else None

    async def _live(self, provider: OidcProvider, user_id: str) -> IdpSession:
        session = await self._store.idp_sessions.latest_for_user(user_id, self._name, self._clock())
        if session is None:
            raise self._sign_in(provider, "no live sign-in at this identity provider")
        return session

    async def _current(self, provider: OidcProvider, session: IdpSession) -> IdpSession:
        """The session as stored now (the caller holds its refresh lock)."""
        current = await self._store.idp_sessions.get(session.session_id)
        if current is None or current.expires_at <= self._clock():
            raise self._sign_in(provider, "the sign-in ended")
        return current

    async def _renew(
        self, provider: OidcProvider, session: IdpSession, scopes: tuple[str, ...]
    ) -> tuple[TokenSet, tuple[str, float] | None]:
        """:meth:`IdpSessions.renew` (the caller holds the refresh lock), its failures as
        :class:`SessionTokenError`."""
        try:
            return await self._sessions.renew(provider, session, scopes=scopes)
        except InvalidIdpGrant as exc:
            raise self._sign_in(provider, f"refresh refused: {exc.detail}") from None
        except IdpRefused as exc:
            wanted = " ".join(scopes) or "the sign-in's scopes"
            log.warning("IdP %s refused a refresh for %s: %s", self._name, wanted, exc.detail)
            raise SessionTokenError(
                f"{provider.provider.label} refused Bastion a token for you ({exc.error})",
                sign_in=exc.error in SIGN_IN_ERRORS,
                detail=f"idp {self._name}: refresh for {wanted}: {exc.detail}",
            ) from None
        except IdpError as exc:
            log.warning(
                "IdP %s: renewing the sign-in's tokens failed: %s (%s)", self._name, exc.message, exc.detail
            )
            raise SessionTokenError(
                f"{exc.message}; try again later", detail=f"idp {self._name}: {exc.detail}"
            ) from None


__all__ = ["MIN_VALIDITY_S", "SessionTokenError", "SessionTokens"]
