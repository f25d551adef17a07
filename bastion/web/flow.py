"""The browser side of the authorization code flow: /authorize → sign in → consent → code.

1. ``GET /authorize`` validates the request (``bastion.oauth.authorize``). Errors before the
   redirect URI is trusted are shown on a page; later ones go back to the client. A valid
   request is stored server-side under a random handle (single-use, ``auth.request_ttl``) and
   bound to this browser.
2. Not signed in (or ``prompt=login``): ``/login`` (CSRF token bound to the browser, failures
   throttled per username and per address across replicas).
3. Consent per (user, client), unless the client is pre-registered and marked trusted or the
   user already allowed these scopes for this resource (``prompt=consent`` asks again). The
   page names the client, where its metadata came from, the redirect host and the scopes;
   it cannot be framed and its POST needs the CSRF token.
4. The handle is consumed (one code per request, even if the consent form is posted twice),
   a code is stored (as a hash, ``auth.code_ttl``) and the browser goes to the redirect URI
   with ``code``, ``state`` and ``iss``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from bastion.audit import events
from bastion.core.records import ConsentRecord, UserRecord
from bastion.oauth.authorize import (
    AuthorizationRequest,
    NotRedirectable,
    Redirectable,
    error_location,
    parse_authorization_request,
    success_location,
)
from bastion.oauth.context import OAuthContext
from bastion.oauth.errors import AccessDenied, OAuthError
from bastion.oauth.opaque import MAX_PRESENTED_CHARS, digest, new_opaque
from bastion.oauth.registry import KnownClient
from bastion.oauth.token import CODE_KIND
from bastion.web.browser import BrowserSession, BrowserSessions
from bastion.web.pages import ConsentView, MessageView, render_consent, render_message
from bastion.web.security import PAGE_HEADERS, csrf_token, csrf_valid

PENDING_KIND = "authorize"
MAX_PAGE_FORM_BYTES = 16 * 1024
_HEADERS = {k.decode(): v.decode() for k, v in PAGE_HEADERS if k != b"content-type"}


@dataclass(frozen=True, slots=True)
class Pending:
    handle: str
    request: AuthorizationRequest
    browser_id: str
    created_at: float
    preconsented: bool = False  # allowed on the consent page before signing in at an IdP


def permitted_scopes(requested: tuple[str, ...], user: UserRecord) -> tuple[str, ...]:
    """The requested scopes this user may have: an identity provider's role/group grants can
    limit them (``allowed_scopes`` in the user's attributes); offline_access is never limited."""
    allowed = user.attributes.get("allowed_scopes")
    if not isinstance(allowed, list):
        return requested
    return tuple(s for s in requested if s in allowed or s == "offline_access")


def page(html: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(html, status, headers=_HEADERS)


def message(title: str, text: str, status: int = 400) -> HTMLResponse:
    return page(render_message(MessageView(title=title, message=text, status=status)), status)


async def read_page_form(request: Request) -> dict[str, str]:
    """A page's form post (first value of each field; pages never repeat a field)."""
    if (
        request.headers.get("content-type", "").split(";")[0].strip().lower()
        != "application/x-www-form-urlencoded"
    ):
        return {}
    body = await request.body()
    if len(body) > MAX_PAGE_FORM_BYTES:
        return {}
    try:
        parsed = parse_qs(body.decode("utf-8"), max_num_fields=20)
    except (UnicodeDecodeError, ValueError):
        return {}
    return {k: v[0] for k, v in parsed.items() if v}


class AuthorizationFlow:
    def __init__(
        self,
        ctx: OAuthContext,
        sessions: BrowserSessions,
        csrf_key: bytes,
        *,
        bound_providers: Mapping[str, str] | None = None,
        only_provider: str | None = None,
        realms: Mapping[str, str] | None = None,
    ) -> None:
        self._ctx = ctx
        self._sessions = sessions
        self._csrf_key = csrf_key
        self._bound = dict(bound_providers or {})  # resource URL → identity provider name
        self._only = only_provider  # no password sign-in and one provider: go straight there
        self._realms = dict(realms or {})  # e-mail domain → identity provider name

    def _login_target(self, pending: Pending) -> str:
        hint = pending.request.login_hint
        by_hint = self._realms.get(hint.rpartition("@")[2].lower()) if hint and "@" in hint else None
        provider = self._bound.get(pending.request.resource) or by_hint or self._only
        if provider is None:
            return f"/login?request={pending.handle}"
        target = f"/login/idp/{provider}?request={pending.handle}"
        return target + ("&login_hint=" + quote(hint, safe="") if hint else "")

    # -- helpers -----------------------------------------------------------------------------

    def _csrf(self, session: BrowserSession, purpose: str) -> str:
        return csrf_token(self._csrf_key, session.browser_id, purpose)

    def _finish(self, response: Response, session: BrowserSession) -> Response:
        if session.fresh:
            self._sessions.write(response, session)
        return response

    async def _user(self, session: BrowserSession) -> UserRecord | None:
        """The signed-in user: enabled, and (after an IdP sign-in) with that IdP session alive."""
        if session.user_id is None:
            return None
        user = await self._ctx.store.users.get(session.user_id)
        if user is None or user.disabled:
            return None
        if session.idp_session is not None:
            idp = await self._ctx.store.idp_sessions.get(session.idp_session)
            if idp is None or idp.expires_at <= time.time() or idp.user_id != user.user_id:
                return None
        return user

    async def pending(self, handle: str | None, session: BrowserSession) -> Pending | None:
        """The pending authorization request ``handle`` names, if it belongs to this browser."""
        return await self._pending(handle, session)

    async def _pending(self, handle: str | None, session: BrowserSession) -> Pending | None:
        if not handle or len(handle) > MAX_PRESENTED_CHARS:
            return None
        data = await self._ctx.store.grants.peek(PENDING_KIND, digest(handle), time.time())
        if data is None or data.get("browser") != session.browser_id:
            return None
        created = data.get("created_at")
        return Pending(
            handle,
            AuthorizationRequest.from_json(data["request"]),
            session.browser_id,
            float(created) if isinstance(created, int | float) else 0.0,
            preconsented=data.get("preconsented") is True,
        )

    @staticmethod
    def _expired() -> HTMLResponse:
        return message(
            "Sign-in request expired",
            "This sign-in request is no longer valid (it expired, was already used, or was started in "
            "another browser). Go back to your application and connect again.",
        )

    # -- GET /authorize ----------------------------------------------------------------------

    async def authorize(self, request: Request) -> Response:
        ctx = self._ctx
        session = self._sessions.read(request)
        query = parse_qs(request.url.query, keep_blank_values=False, max_num_fields=50)
        try:
            _client, parsed = await parse_authorization_request(
                query,
                registry=ctx.registry,
                issuer=ctx.issuer,
                resources=ctx.resources.keys(),
                scopes=ctx.auth.scopes,
            )
        except NotRedirectable as exc:
            ctx.event(events.AUTHORIZATION_REFUSED, status=400, detail=exc.error.description)
            return self._finish(message("This application cannot sign in", exc.error.description), session)
        except Redirectable as exc:
            ctx.event(
                events.AUTHORIZATION_REFUSED,
                client_id=exc.client_id,
                status=302,
                detail=exc.error.description,
            )
            return RedirectResponse(exc.location, 302, headers=_HEADERS)
        handle = new_opaque()
        now = time.time()
        payload: dict[str, Any] = {
            "request": parsed.to_json(),
            "browser": session.browser_id,
            "created_at": now,
        }
        await ctx.store.grants.put(PENDING_KIND, digest(handle), payload, now + ctx.auth.request_ttl)
        ctx.event(events.AUTHORIZATION_REQUESTED, client_id=parsed.client_id, detail=parsed.resource)
        pending = Pending(handle, parsed, session.browser_id, now)
        return self._finish(await self._resume(pending, session), session)

    async def resume(self, request: Request) -> Response:
        session = self._sessions.read(request)
        pending = await self._pending(request.query_params.get("request"), session)
        if pending is None:
            return self._finish(self._expired(), session)
        return self._finish(await self._resume(pending, session), session)

    async def _resume(self, pending: Pending, session: BrowserSession) -> Response:
        ctx = self._ctx
        req = pending.request
        user = await self._user(session)
        # prompt=login: a sign-in that happened after this request was made
        if user is None or ("login" in req.prompt and (session.auth_time or 0) < pending.created_at):
            if "none" in req.prompt:
                return await self._refuse(pending, OAuthError("login_required"), "login_required")
            return RedirectResponse(self._login_target(pending), 303, headers=_HEADERS)
        try:
            client = await ctx.registry.find(req.client_id)
        except OAuthError as exc:
            return message("This application cannot sign in", exc.description)
        if await self._needs_consent(client, user, req):
            if "none" in req.prompt:
                return await self._refuse(pending, OAuthError("consent_required"), "consent_required")
            return page(render_consent(self._consent_view(pending, client, user, session)))
        return await self._issue_code(pending, client, user, session, status=302)

    async def _needs_consent(self, client: KnownClient, user: UserRecord, req: AuthorizationRequest) -> bool:
        if "consent" in req.prompt:
            return True
        if client.record.trusted and client.source == "config":
            return False
        consent = await self._ctx.store.consents.get(user.user_id, client.client_id)
        return consent is None or not (
            set(req.scopes) <= consent.scopes and req.resource in consent.resources
        )

    def _consent_view(
        self, pending: Pending, client: KnownClient, user: UserRecord | None, session: BrowserSession
    ) -> ConsentView:
        req = pending.request
        resource = self._ctx.resources[req.resource].resource
        redirect = urlsplit(req.redirect_uri)
        return ConsentView(
            action="/consent",
            csrf=self._csrf(session, "consent"),
            request=pending.handle,
            user=(user.display_name or user.username) if user is not None else "",
            client_name=client.display_name,
            client_id=client.client_id,
            client_source=client.source,
            client_domain=client.domain,
            redirect_uri=req.redirect_uri,
            redirect_host=(redirect.hostname or "").encode("idna").decode("ascii")
            if redirect.hostname
            else "",
            loopback_redirect=client.loopback_only or redirect.hostname in ("127.0.0.1", "localhost", "::1"),
            resource=req.resource,
            resource_name=resource.name,
            scopes=req.scopes,
        )

    async def _issue_code(
        self, pending: Pending, client: KnownClient, user: UserRecord, session: BrowserSession, *, status: int
    ) -> Response:
        ctx = self._ctx
        now = time.time()
        if await ctx.store.grants.consume(PENDING_KIND, digest(pending.handle), now) is None:
            return self._expired()
        req = pending.request
        code = new_opaque()
        payload = {
            "client_id": req.client_id,
            "redirect_uri": req.redirect_uri,
            "code_challenge": req.code_challenge,
            "resource": req.resource,
            "scopes": list(permitted_scopes(req.scopes, user)),
            "user_id": user.user_id,
            "auth_time": int(session.auth_time or now),
            "idp_session": session.idp_session,
        }
        await ctx.store.grants.put(CODE_KIND, digest(code), payload, now + ctx.auth.code_ttl)
        ctx.event(
            events.AUTHORIZATION_GRANTED,
            client_id=client.client_id,
            subject=user.user_id,
            status=status,
            detail=req.resource,
        )
        location = success_location(req.redirect_uri, code, state=req.state, issuer=ctx.issuer)
        return RedirectResponse(location, status, headers=_HEADERS)

    async def _refuse(self, pending: Pending, error: OAuthError, code: str, *, status: int = 302) -> Response:
        error.error = code  # type: ignore[misc]  # prompt=none errors are plain OIDC codes
        await self._ctx.store.grants.consume(PENDING_KIND, digest(pending.handle), time.time())
        req = pending.request
        location = error_location(req.redirect_uri, error, state=req.state, issuer=self._ctx.issuer)
        return RedirectResponse(location, status, headers=_HEADERS)

    # -- POST /consent -----------------------------------------------------------------------

    async def consent(self, request: Request) -> Response:
        ctx = self._ctx
        session = self._sessions.read(request)
        form = await read_page_form(request)
        if not csrf_valid(self._csrf_key, session.browser_id, "consent", form.get("csrf")):
            return message(
                "Request refused", "The form expired or did not come from this page. Start again.", 403
            )
        pending = await self._pending(form.get("request"), session)
        user = await self._user(session)
        if pending is None or user is None:
            return self._expired()
        req = pending.request
        if form.get("decision") != "allow":
            ctx.event(events.AUTHORIZATION_DENIED, client_id=req.client_id, subject=user.user_id, status=303)
            return await self._refuse(
                pending, AccessDenied("the user denied access"), "access_denied", status=303
            )
        try:
            client = await ctx.registry.find(req.client_id)
        except OAuthError as exc:
            return message("This application cannot sign in", exc.description)
        await self.record_consent(user, client, req)
        return await self._issue_code(pending, client, user, session, status=303)

    async def record_consent(self, user: UserRecord, client: KnownClient, req: AuthorizationRequest) -> None:
        ctx = self._ctx
        previous = await ctx.store.consents.get(user.user_id, client.client_id)
        scopes, resources = frozenset(req.scopes), frozenset({req.resource})
        # A consent means "these scopes at each of these resources": resources are merged only
        # when the scopes are the same, or scopes allowed at one would leak to another.
        if previous is not None and previous.scopes == scopes:
            resources |= previous.resources
        await ctx.store.consents.grant(
            ConsentRecord(
                user_id=user.user_id,
                client_id=client.client_id,
                scopes=scopes,
                resources=resources,
                granted_at=time.time(),
            )
        )
        ctx.event(
            events.CONSENT_GRANTED, client_id=client.client_id, subject=user.user_id, detail=req.resource
        )

    # -- used by sign-in at an identity provider (bastion.web.federation) --------------------

    async def needs_preconsent(self, pending: Pending) -> KnownClient | None:
        """The client, when it must be allowed before the browser is sent to an identity
        provider (every client but trusted pre-registered ones: a proxy with one client id at the
        IdP must not let any client ride on it unasked), else None."""
        if pending.preconsented:
            return None
        client = await self._ctx.registry.find(pending.request.client_id)
        return None if client.record.trusted and client.source == "config" else client

    def preconsent_view(
        self, pending: Pending, client: KnownClient, session: BrowserSession, *, action: str, who: str
    ) -> str:
        view = self._consent_view(pending, client, None, session)
        return render_consent(replace(view, action=action, user=who))

    async def mark_preconsented(self, pending: Pending) -> Pending:
        grants = self._ctx.store.grants
        key = digest(pending.handle)
        data = await grants.consume(PENDING_KIND, key, time.time())
        if data is None:
            raise LookupError("the pending request is gone")
        data["preconsented"] = True
        await grants.put(PENDING_KIND, key, data, time.time() + self._ctx.auth.request_ttl)
        return replace(pending, preconsented=True)

    async def refuse(self, pending: Pending, code: str, description: str, *, status: int = 303) -> Response:
        return await self._refuse(pending, OAuthError(description), code, status=status)

    async def signed_in(self, pending: Pending, session: BrowserSession) -> Response:
        """Continue after an identity provider signed the user in (``session`` has the user)."""
        user = await self._user(session)
        if user is None:
            return message("Your account is disabled", "Ask your administrator to enable it.", 403)
        if pending.preconsented:
            # allowed on the consent page just before the IdP: that answers prompt=consent too
            client = await self._ctx.registry.find(pending.request.client_id)
            await self.record_consent(user, client, pending.request)
            return await self._issue_code(pending, client, user, session, status=303)
        return await self._resume(pending, session)

    def routes(self) -> list[Route]:
        return [
            Route("/authorize", self.authorize, methods=["GET"]),
            Route("/authorize/continue", self.resume, methods=["GET"]),
            Route("/consent", self.consent, methods=["POST"]),
        ]
