"""Bastion as an OAuth client of a downstream provider (``connections:`` of type oauth):
the authorization request, code redemption, refresh and revocation (RFC 6749 §4.1 and §6,
RFC 7636 PKCE S256, RFC 7009).

- Endpoints come from the preset and the connection's config; those still missing are read once
  from the provider's metadata (``<issuer>/.well-known/openid-configuration``, then the RFC 8414
  and OpenID path-insertion forms), whose ``issuer`` must be the configured one (RFC 8414 §3.3).
  A failed lookup is repeated at most every ``RETRY_AFTER_S``.
- Client authentication: ``client_secret_basic`` (RFC 6749 §2.3.1 encoding),
  ``client_secret_post`` or ``none`` (a public client with PKCE).
- Every answer is read with a cap (64 KiB) and checked (:mod:`.token_response`); redirects are
  not followed.
- The user's account name at the provider (for "My connections" only) comes from the userinfo
  endpoint when there is one, else from a claim of the ID token; failing to get it fails nothing.

Nothing here ever logs a token, a code, a client secret or a provider's error description:
only error codes and HTTP statuses.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol
from urllib.parse import quote_plus, urlencode

import httpx2

from bastion.vault.discovery import (
    OIDC_WELL_KNOWN,
    ResponseTooLarge,
    as_metadata_candidates,
    https_or_loopback,
    json_object,
    read_capped,
)
from bastion.vault.model import ProviderTokens, ProviderUnavailable
from bastion.vault.presets import ResolvedConnection, ResolvedOAuth
from bastion.vault.token_response import (
    MAX_RESPONSE_BYTES,
    Grant,
    claim,
    classify,
    id_token_claim,
    parse_tokens,
)

log = logging.getLogger("bastion.vault")

RETRY_AFTER_S = 5.0
USER_AGENT = "Bastion"
_ENDPOINTS = ("authorization_endpoint", "token_endpoint", "revocation_endpoint", "userinfo_endpoint")


@dataclass(frozen=True, slots=True)
class Endpoints:
    authorization_endpoint: str | None
    token_endpoint: str | None
    revocation_endpoint: str | None
    userinfo_endpoint: str | None


class OAuthSetup(Protocol):
    """Finds a connection's provider settings at run time (``upstream_oauth``: discovery and
    registration); raises :class:`ProviderUnavailable`."""

    async def resolve(self) -> ResolvedConnection: ...


class ProviderClient:
    """One OAuth connection's provider."""

    def __init__(
        self,
        connection: ResolvedConnection,
        http: httpx2.AsyncClient,
        *,
        clock: Callable[[], float] = time.time,
        setup: OAuthSetup | None = None,
    ) -> None:
        if connection.oauth is None:
            raise ValueError(f"connection {connection.name!r} is not an OAuth connection")
        self.connection = connection
        self._oauth: ResolvedOAuth = connection.oauth
        self._http = http
        self._clock = clock
        oauth = self._oauth
        self._endpoints = Endpoints(*(getattr(oauth, name) for name in _ENDPOINTS))
        self._setup = setup
        self._discovered = setup is None and (
            oauth.issuer is None or None not in (getattr(self._endpoints, n) for n in _ENDPOINTS)
        )
        self._failure: tuple[float, ProviderUnavailable] | None = None
        self._lock = asyncio.Lock()

    @property
    def name(self) -> str:
        return self.connection.name

    @property
    def uses_pkce(self) -> bool:
        return self._oauth.pkce

    @property
    def endpoints(self) -> Endpoints:
        """The endpoints known so far (complete once :meth:`discover` succeeded)."""
        return self._endpoints

    # -- discovery ---------------------------------------------------------------------------

    async def discover(self) -> Endpoints:
        """Fill in the endpoints not configured from the provider's metadata (once). Raises
        :class:`ProviderUnavailable`; a failure is repeated without a request for a few seconds."""
        if self._discovered:
            return self._endpoints
        async with self._lock:
            if self._discovered:
                return self._endpoints
            if self._failure is not None and self._clock() - self._failure[0] < RETRY_AFTER_S:
                raise self._failure[1]
            try:
                if self._setup is not None:
                    return self._set_up(await self._setup.resolve())
                metadata = await self._metadata()
            except ProviderUnavailable as exc:
                self._failure = (self._clock(), exc)
                raise
            found = {}
            for name in _ENDPOINTS:
                value = metadata.get(name)
                found[name] = value if isinstance(value, str) and https_or_loopback(value) else None
            current = self._endpoints
            self._endpoints = Endpoints(*(getattr(current, n) or found[n] for n in _ENDPOINTS))
            if metadata.get("authorization_response_iss_parameter_supported") is True:
                # RFC 9207 §2.4: a provider that says it always sends iss must not be answered without it
                self._oauth = replace(self._oauth, iss_parameter=True)
            self._discovered, self._failure = True, None
            return self._endpoints

    def _set_up(self, connection: ResolvedConnection) -> Endpoints:
        assert connection.oauth is not None
        self.connection, self._oauth = connection, connection.oauth
        self._endpoints = Endpoints(*(getattr(connection.oauth, name) for name in _ENDPOINTS))
        self._discovered, self._failure = True, None
        return self._endpoints

    def issuer_matches(self, iss: str | None) -> bool:
        """RFC 9207 on an authorization response: its ``iss`` must be the provider's issuer (when
        it is known), and must be there when the provider says it always sends it."""
        oauth = self._oauth
        if iss is None:
            return not oauth.iss_parameter
        return oauth.issuer is None or iss == oauth.issuer

    async def _metadata(self) -> Mapping[str, Any]:
        issuer = self._oauth.issuer
        assert issuer is not None
        label = self.connection.label
        candidates = [issuer.rstrip("/") + OIDC_WELL_KNOWN, *as_metadata_candidates(issuer)]
        problems = []
        for url in dict.fromkeys(candidates):
            try:
                async with self._http.stream(
                    "GET", url, headers={"accept": "application/json"}, timeout=self._oauth.timeout
                ) as response:
                    status = response.status_code
                    body = json_object(await read_capped(response, MAX_RESPONSE_BYTES))
            except (httpx2.HTTPError, httpx2.InvalidURL, ResponseTooLarge) as exc:
                problems.append(f"{url}: {type(exc).__name__}")
                continue
            if status != 200 or body is None:
                problems.append(f"{url}: HTTP {status}" + ("" if body is not None else ", not a JSON object"))
                continue
            if body.get("issuer") != issuer:
                problems.append(f"{url}: names another issuer")
                continue
            return body
        log.warning("connection %s: no usable provider metadata: %s", self.name, "; ".join(problems))
        raise ProviderUnavailable(f"{label}'s configuration could not be read; try again shortly")

    async def _endpoint(self, name: str) -> str | None:
        value: str | None = getattr(self._endpoints, name)
        if value is None and not self._discovered:
            value = getattr(await self.discover(), name)
        return value

    # -- the authorization request -----------------------------------------------------------

    def authorization_url(
        self,
        state: str,
        code_challenge: str | None,
        redirect_uri: str,
        scopes: Sequence[str] | None = None,
    ) -> str:
        """Where to send the user's browser. Needs the authorization endpoint: configured, or
        discovered before (:meth:`discover`); else :class:`ProviderUnavailable`."""
        oauth = self._oauth
        endpoint = self._endpoints.authorization_endpoint
        if endpoint is None:
            raise ProviderUnavailable(f"{self.connection.label}'s configuration has not been read yet")
        if oauth.pkce and not code_challenge:
            raise ValueError(f"connection {self.name!r} uses PKCE: a code_challenge is required")
        asked = list(scopes) if scopes is not None else list(self.connection.scopes)
        asked += [s for s in oauth.required_scopes if s not in asked]
        params = {"response_type": "code", "client_id": oauth.client_id, "redirect_uri": redirect_uri}
        if asked:
            params[oauth.scope_param] = oauth.scope_separator.join(asked)
        params["state"] = state
        if oauth.pkce and code_challenge:
            params |= {"code_challenge": code_challenge, "code_challenge_method": "S256"}
        params |= dict(oauth.authorize_params)
        return endpoint + ("&" if "?" in endpoint else "?") + urlencode(params)

    # -- the token endpoint ------------------------------------------------------------------

    async def redeem(self, code: str, code_verifier: str | None, redirect_uri: str) -> ProviderTokens:
        """The tokens for an authorization code (with the user's account name when known).
        :class:`ProviderRefused` for any OAuth error, :class:`ProviderUnavailable` otherwise."""
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri}
        if code_verifier:
            form["code_verifier"] = code_verifier
        tokens, id_token = await self._token_request("authorization_code", form)
        return replace(tokens, account=await self._account(tokens.access_token, id_token))

    async def refresh(self, refresh_token: str) -> ProviderTokens:
        """New tokens (RFC 6749 §6). ``refresh_token`` None in the result: the provider did not
        rotate it, keep the old one. :class:`ProviderRefused` only when the grant is gone."""
        form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
        tokens, _ = await self._token_request("refresh_token", form)
        return tokens

    async def _token_request(self, grant: Grant, form: dict[str, str]) -> tuple[ProviderTokens, str | None]:
        endpoint = await self._endpoint("token_endpoint")
        if endpoint is None:
            raise ProviderUnavailable(f"{self.connection.label} has no token endpoint")
        form |= dict(self._oauth.token_params)
        headers = {"accept": "application/json", "user-agent": USER_AGENT} | self._authenticate(form)
        asked_at = self._clock()
        status, body = await self._send("POST", endpoint, headers=headers, data=form)
        fields = classify(self.connection, grant, status, body)
        return parse_tokens(self.connection, fields, asked_at)

    def _authenticate(self, form: dict[str, str]) -> dict[str, str]:
        """Adds the client's credentials to ``form``; returns the headers they need."""
        oauth = self._oauth
        if oauth.auth_method == "client_secret_basic":
            # RFC 6749 §2.3.1: both are form-urlencoded before they are joined and encoded
            pair = f"{quote_plus(oauth.client_id, safe='')}:{quote_plus(oauth.client_secret or '', safe='')}"
            return {"authorization": "Basic " + base64.b64encode(pair.encode()).decode("ascii")}
        form["client_id"] = oauth.client_id
        if oauth.auth_method == "client_secret_post":
            form["client_secret"] = oauth.client_secret or ""
        return {}

    async def _send(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        data: Mapping[str, str] | None = None,
        json: Mapping[str, str] | None = None,
        auth: httpx2.BasicAuth | None = None,
    ) -> tuple[int, dict[str, Any] | None]:
        label = self.connection.label
        try:
            async with self._http.stream(
                method,
                url,
                headers=dict(headers),
                data=data,
                json=json,
                auth=auth,
                timeout=self._oauth.timeout,
            ) as response:
                status = response.status_code
                return status, json_object(await read_capped(response, MAX_RESPONSE_BYTES))
        except ResponseTooLarge as exc:
            log.warning("connection %s: %s %s: %s", self.name, method, url, exc)
            raise ProviderUnavailable(f"{label} sent an unusable answer") from None
        except httpx2.TimeoutException:
            log.warning("connection %s: %s %s: timeout", self.name, method, url)
            raise ProviderUnavailable(f"{label} did not answer in time; try again shortly") from None
        except (httpx2.HTTPError, httpx2.InvalidURL) as exc:
            log.warning("connection %s: %s %s: %s", self.name, method, url, type(exc).__name__)
            raise ProviderUnavailable(f"{label} could not be reached; try again shortly") from None

    # -- the account name (display only) -----------------------------------------------------

    async def _account(self, access_token: str, id_token: str | None) -> str | None:
        oauth = self._oauth
        if oauth.account_claim is None:
            return None
        if oauth.account_source == "userinfo":
            try:
                userinfo = await self._endpoint("userinfo_endpoint")
            except ProviderUnavailable:
                userinfo = None
            if userinfo is not None:
                account = await self._userinfo_account(userinfo, access_token, oauth.account_claim)
                if account is not None:
                    return account
        return id_token_claim(id_token, oauth.account_claim) if id_token else None

    async def _userinfo_account(self, url: str, access_token: str, path: str) -> str | None:
        headers = {
            "authorization": f"Bearer {access_token}",
            "accept": "application/json",
            "user-agent": USER_AGENT,
        }
        try:
            status, body = await self._send("GET", url, headers=headers)
        except ProviderUnavailable:
            return None
        if status != 200 or body is None:
            log.info("connection %s: userinfo answered HTTP %d: no account name", self.name, status)
            return None
        return claim(body, path)

    # -- revocation --------------------------------------------------------------------------

    async def revoke(self, token: str, token_type_hint: str = "refresh_token") -> bool:  # noqa: S107
        """Revoke ``token`` at the provider (RFC 7009; GitHub: its grant API). Best effort: True
        only when the provider confirmed; never raises for the provider's sake."""
        try:
            endpoint = await self._endpoint("revocation_endpoint")
        except ProviderUnavailable:
            return False
        if endpoint is None:
            return False
        oauth = self._oauth
        try:
            if oauth.revocation_style == "github":
                if token_type_hint != "access_token":  # noqa: S105 - a hint's name
                    return False  # GitHub revokes a grant by one of its access tokens
                auth = httpx2.BasicAuth(oauth.client_id, oauth.client_secret or "")
                headers = {"accept": "application/vnd.github+json", "user-agent": USER_AGENT}
                url = endpoint.removesuffix("/token") + "/grant"
                status, body = await self._send(
                    "DELETE", url, headers=headers, json={"access_token": token}, auth=auth
                )
                done = status == 204
            else:
                form = {"token": token, "token_type_hint": token_type_hint}
                headers = {"accept": "application/json", "user-agent": USER_AGENT} | self._authenticate(form)
                status, body = await self._send("POST", endpoint, headers=headers, data=form)
                done = status == 200 and (body is None or body.get("ok") is not False)
        except ProviderUnavailable:
            return False
        if not done:
            log.info("connection %s: revocation answered HTTP %d", self.name, status)
        return done


