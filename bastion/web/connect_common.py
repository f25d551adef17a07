"""What the connect pages and "My connections" share: the seams they are built on (small
protocols the vault's real classes fit), the signed-in user, and page helpers."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Final, Protocol

from starlette.responses import HTMLResponse, Response

from bastion.core.records import UserRecord
from bastion.oauth.context import OAuthContext
from bastion.vault.model import ProviderTokens
from bastion.web.browser import BrowserSession, BrowserSessions
from bastion.web.flow import page
from bastion.web.pages import MessageView, render_message


class ConnectionConfig(Protocol):
    """A ``connections:`` entry."""

    @property
    def name(self) -> str: ...
    @property
    def type(self) -> str: ...  # "oauth" | "api_key"
    @property
    def label(self) -> str: ...
    @property
    def scopes(self) -> Sequence[str]: ...
    @property
    def instructions(self) -> str | None: ...


class ConnectProvider(Protocol):
    """The downstream provider of an OAuth connection."""

    @property
    def uses_pkce(self) -> bool: ...

    async def discover(self) -> object:
        """Read the provider's metadata if still needed; raises ``ProviderUnavailable``."""

    def authorization_url(
        self, state: str, code_challenge: str | None, redirect_uri: str, scopes: Sequence[str] | None = None
    ) -> str: ...

    async def redeem(self, code: str, code_verifier: str | None, redirect_uri: str) -> ProviderTokens: ...

    def issuer_matches(self, iss: str | None) -> bool:
        """RFC 9207: the authorization response's ``iss`` is the provider's issuer."""
        ...


class ProviderLookup(Protocol):
    def get(self, connection: str) -> ConnectProvider | None: ...


class ConnectStore(Protocol):
    """What the connect pages write into the vault."""

    async def save_oauth(
        self, user_id: str, connection: str, tokens: ProviderTokens, asked: tuple[str, ...] = ()
    ) -> object: ...

    async def save_api_key(self, user_id: str, connection: str, key: str) -> object: ...


async def signed_in_user(ctx: OAuthContext, session: BrowserSession) -> UserRecord | None:
    """The signed-in user: enabled, and (after an IdP sign-in) with that IdP session alive."""
    if session.user_id is None:
        return None
    user = await ctx.store.users.get(session.user_id)
    if user is None or user.disabled:
        return None
    if session.idp_session is not None:
        idp = await ctx.store.idp_sessions.get(session.idp_session)
        if idp is None or idp.expires_at <= time.time() or idp.user_id != user.user_id:
            return None
    return user


def display(user: UserRecord) -> str:
    return user.display_name or user.username


def message(title: str, text: str, status: int = 400, link: tuple[str, str] | None = None) -> HTMLResponse:
    return page(render_message(MessageView(title=title, message=text, status=status, link=link)), status)


def with_session(response: Response, sessions: BrowserSessions, session: BrowserSession) -> Response:
    if session.fresh:
        sessions.write(response, session)
    return response


MY_CONNECTIONS: Final = ("My connections", "/connections")


class ConnectionStatus(Protocol):
    """One entry of ``ConnectionVault.list``: metadata, never a secret."""

    @property
    def connection(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def scopes(self) -> Sequence[str]: ...
    @property
    def account(self) -> str | None: ...
    @property
    def created_at(self) -> float | None: ...
    @property
    def last_used_at(self) -> float | None: ...
    @property
    def expires_at(self) -> float | None: ...


class ConnectionList(Protocol):
    async def list(self, user_id: str) -> Sequence[ConnectionStatus]: ...

    async def disconnect(self, user_id: str, connection: str) -> bool: ...


__all__ = [
    "MY_CONNECTIONS",
    "ConnectProvider",
    "ConnectStore",
    "ConnectionConfig",
    "ConnectionList",
    "ConnectionStatus",
    "ProviderLookup",
    "display",
    "message",
    "signed_in_user",
    "with_session",
]
