"""The browser's session with Bastion's pages: one signed cookie.

It carries a random browser id (set on the first visit, before sign-in, so the login form's
CSRF token and every pending authorization request can be bound to this browser) and, once
signed in, the user id and the time of authentication. The cookie is signed, HttpOnly,
SameSite=Lax, and ``__Host-``/Secure whenever Bastion is served over https (on plain-http
loopback development a Secure cookie would never come back, so the prefix is dropped there).
The user is looked up on every use, so disabling or deleting a user ends their sessions.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response

from bastion.web.security import clear_cookie_header, cookie_header, cookie_name, read_cookie, seal, unseal

PURPOSE = "browser-session"


@dataclass(frozen=True, slots=True)
class BrowserSession:
    browser_id: str
    user_id: str | None = None
    auth_time: float | None = None
    idp_session: str | None = None  # the identity-provider session of this sign-in, if any
    fresh: bool = False  # not in the request: the response must set it


class BrowserSessions:
    def __init__(self, key: bytes, *, secure: bool, ttl: float) -> None:
        self._key = key
        self._secure = secure
        self._ttl = ttl
        self.name = cookie_name("bastion_session", secure)

    def read(self, request: Request) -> BrowserSession:
        raw = read_cookie(request.scope["headers"], self.name)
        data = unseal(self._key, raw, PURPOSE, time.time()) if raw else None
        if data is None or not isinstance(data.get("b"), str):
            return BrowserSession(browser_id=secrets.token_urlsafe(16), fresh=True)
        user = data.get("u")
        at = data.get("t")
        return BrowserSession(
            browser_id=str(data["b"]),
            user_id=user if isinstance(user, str) else None,
            auth_time=float(at) if isinstance(at, int | float) and user else None,
            idp_session=str(data["s"]) if isinstance(data.get("s"), str) and user else None,
        )

    def write(self, response: Response, session: BrowserSession) -> None:
        payload: dict[str, object] = {"b": session.browser_id, "exp": int(time.time() + self._ttl)}
        if session.user_id is not None:
            payload["u"] = session.user_id
            payload["t"] = round(session.auth_time or time.time(), 3)
            if session.idp_session is not None:
                payload["s"] = session.idp_session
        value = seal(self._key, payload, PURPOSE)
        response.raw_headers.append(
            (b"set-cookie", cookie_header(self.name, value, secure=self._secure, max_age=int(self._ttl)))
        )

    def clear(self, response: Response) -> None:
        response.raw_headers.append((b"set-cookie", clear_cookie_header(self.name, self._secure)))
