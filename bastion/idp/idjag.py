"""ID-JAGs from the enterprise IdP (MCP Enterprise-Managed Authorization, the client's side):
for an upstream configured ``auth: {type: ema, id_jag_issuer: <identity provider>}``, Bastion
asks that IdP for the user's ID-JAG by RFC 8693 token exchange (MCP EMA §4.3), presenting the
ID token of the user's sign-in to Bastion through it, with Bastion's client authentication there.

- The session is the user's newest unexpired sign-in at that provider (``IdpSessions``). Its ID
  token is used while it stays valid for ``MIN_VALIDITY_S`` more seconds; after that it is
  renewed with the session's IdP refresh token (an OIDC refresh returns a new ID token when
  ``openid`` was granted: Entra, Okta, oidc-provider), and both are stored (sealed).
- No session, no ID token and no way to renew it, or the IdP refused the refresh token (the
  session then ends, as at a refresh by the MCP client): :class:`IdJagUnavailable` with
  ``sign_in=True``, naming the provider to sign in with again.
- The IdP unreachable, slow or answering nonsense: :class:`IdJagUnavailable`, ``sign_in=False``.
- The exchange refused: :class:`IdJagUnavailable` naming the IdP's error code (its description
  only in ``detail``); ``insufficient_user_authentication`` and the like ask for a new sign-in.

``IdJagRequest.client_id`` (Bastion's id at the target authorization server) is not sent: the
IdP maps its own client to that id out of band (EMA §4.4). No token is ever logged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping

from bastion.config.model import Settings
from bastion.core.credentials import IdJag, IdJagRequest, IdJagUnavailable
from bastion.core.records import IdpSession
from bastion.idp.oidc import IdpError, IdpRefused, InvalidIdpGrant, OidcProvider
from bastion.idp.sessions import IdpSessions, refresh_lock
from bastion.store import Store

log = logging.getLogger("bastion.idp")
MIN_VALIDITY_S = 60.0  # an ID token closer than this to its exp is renewed before use
MIN_FRESH_S = 5.0  # a just-renewed ID token is used if it has at least this left
# refusals that a new (or stronger) sign-in at the IdP can cure
SIGN_IN_ERRORS = frozenset(
    {"insufficient_user_authentication", "login_required", "interaction_required", "consent_required"}
)


class IdpIdJagSource:
    """:class:`~bastion.core.credentials.IdJagSource` backed by the identity provider
    ``provider_name`` (one of ``providers``, the same OIDC clients sign-in uses)."""

    def __init__(
        self,
        provider_name: str,
        *,
        store: Store,
        providers: Mapping[str, OidcProvider],
        key: bytes,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._name = provider_name
        self._store = store
        self._providers = providers
        self._sessions = IdpSessions(store, providers, key)
        self._clock = clock

    @property
    def provider_name(self) -> str:
        return self._name

    async def id_jag(self, request: IdJagRequest) -> IdJag:
        provider = self._providers.get(self._name)
        if provider is None:
            raise IdJagUnavailable(
                f"The identity provider '{self._name}' is not configured",
                detail=f"no identity provider {self._name!r}",
            )
        subject_token = await self._subject_token(provider, request.user_id)
        label = provider.provider.label
        try:
            issued = await provider.request_id_jag(
                subject_token, audience=request.audience, resource=request.resource, scopes=request.scopes
            )
        except IdpRefused as exc:
            log.warning(
                "IdP %s refused an ID-JAG for %s (audience %s): %s",
                self._name,
                request.user_id,
                request.audience,
                exc.detail,
            )
            raise IdJagUnavailable(
                f"{label} refused to issue an ID-JAG for {request.audience} ({exc.error})",
                sign_in=exc.error in SIGN_IN_ERRORS,
                detail=f"idp {self._name}: {exc.detail}",
            ) from None
        except IdpError as exc:
            log.warning("IdP %s: ID-JAG exchange failed: %s (%s)", self._name, exc.message, exc.detail)
            raise IdJagUnavailable(
                f"{exc.message}; try again later", detail=f"idp {self._name}: {exc.detail}"
            ) from None
        scopes = tuple(issued.scope.split()) if issued.scope is not None else None
        return IdJag(assertion=issued.assertion, expires_at=self._clock() + issued.expires_in, scopes=scopes)

    # -- the subject token --------------------------------------------------------------------

    def _sign_in(self, provider: OidcProvider, why: str) -> IdJagUnavailable:
        return IdJagUnavailable(
            f"Sign in to Bastion again through {provider.provider.label}: it is needed to reach this "
            "server on your behalf",
            sign_in=True,
            detail=f"idp {self._name}: {why}",
        )

    def _usable(self, session: IdpSession, now: float, margin: float) -> str | None:
        expires = session.id_token_expires_at
        if expires is None or expires - now < margin:
            return None
        return self._sessions.open_id_token(session)

    async def _subject_token(self, provider: OidcProvider, user_id: str) -> str:
        sessions = self._store.idp_sessions
        session = await sessions.latest_for_user(user_id, self._name, self._clock())
        if session is None:
            raise self._sign_in(provider, "no live sign-in at this identity provider")
        token = self._usable(session, self._clock(), MIN_VALIDITY_S)
        if token is not None:
            return token
        async with refresh_lock(session.session_id):
            # another task may have renewed it (and rotated the refresh token) meanwhile
            current = await sessions.get(session.session_id)
            now = self._clock()
            if current is None or current.expires_at <= now:
                raise self._sign_in(provider, "the sign-in ended")
            token = self._usable(current, now, MIN_VALIDITY_S)
            if token is not None:
                return token
            if current.sealed_refresh_token is None:
                raise self._sign_in(provider, "ID token expired and no refresh token")
            try:
                fresh = await self._sessions.refresh(provider, current)
            except InvalidIdpGrant as exc:
                raise self._sign_in(provider, f"refresh refused: {exc.detail}") from None
            except IdpError as exc:
                log.warning(
                    "IdP %s: renewing the ID token failed: %s (%s)", self._name, exc.message, exc.detail
                )
                raise IdJagUnavailable(
                    f"{exc.message}; try again later", detail=f"idp {self._name}: {exc.detail}"
                ) from None
        if fresh is None or fresh[1] - self._clock() < MIN_FRESH_S:
            raise self._sign_in(provider, "the refresh brought no usable ID token")
        return fresh[0]


def idjag_sources(
    settings: Settings, store: Store, providers: Mapping[str, OidcProvider], key: bytes
) -> dict[str, IdpIdJagSource]:
    """One ID-JAG source per configured identity provider, by its name (the ``id_jag_issuer``
    of ``auth: {type: ema}`` upstreams). ``providers`` are the sign-in's OIDC clients and ``key``
    the IdP-session sealing key (``derive_key(master, "idp-session")``), as for IdpSessions."""
    return {
        p.name: IdpIdJagSource(p.name, store=store, providers=providers, key=key)
        for p in settings.identity_providers
        if p.name in providers
    }


__all__ = ["MIN_VALIDITY_S", "IdpIdJagSource", "idjag_sources"]
