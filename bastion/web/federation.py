"""Signing in through an enterprise identity provider (OIDC), in the middle of an MCP client's
authorization request.

    /login (choose, or by e-mail domain) → /login/idp/<name>?request=…
      → consent for the MCP client first (every client but trusted pre-registered ones: Bastion
        is ONE client at the IdP, so it must not let any MCP client ride on that unasked —
        the confused-deputy rule for proxies with a static client id)
      → the IdP, with Bastion's own PKCE, state and nonce (single-use, 10 minutes, bound to this
        browser and this pending request)
      → /login/idp/<name>/callback: RFC 9207 iss, code exchange, ID token verification, claims
        → Bastion user (created or updated), IdP session → the MCP client's code.

Errors show a page that says what went wrong (never a token); the user pressing *cancel* at
the IdP goes back to the MCP client as ``access_denied``.

Without an MCP client's request, a sign-in started from one of Bastion's own pages (``next``:
a connect link, "My connections"; see ``returns``) goes straight to the IdP and, once signed
in, back to that page. ``next`` is kept in the server-side state, checked again on return.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from bastion.audit import events
from bastion.idp.claims import identity_from_claims, provision
from bastion.idp.oidc import IdpError, OidcProvider, pkce_pair
from bastion.idp.sessions import IdpSessions
from bastion.oauth.context import OAuthContext
from bastion.oauth.opaque import MAX_PRESENTED_CHARS, digest, new_opaque
from bastion.web.browser import BrowserSession, BrowserSessions
from bastion.web.flow import _HEADERS, AuthorizationFlow, Pending, message, page, read_page_form
from bastion.web.returns import safe_next
from bastion.web.security import csrf_valid

log = logging.getLogger("bastion.idp")
STATE_KIND = "idp_state"
STATE_TTL_S = 600


class FederatedLogin:
    def __init__(
        self,
        ctx: OAuthContext,
        *,
        sessions: BrowserSessions,
        csrf_key: bytes,
        flow: AuthorizationFlow,
        providers: Mapping[str, OidcProvider],
        idp_sessions: IdpSessions,
    ) -> None:
        self._ctx = ctx
        self._sessions = sessions
        self._csrf_key = csrf_key
        self._flow = flow
        self._providers = providers
        self._idp_sessions = idp_sessions

    def _provider(self, request: Request) -> OidcProvider | None:
        return self._providers.get(request.path_params["name"])

    @staticmethod
    def _expired() -> Response:
        return message(
            "Sign-in request expired",
            "This sign-in is no longer valid (it expired, was already used, or was started in another "
            "browser). Go back to your application and connect again.",
        )

    # -- GET /login/idp/<name> ---------------------------------------------------------------

    async def start(self, request: Request) -> Response:
        provider = self._provider(request)
        session = self._sessions.read(request)
        pending = await self._flow.pending(request.query_params.get("request"), session)
        hint = request.query_params.get("login_hint")
        back = safe_next(request.query_params.get("next"))
        if provider is not None and pending is None and back is not None:
            return await self._to_idp(provider, None, session, hint, back=back)  # no MCP client asks
        if provider is None or pending is None:
            return self._expired()
        client = await self._flow.needs_preconsent(pending)
        if client is not None:
            action = f"/login/idp/{provider.name}/consent"
            if hint:
                action += "?login_hint=" + quote(hint[:256], safe="")
            who = f"you, after you sign in with {provider.provider.label}"
            return page(self._flow.preconsent_view(pending, client, session, action=action, who=who))
        return await self._to_idp(provider, pending, session, hint)

    async def consent(self, request: Request) -> Response:
        provider = self._provider(request)
        session = self._sessions.read(request)
        form = await read_page_form(request)
        if not csrf_valid(self._csrf_key, session.browser_id, "consent", form.get("csrf")):
            return message(
                "Request refused", "The form expired or did not come from this page. Start again.", 403
            )
        pending = await self._flow.pending(form.get("request"), session)
        if provider is None or pending is None:
            return self._expired()
        if form.get("decision") != "allow":
            self._ctx.event(events.AUTHORIZATION_DENIED, client_id=pending.request.client_id, status=303)
            return await self._flow.refuse(pending, "access_denied", "the user denied access")
        try:
            pending = await self._flow.mark_preconsented(pending)
        except LookupError:
            return self._expired()
        return await self._to_idp(provider, pending, session, request.query_params.get("login_hint"))

    async def _to_idp(
        self,
        provider: OidcProvider,
        pending: Pending | None,
        session: BrowserSession,
        login_hint: str | None,
        *,
        back: str | None = None,
    ) -> Response:
        state, nonce = new_opaque(), new_opaque()
        verifier, challenge = pkce_pair()
        try:
            url = await provider.authorization_url(
                state=state,
                nonce=nonce,
                code_challenge=challenge,
                login_hint=login_hint[:256] if login_hint else None,
                resource=pending.request.resource if pending is not None else None,
            )
        except IdpError as exc:
            return self._idp_failed(provider, exc)
        payload = {
            "request": pending.handle if pending is not None else None,
            "next": back if pending is None else None,
            "browser": session.browser_id,
            "provider": provider.name,
            "nonce": nonce,
            "verifier": verifier,
        }
        await self._ctx.store.grants.put(STATE_KIND, digest(state), payload, time.time() + STATE_TTL_S)
        response = RedirectResponse(url, 303, headers=_HEADERS)
        if session.fresh:
            self._sessions.write(response, session)
        return response

    def _idp_failed(self, provider: OidcProvider, exc: IdpError) -> Response:
        log.warning("IdP %s: %s (%s)", provider.name, exc.message, exc.detail)
        self._ctx.event(events.LOGIN_FAILED, status=502, detail=f"idp {provider.name}: {exc.message}")
        return message(f"Sign-in with {provider.provider.label} failed", exc.message, 502)

    # -- GET /login/idp/<name>/callback ------------------------------------------------------

    async def callback(self, request: Request) -> Response:
        provider = self._provider(request)
        session = self._sessions.read(request)
        params = request.query_params
        state = params.get("state", "")
        if provider is None or not state or len(state) > MAX_PRESENTED_CHARS:
            return self._expired()
        data = await self._ctx.store.grants.consume(STATE_KIND, digest(state), time.time())
        if data is None or data.get("browser") != session.browser_id or data.get("provider") != provider.name:
            return self._expired()
        handle = data.get("request")
        back = safe_next(data.get("next")) if handle is None else None  # signing in for a page of ours
        pending = await self._flow.pending(handle, session) if isinstance(handle, str) else None
        if pending is None and back is None:
            return self._expired()
        try:
            await provider.check_response_issuer(params.get("iss"))
        except IdpError as exc:
            return self._idp_failed(provider, exc)
        error = params.get("error")
        if error is not None:
            if error == "access_denied" and pending is None:
                self._ctx.event(events.LOGIN_FAILED, status=403, detail=f"idp {provider.name}: cancelled")
                return message("Sign-in cancelled", "You did not sign in. Nothing was changed.", 403)
            if error == "access_denied" and pending is not None:
                self._ctx.event(events.AUTHORIZATION_DENIED, client_id=pending.request.client_id, status=303)
                return await self._flow.refuse(
                    pending, "access_denied", "the user cancelled at the identity provider"
                )
            return self._idp_failed(
                provider, IdpError(f"{provider.provider.label} refused the sign-in", detail=error[:100])
            )
        code = params.get("code")
        if not code:
            return self._expired()
        try:
            tokens = await provider.exchange_code(code, verifier=str(data["verifier"]))
            if tokens.id_token is None:
                raise IdpError(f"{provider.provider.label} did not send an ID token", detail="no id_token")
            claims = await provider.verify_id_token(tokens.id_token, nonce=str(data["nonce"]))
            identity = identity_from_claims(provider.provider, claims)
            user = await provision(self._ctx.store.users, provider.provider, identity)
        except IdpError as exc:
            return self._idp_failed(provider, exc)
        if user.disabled:
            self._ctx.event(
                events.LOGIN_FAILED, subject=user.user_id, status=403, detail=f"idp {provider.name}: disabled"
            )
            return message("Your account is disabled", "Ask your administrator to enable it.", 403)
        config = provider.provider.config
        idp_session = await self._idp_sessions.start(
            user_id=user.user_id,
            provider=provider.name,
            refresh_token=tokens.refresh_token if config.refresh else None,
            lifetime_s=config.max_session_lifetime,
            id_token=tokens.id_token,  # the subject token of ID-JAG exchanges at this IdP
            id_token_expires_at=float(claims["exp"]),
        )
        self._ctx.event(
            events.LOGIN_SUCCEEDED, subject=user.user_id, detail=f"idp {provider.name} ({identity.issuer})"
        )
        signed_in = BrowserSession(
            browser_id=session.browser_id,
            user_id=user.user_id,
            auth_time=time.time(),
            idp_session=idp_session,
        )
        if pending is None:
            assert back is not None
            response: Response = RedirectResponse(back, 303, headers=_HEADERS)
        else:
            response = await self._flow.signed_in(pending, signed_in)
        self._sessions.write(response, signed_in)
        return response

    def routes(self) -> list[Route]:
        return [
            Route("/login/idp/{name}", self.start, methods=["GET"]),
            Route("/login/idp/{name}/consent", self.consent, methods=["POST"]),
            Route("/login/idp/{name}/callback", self.callback, methods=["GET"]),
        ]
