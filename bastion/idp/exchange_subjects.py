"""Subject tokens for token exchanges towards upstreams (``upstreams[].auth: {type:
token_exchange, identity_provider: <name>}``): the
:class:`~bastion.core.credentials.SubjectTokenSource` of one identity provider.

What is presented is a token of the user's sign-in to Bastion through that provider
(``session_tokens.py``): its ID token (RFC 8693 ``subject_token_type`` id_token; the default),
or an access token the IdP issues to Bastion for given scopes with the sign-in's refresh token
(``access_token``; Entra's on-behalf-of flow needs one for Bastion's own API,
``api://<bastion-app-id>/.default``). The exchange itself, and the cache of what it returns,
are the vault's (``bastion/vault/exchange.py``): the vault never sees IdP sessions, and this
module never sees upstream tokens.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from bastion.core.credentials import (
    ACCESS_TOKEN_TYPE,
    ID_TOKEN_TYPE,
    SubjectToken,
    SubjectTokenKind,
    SubjectTokenUnavailable,
)
from bastion.idp.oidc import IdpError, OidcProvider
from bastion.idp.session_tokens import SessionTokenError, SessionTokens
from bastion.idp.sessions import IdpSessions
from bastion.store import Store


class IdpSubjectTokens:
    """The users' sign-ins at the identity provider ``provider`` as subject tokens."""

    def __init__(
        self,
        provider: OidcProvider,
        *,
        store: Store,
        sessions: IdpSessions,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._provider = provider
        self._tokens = SessionTokens(provider.name, store=store, sessions=sessions, clock=clock)

    @property
    def label(self) -> str:
        return self._provider.provider.label

    async def token_endpoint(self) -> str:
        try:
            return str((await self._provider.metadata())["token_endpoint"])
        except IdpError as exc:
            raise SubjectTokenUnavailable(
                f"{exc.message}; try again later", detail=f"idp {self._provider.name}: {exc.detail}"
            ) from None

    async def subject_token(
        self, user_id: str, *, kind: SubjectTokenKind, scopes: tuple[str, ...] = ()
    ) -> SubjectToken:
        try:
            if kind == "id_token":
                token, expires_at = await self._tokens.id_token(self._provider, user_id)
                return SubjectToken(token=token, token_type=ID_TOKEN_TYPE, expires_at=expires_at)
            token, expires_at = await self._tokens.access_token(self._provider, user_id, scopes)
            return SubjectToken(token=token, token_type=ACCESS_TOKEN_TYPE, expires_at=expires_at)
        except SessionTokenError as exc:
            raise SubjectTokenUnavailable(exc.message, sign_in=exc.sign_in, detail=exc.detail) from None


def subject_token_sources(
    providers: Mapping[str, OidcProvider], store: Store, key: bytes
) -> dict[str, IdpSubjectTokens]:
    """One subject-token source per identity provider, by its name. ``providers`` are the
    sign-in's OIDC clients and ``key`` the IdP-session sealing key, as for IdpSessions."""
    sessions = IdpSessions(store, providers, key)
    return {name: IdpSubjectTokens(p, store=store, sessions=sessions) for name, p in providers.items()}


__all__ = ["IdpSubjectTokens", "subject_token_sources"]
