"""Sign-in and sign-out pages.

Brute force is limited across replicas (``ThrottleStore``) over ``auth.login.failure_window``:
per username (normalized as the directory does) every attempt counts and a success clears the
count, so the limit is on failures in a row; per client address failures count. Past either
limit the page refuses without checking the password (a throttled attacker learns nothing, and
argon2 is not spent on them).
Every outcome is an audit event; the
password never leaves this function.

After signing in the browser goes on with the MCP client's pending request (``request``), or,
when the sign-in started on one of Bastion's own pages, back to it (``next``, only the exact
shapes ``returns.safe_next`` accepts: never another site), or to a "signed in" page.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from bastion.audit import events
from bastion.config.auth import Login
from bastion.idp.sources import PasswordSource
from bastion.idp.users import UserError, normalize_username
from bastion.oauth.context import OAuthContext
from bastion.oauth.opaque import MAX_PRESENTED_CHARS, digest
from bastion.web.browser import BrowserSession, BrowserSessions
from bastion.web.flow import _HEADERS, message, page, read_page_form
from bastion.web.pages import (
    LoginView,
    LogoutView,
    SignedOutView,
    render_login,
    render_logout,
    render_signed_out,
)
from bastion.web.returns import safe_next
from bastion.web.security import csrf_token, csrf_valid

MAX_USERNAME_CHARS = 256
MAX_PASSWORD_CHARS = 1024
FAILED = "The username or password is not right."
THROTTLED = "Too many failed sign-ins. Wait a few minutes and try again."


def _login_name(username: str) -> str:
    """The name the directory would look up (NFKC, case-folded), so look-alike spellings of one
    user share one failure count."""
    try:
        return normalize_username(username)
    except UserError:
        return username.casefold()


class LoginPages:
    def __init__(
        self,
        ctx: OAuthContext,
        sessions: BrowserSessions,
        csrf_key: bytes,
        passwords: PasswordSource,
        limits: Login,
        *,
        providers: tuple[tuple[str, str], ...] = (),
        realms: Mapping[str, str] | None = None,
    ) -> None:
        self._ctx = ctx
        self._sessions = sessions
        self._csrf_key = csrf_key
        self._passwords = passwords
        self._limits = limits
        self._providers = providers  # (name, label) of the identity providers offered
        self._realms = dict(realms or {})  # e-mail domain → identity provider name

    def _view(
        self,
        session: BrowserSession,
        handle: str,
        username: str = "",
        error: str | None = None,
        *,
        next_path: str | None = None,
    ) -> LoginView:
        handle = handle[:MAX_PRESENTED_CHARS]
        request = quote(handle, safe="")
        back = "&next=" + quote(next_path, safe="/") if next_path else ""
        return LoginView(
            action="/login",
            csrf=csrf_token(self._csrf_key, session.browser_id, "login"),
            request=handle,
            username=username[:MAX_USERNAME_CHARS],
            error=error,
            sources=tuple(
                (label, f"/login/idp/{name}?request={request}{back}") for name, label in self._providers
            ),
            password=self._limits.password,
            realm_action="/login/realm" if self._realms else None,
            next=next_path or "",
        )

    def _respond(self, response: Response, session: BrowserSession) -> Response:
        if session.fresh:
            self._sessions.write(response, session)
        return response

    async def show(self, request: Request) -> Response:
        session = self._sessions.read(request)
        handle = request.query_params.get("request", "")
        back = None if handle else safe_next(request.query_params.get("next"))
        return self._respond(page(render_login(self._view(session, handle, next_path=back))), session)

    async def realm(self, request: Request) -> Response:
        """Home realm discovery: the e-mail domain picks the identity provider."""
        session = self._sessions.read(request)
        form = await read_page_form(request)
        handle = form.get("request", "")
        back = None if handle else safe_next(form.get("next"))
        if not csrf_valid(self._csrf_key, session.browser_id, "login", form.get("csrf")):
            return self._respond(message("Request refused", "The form expired. Try again.", 403), session)
        email = form.get("email", "").strip()[:256]
        domain = email.rpartition("@")[2].lower()
        name = self._realms.get(domain)
        if not email or name is None:
            error = (
                "No sign-in is set up for that e-mail domain. Check the address or ask your administrator."
            )
            view = self._view(session, handle, error=error, next_path=back)
            return self._respond(page(render_login(view), 400), session)
        target = f"/login/idp/{name}?request={quote(handle, safe='')}&login_hint={quote(email, safe='')}"
        target += "&next=" + quote(back, safe="/") if back else ""
        return RedirectResponse(target, 303, headers=_HEADERS)

    async def submit(self, request: Request) -> Response:
        ctx = self._ctx
        session = self._sessions.read(request)
        form = await read_page_form(request)
        handle = form.get("request", "")
        back = None if handle else safe_next(form.get("next"))
        if not csrf_valid(self._csrf_key, session.browser_id, "login", form.get("csrf")):
            return self._respond(
                message(
                    "Request refused",
                    "The sign-in form expired or did not come from this page. Try again.",
                    403,
                ),
                session,
            )
        if not self._limits.password:
            return self._respond(
                message("Password sign-in is off", "Use your organisation's sign-in.", 403), session
            )
        username = form.get("username", "").strip()[:MAX_USERNAME_CHARS]
        password = form.get("password", "")
        if not username or not password or len(password) > MAX_PASSWORD_CHARS:
            return self._respond(
                page(render_login(self._view(session, handle, username, FAILED, next_path=back)), 400),
                session,
            )
        now = time.time()
        address = request.client.host if request.client else "unknown"
        user_key = "login:user:" + digest(_login_name(username))
        address_key = "login:address:" + digest(address)
        window = self._limits.failure_window
        # Per username every attempt counts until a success clears the count: hit() gives a burst
        # of parallel guesses distinct counts, so that limit holds exactly. Per address only
        # failures count (an office behind one NAT signs in all day).
        attempts_user = await ctx.store.throttle.hit(user_key, now, window)
        failures_address = await ctx.store.throttle.count(address_key, now, window)
        if (
            attempts_user > self._limits.max_failures_per_user
            or failures_address >= self._limits.max_failures_per_address
        ):
            ctx.event(events.LOGIN_THROTTLED, status=429, detail=f"address {address}")
            return self._respond(
                page(render_login(self._view(session, handle, username, THROTTLED, next_path=back)), 429),
                session,
            )
        user = await self._passwords.verify(username, password)
        if user is None:
            await ctx.store.throttle.hit(address_key, now, window)
            ctx.event(events.LOGIN_FAILED, status=401, detail=f"address {address}")
            return self._respond(
                page(render_login(self._view(session, handle, username, FAILED, next_path=back)), 401),
                session,
            )
        await ctx.store.throttle.reset(user_key)
        ctx.event(events.LOGIN_SUCCEEDED, subject=user.user_id, detail=f"source {self._passwords.name}")
        signed_in = BrowserSession(browser_id=session.browser_id, user_id=user.user_id, auth_time=now)
        target = f"/authorize/continue?request={quote(handle, safe='')}" if handle else back or "/login/done"
        response = RedirectResponse(target, 303, headers=_HEADERS)
        self._sessions.write(response, signed_in)
        return response

    async def done(self, request: Request) -> Response:
        return message("Signed in", "You are signed in to Bastion. You can close this window.", 200)

    async def logout_page(self, request: Request) -> Response:
        session = self._sessions.read(request)
        user = await self._ctx.store.users.get(session.user_id) if session.user_id else None
        if user is None:
            return self._respond(page(render_signed_out(SignedOutView())), session)
        view = LogoutView(
            action="/logout",
            csrf=csrf_token(self._csrf_key, session.browser_id, "logout"),
            user=user.display_name or user.username,
        )
        return page(render_logout(view))

    async def logout(self, request: Request) -> Response:
        session = self._sessions.read(request)
        form = await read_page_form(request)
        if not csrf_valid(self._csrf_key, session.browser_id, "logout", form.get("csrf")):
            return message("Request refused", "The sign-out form expired. Try again.", 403)
        if session.user_id:
            self._ctx.event(events.LOGOUT, subject=session.user_id)
        response = page(render_signed_out(SignedOutView()))
        self._sessions.clear(response)
        return response

    def routes(self) -> list[Route]:
        return [
            Route("/login", self.show, methods=["GET"]),
            Route("/login", self.submit, methods=["POST"]),
            Route("/login/realm", self.realm, methods=["POST"]),
            Route("/login/done", self.done, methods=["GET"]),
            Route("/logout", self.logout_page, methods=["GET"]),
            Route("/logout", self.logout, methods=["POST"]),
        ]
