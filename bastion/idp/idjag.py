"""ID-JAGs from the enterprise IdP (MCP Enterprise-Managed Authorization, the client's side):
for an upstream configured ``auth: {type: ema, id_jag_issuer: <identity provider>}``, Bastion
asks that IdP for the user's ID-JAG by RFC 8693 token exchange (MCP EMA §4.3), presenting the
ID token of the user's sign-in to Bastion through it, with Bastion's client authentication there.

- The ID token is the one of the user's newest unexpired sign-in at that provider, renewed with
  the sign-in's IdP refresh token when close to expiry (``session_tokens.py``).
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
from bastion.core.credentials import SIGN_IN_ERRORS, IdJag, IdJagRequest, IdJagUnavailable
from bastion.idp.oidc import IdpError, IdpRefused, OidcProvider
from bastion.idp.session_tokens import MIN_VALIDITY_S, SessionTokenError, SessionTokens
from bastion.idp.sessions import IdpSessions
from bastion.store import Store

log = logging.getLogger("bastion.idp")


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
        self._providers = providers
        self._tokens = SessionTokens(
            provider_name, store=store, sessions=IdpSessions(store, providers, key), clock=clock
        )
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
        try:
            subject_token, _ = await self._tokens.id_token(provider, request.user_id)
        except SessionTokenError as exc:
            raise IdJagUnavailable(exc.message, sign_in=exc.sign_in, detail=exc.detail) from None
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
