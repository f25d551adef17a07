"""Connecting a user's own account at a downstream service (``connections:``), in the browser.

    agent → URL elicitation → GET /connect/<connection>?intent=<id>
      → not signed in: /login?next=… and back here
      → the intent must exist, be for this connection and for the signed-in user (MCP
        elicitation, URL mode: the server verifies that the person who opens the URL is the user
        who triggered it; a forwarded link does not attach someone else's account)
      → oauth: a confirm page; its CSRF-protected POST (never a GET: a link alone cannot make
        anyone connect an account) stores a state (256 random bits, hashed, 10 minutes, single
        use, bound to this browser and this user) and goes to the provider with PKCE S256
      → GET /connect/callback: the state is checked against this browser and user, then
        consumed; the code is redeemed; the tokens are sealed into the vault; the intent is done
      → api_key: a form with one password field; the key is stored sealed, never shown again.

One callback for every connection (``<public_url>/connect/callback``), so an administrator
registers one redirect URI per provider. Every outcome is an audit event (never a token, code
or key). Refusals change nothing in the vault.
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from collections.abc import Mapping, Sequence
from typing import Final

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from bastion.audit import events
from bastion.core.errors import ConfigError
from bastion.core.records import UserRecord
from bastion.idp.oidc import pkce_pair
from bastion.oauth.context import OAuthContext
from bastion.oauth.opaque import MAX_PRESENTED_CHARS, digest
from bastion.vault.intents import ConnectIntent, ConnectIntents
from bastion.vault.model import ProviderRefused, ProviderUnavailable
from bastion.web.browser import BrowserSession, BrowserSessions
from bastion.web.connect_common import (
    MY_CONNECTIONS,
    ConnectionConfig,
    ConnectProvider,
    ConnectStore,
    ProviderLookup,
    display,
    message,
    signed_in_user,
    with_session,
)
from bastion.web.connect_pages import ApiKeyView, ConnectConfirmView, render_api_key, render_connect_confirm
from bastion.web.flow import _HEADERS, page, read_page_form
from bastion.web.returns import login_url
from bastion.web.security import csrf_token, csrf_valid

log = logging.getLogger("bastion.vault")

STATE_KIND: Final = "connect_state"
STATE_TTL_S: Final = 600
CALLBACK_PATH: Final = "/connect/callback"
MAX_API_KEY_CHARS: Final = 4096
WRONG_ACCOUNT: Final = (
    "This link was made for another account or has expired. Sign in as the person who asked, "
    "or start again from your agent."
)
_INTENT_ID = re.compile(r"[A-Za-z0-9_-]{1,128}", re.ASCII)
_API_KEY = re.compile(rf"[\x21-\x7e]{{1,{MAX_API_KEY_CHARS}}}", re.ASCII)
_ERROR_CODE = re.compile(r"[a-z0-9_.-]{1,64}", re.ASCII)
_PROVIDER_ERRORS: Final = {
    "access_denied": "You cancelled, or the service did not allow access.",
    "invalid_scope": "The service does not offer the permissions Bastion asked for. Tell your administrator.",
    "unauthorized_client": "The service does not let Bastion connect this way. Tell your administrator.",
    "temporarily_unavailable": "The service is busy. Try again in a few minutes.",
    "server_error": "The service had a problem. Try again later.",
}


class ConnectPages:
    def __init__(
        self,
        ctx: OAuthContext,
        *,
        sessions: BrowserSessions,
        csrf_key: bytes,
        connections: Sequence[ConnectionConfig],
        providers: ProviderLookup,
        vault: ConnectStore,
        intents: ConnectIntents,
    ) -> None:
        if any(c.name == "callback" for c in connections):
            raise ConfigError("connections: 'callback' is reserved (/connect/callback)")
        self._ctx = ctx
        self._sessions = sessions
        self._csrf_key = csrf_key
        self._connections: Mapping[str, ConnectionConfig] = {c.name: c for c in connections}
        self._providers = providers
        self._vault = vault
        self._intents = intents
        self._redirect_uri = ctx.issuer.rstrip("/") + CALLBACK_PATH

    # -- the steps every connect request goes through -----------------------------------------

    def _connection(self, request: Request) -> ConnectionConfig | None:
        return self._connections.get(request.path_params["connection"])

    @staticmethod
    def _unknown() -> Response:
        return message(
            "Unknown connection",
            "There is no such connection here. Check the link, or start again from your agent.",
            404,
        )

    def _csrf(self, session: BrowserSession, connection: ConnectionConfig) -> str:
        return csrf_token(self._csrf_key, session.browser_id, f"connect:{connection.name}")

    def _refuse(self, why: str, *, user: str | None = None, connection: str = "", status: int = 400) -> None:
        detail = f"connection {connection}: {why}" if connection else why
        self._ctx.event(events.CONNECTION_REFUSED, subject=user, status=status, detail=detail)

    async def _intent(
        self, intent_id: str | None, connection: ConnectionConfig, user: UserRecord
    ) -> ConnectIntent | None:
        """The intent, if it exists, is for this connection and was made for this user."""
        if not intent_id or not _INTENT_ID.fullmatch(intent_id):
            return None
        intent = await self._intents.find(intent_id)
        if intent is None or intent.connection != connection.name or intent.user_id != user.user_id:
            return None
        return intent

    def _wrong_account(self, user: UserRecord, connection: ConnectionConfig) -> Response:
        self._refuse("intent expired or made for another user", user=user.user_id, connection=connection.name)
        return message("This link is not for you", WRONG_ACCOUNT, 403, ("Sign out", "/logout"))

    def _here(self, connection: ConnectionConfig, intent_id: str | None) -> str:
        intent = f"?intent={intent_id}" if intent_id and _INTENT_ID.fullmatch(intent_id) else ""
        return f"/connect/{connection.name}{intent}"

    # -- GET /connect/<connection> -------------------------------------------------------------

    async def show(self, request: Request) -> Response:
        connection = self._connection(request)
        if connection is None:
            return self._unknown()
        session = self._sessions.read(request)
        intent_id = request.query_params.get("intent")
        user = await signed_in_user(self._ctx, session)
        if user is None:
            target = login_url(self._here(connection, intent_id))
            return with_session(RedirectResponse(target, 303, headers=_HEADERS), self._sessions, session)
        intent = None
        if intent_id is not None:
            intent = await self._intent(intent_id, connection, user)
            if intent is None:
                return self._wrong_account(user, connection)
        body = self._form(session, connection, user, intent)
        return with_session(page(body), self._sessions, session)

    def _form(
        self,
        session: BrowserSession,
        connection: ConnectionConfig,
        user: UserRecord,
        intent: ConnectIntent | None,
        *,
        error: str | None = None,
    ) -> str:
        action = f"/connect/{connection.name}"
        intent_id = intent.intent_id if intent is not None else ""
        if connection.type == "api_key":
            return render_api_key(
                ApiKeyView(
                    action=action,
                    csrf=self._csrf(session, connection),
                    intent=intent_id,
                    label=connection.label,
                    user=display(user),
                    instructions=connection.instructions,
                    error=error,
                )
            )
        return render_connect_confirm(
            ConnectConfirmView(
                action=action,
                csrf=self._csrf(session, connection),
                intent=intent_id,
                label=connection.label,
                user=display(user),
                scopes=tuple(intent.scopes if intent is not None and intent.scopes else connection.scopes),
                reconnect=intent is not None and intent.reconnect,
            )
        )

    # -- POST /connect/<connection> ------------------------------------------------------------

    async def submit(self, request: Request) -> Response:
        connection = self._connection(request)
        if connection is None:
            return self._unknown()
        session = self._sessions.read(request)
        form = await read_page_form(request)
        if not csrf_valid(self._csrf_key, session.browser_id, f"connect:{connection.name}", form.get("csrf")):
            self._refuse("form without a valid CSRF token", connection=connection.name, status=403)
            return message(
                "Request refused", "The form expired or did not come from this page. Start again.", 403
            )
        user = await signed_in_user(self._ctx, session)
        intent_id = form.get("intent") or None
        if user is None:
            target = login_url(self._here(connection, intent_id))
            return RedirectResponse(target, 303, headers=_HEADERS)
        intent = None
        if intent_id is not None:
            intent = await self._intent(intent_id, connection, user)
            if intent is None:
                return self._wrong_account(user, connection)
        if connection.type == "api_key":
            return await self._save_api_key(session, connection, user, intent, form.get("api_key", ""))
        if form.get("decision") != "continue":
            return message(
                f"{connection.label} not connected",
                "You cancelled. Nothing was changed.",
                200,
                MY_CONNECTIONS,
            )
        return await self._to_provider(session, connection, user, intent)

    async def _to_provider(
        self,
        session: BrowserSession,
        connection: ConnectionConfig,
        user: UserRecord,
        intent: ConnectIntent | None,
    ) -> Response:
        provider = self._providers.get(connection.name)
        if provider is None:  # config: every oauth connection has a provider
            return self._unknown()
        # its endpoints: read at startup, read again here if the provider was down then
        if unread := await self._discover(provider, connection, user):
            return unread
        state = secrets.token_urlsafe(32)  # 256 bits
        verifier, challenge = pkce_pair() if provider.uses_pkce else (None, None)
        step_up = list(intent.scopes) if intent is not None else []  # more than the connection's
        payload = {
            "user_id": user.user_id,
            "browser_id": session.browser_id,
            "connection": connection.name,
            "code_verifier": verifier,
            "intent_id": intent.intent_id if intent is not None else None,
            "scopes": step_up,
        }
        url = provider.authorization_url(
            state, challenge, self._redirect_uri, step_up or list(connection.scopes) or None
        )
        await self._ctx.store.grants.put(STATE_KIND, digest(state), payload, time.time() + STATE_TTL_S)
        return RedirectResponse(url, 303, headers=_HEADERS)

    async def _discover(
        self, provider: ConnectProvider, connection: ConnectionConfig, user: UserRecord
    ) -> Response | None:
        """None once the provider's metadata is read; else the page saying it could not be."""
        try:
            await provider.discover()
        except ProviderUnavailable as exc:
            log.warning("connection %s: the provider's metadata could not be read: %s", connection.name, exc)
            self._refuse("the provider could not be reached", user=user.user_id, connection=connection.name)
            return self._unavailable(connection)
        return None

    async def _save_api_key(
        self,
        session: BrowserSession,
        connection: ConnectionConfig,
        user: UserRecord,
        intent: ConnectIntent | None,
        presented: str,
    ) -> Response:
        key = presented.strip()
        if not _API_KEY.fullmatch(key):
            error = (
                f"That is not a {connection.label} API key: paste the key itself, 1 to "
                f"{MAX_API_KEY_CHARS} characters, letters, digits and punctuation, no spaces."
            )
            self._refuse("API key in the wrong format", user=user.user_id, connection=connection.name)
            return page(self._form(session, connection, user, intent, error=error), 400)
        await self._vault.save_api_key(user.user_id, connection.name, key)
        return await self._connected(connection, user, intent, "api key")

    async def _connected(
        self, connection: ConnectionConfig, user: UserRecord, intent: ConnectIntent | None, how: str
    ) -> Response:
        if intent is not None:
            await self._intents.finish(intent.intent_id)
        self._ctx.event(
            events.CONNECTION_CONNECTED,
            subject=user.user_id,
            client_id=intent.client_id if intent is not None else None,
            status=200,
            detail=f"connection {connection.name} ({how})",
        )
        return message(
            f"Connected {connection.label}",
            "You can return to your agent and retry.",
            200,
            MY_CONNECTIONS,
        )

    # -- GET /connect/callback -----------------------------------------------------------------

    async def callback(self, request: Request) -> Response:
        session = self._sessions.read(request)
        params = request.query_params
        state = params.get("state", "")
        grants = self._ctx.store.grants
        if not state or len(state) > MAX_PRESENTED_CHARS:
            self._refuse("callback without state", user=session.user_id)
            return self._expired()
        key = digest(state)
        data = await grants.peek(STATE_KIND, key, time.time())
        user = await signed_in_user(self._ctx, session)
        name = data.get("connection") if data is not None else None
        connection = self._connections.get(name) if isinstance(name, str) else None
        if data is None or connection is None:
            self._refuse("unknown, used or expired state", user=session.user_id)
            return self._expired()
        if data.get("browser_id") != session.browser_id:
            self._refuse("state from another browser", user=session.user_id, connection=connection.name)
            return self._expired()
        if user is None or data.get("user_id") != user.user_id:
            self._refuse("state of another user", user=session.user_id, connection=connection.name)
            return message("This link is not for you", WRONG_ACCOUNT, 403, ("Sign out", "/logout"))
        provider = self._providers.get(connection.name)
        # whether iss is required is in the metadata: read here too if this replica has not yet
        if provider is not None and (unread := await self._discover(provider, connection, user)):
            return unread
        if provider is not None and not provider.issuer_matches(params.get("iss")):  # RFC 9207
            # refused before the state is used: a response forged into this browser cannot spend it
            self._refuse("response without the provider's iss", user=user.user_id, connection=connection.name)
            return self._expired()
        # checked first, consumed now: a stranger's request cannot burn this user's state
        if await grants.consume(STATE_KIND, key, time.time()) is None:
            self._refuse("state used twice", user=user.user_id, connection=connection.name)
            return self._expired()
        error = params.get("error")
        if error is not None:
            return self._provider_error(connection, user, error)
        code = params.get("code", "")
        if not code or len(code) > 4096 or provider is None:
            self._refuse("callback without a code", user=user.user_id, connection=connection.name)
            return self._expired()
        verifier = data.get("code_verifier")
        try:
            tokens = await provider.redeem(
                code, verifier if isinstance(verifier, str) else None, self._redirect_uri
            )
        except ProviderUnavailable as exc:
            log.warning("connection %s: the code could not be redeemed: %s", connection.name, exc)
            self._refuse("the provider could not be reached", user=user.user_id, connection=connection.name)
            return self._unavailable(connection)
        except ProviderRefused as exc:
            log.warning("connection %s: the provider did not redeem the code: %s", connection.name, exc)
            self._refuse("the provider refused the code", user=user.user_id, connection=connection.name)
            return message(
                f"{connection.label} not connected",
                f"{connection.label} did not complete the connection. Start again from your agent or "
                "from My connections.",
                502,
                MY_CONNECTIONS,
            )
        asked = data.get("scopes")
        step_up = tuple(s for s in asked if isinstance(s, str)) if isinstance(asked, list) else ()
        await self._vault.save_oauth(user.user_id, connection.name, tokens, step_up)
        intent_id = data.get("intent_id")
        intent = None
        if isinstance(intent_id, str):
            intent = await self._intent(intent_id, connection, user)
        return await self._connected(connection, user, intent, "oauth")

    def _provider_error(self, connection: ConnectionConfig, user: UserRecord, error: str) -> Response:
        code = error if _ERROR_CODE.fullmatch(error) else "invalid_response"
        self._refuse(f"provider error {code}", user=user.user_id, connection=connection.name, status=400)
        why = _PROVIDER_ERRORS.get(code, "The service refused the connection.")
        return message(
            f"{connection.label} not connected",
            f"The connection was not made ({code}). {why}",
            400,
            MY_CONNECTIONS,
        )

    @staticmethod
    def _unavailable(connection: ConnectionConfig) -> Response:
        return message(
            f"{connection.label} not connected",
            f"{connection.label} could not be reached. Nothing was changed: try again in a few minutes.",
            503,
            MY_CONNECTIONS,
        )

    @staticmethod
    def _expired() -> Response:
        return message(
            "Connection request expired",
            "This connection request is no longer valid (it expired, was already used, or was started "
            "in another browser or by another account). Start again from your agent or from My connections.",
            400,
            MY_CONNECTIONS,
        )

    def routes(self) -> list[Route]:
        return [
            Route(CALLBACK_PATH, self.callback, methods=["GET"]),
            Route("/connect/{connection}", self.show, methods=["GET"]),
            Route("/connect/{connection}", self.submit, methods=["POST"]),
        ]


__all__ = ["CALLBACK_PATH", "STATE_KIND", "WRONG_ACCOUNT", "ConnectPages"]
