""" "My connections": the signed-in user's accounts at downstream services, and Disconnect.

``GET /connections`` lists every configured connection (also those not connected) with its
status, permissions, account and times, and links to ``/connect/<name>`` to connect or
reconnect. ``POST /connections/<name>/disconnect`` (CSRF token bound to this browser) removes
the user's credential from the vault, and answers with the page and a notice. Nothing secret
is ever on this page: the vault lists metadata only.
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping, Sequence
from typing import Final

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from bastion.audit import events
from bastion.core.records import UserRecord
from bastion.oauth.context import OAuthContext
from bastion.web.browser import BrowserSession, BrowserSessions
from bastion.web.connect_common import (
    ConnectionConfig,
    ConnectionList,
    display,
    message,
    signed_in_user,
    with_session,
)
from bastion.web.connect_pages import STATUSES, ConnectionRow, ConnectionsView, render_connections, when
from bastion.web.flow import _HEADERS, page, read_page_form
from bastion.web.returns import CONNECTIONS_PAGE, login_url
from bastion.web.security import csrf_token, csrf_valid

PURPOSE: Final = "connections"


class MyConnections:
    def __init__(
        self,
        ctx: OAuthContext,
        *,
        sessions: BrowserSessions,
        csrf_key: bytes,
        connections: Sequence[ConnectionConfig],
        vault: ConnectionList,
    ) -> None:
        self._ctx = ctx
        self._sessions = sessions
        self._csrf_key = csrf_key
        self._connections: Mapping[str, ConnectionConfig] = {c.name: c for c in connections}
        self._vault = vault

    async def _rows(self, user: UserRecord) -> builtins.list[ConnectionRow]:
        stored = {v.connection: v for v in await self._vault.list(user.user_id)}
        rows = []
        for name, connection in self._connections.items():
            entry = stored.get(name)
            status = entry.status if entry is not None and entry.status in STATUSES else "not_connected"
            kind = connection.type if connection.type in ("oauth", "api_key") else "oauth"
            rows.append(
                ConnectionRow(
                    name=name,
                    label=connection.label,
                    kind=kind,
                    status=status,
                    connect_url=f"/connect/{name}",
                    disconnect_action=f"/connections/{name}/disconnect",
                    scopes=tuple(entry.scopes) if entry is not None else (),
                    account=entry.account if entry is not None else None,
                    connected_at=when(entry.created_at) if entry is not None else None,
                    last_used_at=when(entry.last_used_at) if entry is not None else None,
                    expires_at=when(entry.expires_at)
                    if entry is not None and status != "not_connected"
                    else None,
                )
            )
        return rows

    async def _page(
        self, session: BrowserSession, user: UserRecord, notice: str | None = None, status: int = 200
    ) -> Response:
        view = ConnectionsView(
            user=display(user),
            csrf=csrf_token(self._csrf_key, session.browser_id, PURPOSE),
            rows=tuple(await self._rows(user)),
            notice=notice,
        )
        return page(render_connections(view), status)

    # -- GET /connections ------------------------------------------------------------------------

    async def show(self, request: Request) -> Response:
        session = self._sessions.read(request)
        user = await signed_in_user(self._ctx, session)
        if user is None:
            target = login_url(CONNECTIONS_PAGE)
            return with_session(RedirectResponse(target, 303, headers=_HEADERS), self._sessions, session)
        return with_session(await self._page(session, user), self._sessions, session)

    # -- POST /connections/<connection>/disconnect -------------------------------------------------

    async def disconnect(self, request: Request) -> Response:
        session = self._sessions.read(request)
        form = await read_page_form(request)
        if not csrf_valid(self._csrf_key, session.browser_id, PURPOSE, form.get("csrf")):
            name = request.path_params["connection"]
            known = name if name in self._connections else "(unknown)"  # never echo what was sent
            self._ctx.event(
                events.CONNECTION_REFUSED,
                subject=session.user_id,
                status=403,
                detail=f"connection {known}: disconnect without a valid CSRF token",
            )
            return message(
                "Request refused", "The form expired or did not come from this page. Start again.", 403
            )
        user = await signed_in_user(self._ctx, session)
        if user is None:
            return RedirectResponse(login_url(CONNECTIONS_PAGE), 303, headers=_HEADERS)
        connection = self._connections.get(request.path_params["connection"])
        if connection is None:
            return message("Unknown connection", "There is no such connection here.", 404)
        if not await self._vault.disconnect(user.user_id, connection.name):
            return await self._page(session, user, f"{connection.label} was not connected.")
        self._ctx.event(
            events.CONNECTION_DISCONNECTED,
            subject=user.user_id,
            status=200,
            detail=f"connection {connection.name}",
        )
        return await self._page(session, user, f"Disconnected {connection.label}.")

    def routes(self) -> list[Route]:
        return [
            Route(CONNECTIONS_PAGE, self.show, methods=["GET"]),
            Route("/connections/{connection}/disconnect", self.disconnect, methods=["POST"]),
        ]


__all__ = ["MyConnections"]