class Providers:
    """Every OAuth connection's :class:`ProviderClient`, on one HTTP client; the vault's
    :class:`~bastion.vault.model.TokenRefresher`."""

    def __init__(
        self,
        connections: Iterable[ResolvedConnection],
        *,
        http: httpx2.AsyncClient | None = None,
        clock: Callable[[], float] = time.time,
        setups: Mapping[str, OAuthSetup] | None = None,
    ) -> None:
        """``setups``: by connection name, those whose settings are found at run time."""
        self._own_http = http is None
        self._http = http or httpx2.AsyncClient(follow_redirects=False)
        setups = setups or {}
        self._clients = {
            c.name: ProviderClient(c, self._http, clock=clock, setup=setups.get(c.name))
            for c in connections
            if c.oauth is not None
        }

    def get(self, connection: str) -> ProviderClient | None:
        return self._clients.get(connection)

    def _client(self, connection: str) -> ProviderClient:
        client = self._clients.get(connection)
        if client is None:
            raise ProviderUnavailable(f"connection {connection!r} is not a configured OAuth connection")
        return client

    async def refresh(self, connection: str, refresh_token: str) -> ProviderTokens:
        return await self._client(connection).refresh(refresh_token)

    async def revoke(self, connection: str, token: str, token_type_hint: str) -> bool:
        client = self._clients.get(connection)
        return await client.revoke(token, token_type_hint) if client is not None else False

    async def discover(self) -> dict[str, str]:
        """Read every provider's metadata that is needed (at startup); returns the failures by
        connection name (they are tried again when the connection is used)."""
        names = list(self._clients)
        results = await asyncio.gather(*(self._clients[n].discover() for n in names), return_exceptions=True)
        failures = {}
        for name, result in zip(names, results, strict=True):
            if isinstance(result, ProviderUnavailable):
                failures[name] = str(result)
            elif isinstance(result, BaseException):
                raise result
        return failures

    async def aclose(self) -> None:
        if self._own_http:
            await self._http.aclose()


__all__ = ["Endpoints", "OAuthSetup", "ProviderClient", "Providers"]
