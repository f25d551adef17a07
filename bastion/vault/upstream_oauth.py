"""``upstreams[].auth: {type: upstream_oauth}``: the upstream MCP server is itself OAuth-protected,
and Bastion is its MCP client (MCP authorization, client side; requirements digest §3).

Each such upstream is an implicit OAuth connection named after it: users connect once, as for
``connections:``, and the vault keeps, refreshes and presents their tokens. What a configured
connection says in its config is found here at run time, once per process (at start-up, else at
first use), by :class:`UpstreamOAuthSetup`:

1. the upstream's Protected Resource Metadata and its authorization server's metadata
   (:mod:`.discovery`: RFC 9728 ``resource`` identical to the upstream's URL, RFC 8414 ``issuer``
   identical to the one named);
2. PKCE: the server's ``code_challenge_methods_supported`` must list ``S256`` (absent: refused);
3. Bastion's client there (:mod:`.rfc7591`): the configured one, a Client ID Metadata Document
   (``auto`` when the server advertises ``client_id_metadata_document_supported`` and Bastion's
   public URL is https), or Dynamic Client Registration, kept per issuer;
4. every authorization and token request carries ``resource`` (RFC 8707); the callback's ``iss``
   is checked (RFC 9207) and required when the server advertises
   ``authorization_response_iss_parameter_supported``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import httpx2

from bastion.config.upstream_auth import UpstreamOAuthAuth
from bastion.core.errors import UpstreamCredentialsUnavailable
from bastion.vault.discovery import Discovery, UpstreamAuthorization, https_or_loopback
from bastion.vault.model import ProviderUnavailable
from bastion.vault.presets import DEAD_GRANT, ResolvedConnection, ResolvedOAuth
from bastion.vault.rfc7591 import (
    CLIENT_METADATA_PATH,
    Registration,
    Registrations,
    preferred_auth_method,
    register,
)

log = logging.getLogger("bastion.vault")
CALLBACK_PATH = "/connect/callback"


def placeholder(name: str, auth: UpstreamOAuthAuth) -> ResolvedConnection:
    """The connection as known before discovery: what the pages show; no endpoints yet."""
    return ResolvedConnection(
        name=name,
        type="oauth",
        label=auth.label or name,
        scopes=tuple(auth.scopes),
        refresh_margin=auth.refresh_margin,
        oauth=_oauth(auth, None, None),
    )


def _oauth(
    auth: UpstreamOAuthAuth, found: UpstreamAuthorization | None, client: Registration | None
) -> ResolvedOAuth:
    metadata: Mapping[str, Any] = found.metadata if found is not None else {}
    resource = (("resource", found.resource),) if found is not None else ()

    def endpoint(name: str) -> str | None:
        value = metadata.get(name)
        return value if isinstance(value, str) and https_or_loopback(value) else None

    return ResolvedOAuth(
        preset="oauth",
        client_id=client.client_id if client is not None else "",
        client_secret=client.client_secret if client is not None else None,
        auth_method=client.auth_method if client is not None else "none",
        issuer=found.issuer if found is not None else None,
        authorization_endpoint=endpoint("authorization_endpoint"),
        token_endpoint=found.token_endpoint if found is not None else None,
        revocation_endpoint=endpoint("revocation_endpoint"),
        userinfo_endpoint=None,
        required_scopes=(),
        scope_param="scope",
        scope_separator=" ",
        pkce=True,
        authorize_params=resource,
        account_claim=None,
        account_source="userinfo",
        token_types=("bearer",),
        dead_grant=DEAD_GRANT,
        nested_tokens=None,
        revocation_style="rfc7009",
        timeout=auth.timeout,
        token_params=resource,
        iss_parameter=metadata.get("authorization_response_iss_parameter_supported") is True,
    )


class UpstreamOAuthSetup:
    """One ``upstream_oauth`` upstream's connection settings, from discovery and registration
    (the provider client's :class:`~bastion.vault.provider.OAuthSetup`)."""

    def __init__(
        self,
        name: str,
        url: str,
        auth: UpstreamOAuthAuth,
        *,
        public_url: str,
        registrations: Registrations,
        http: httpx2.AsyncClient,
    ) -> None:
        self._name = name
        self._auth = auth
        self._public_url = public_url.rstrip("/")
        self._registrations = registrations
        self._http = http
        self._discovery = Discovery(name, url, auth, http, grant=None)
        self._label = auth.label or name

    @property
    def redirect_uri(self) -> str:
        return self._public_url + CALLBACK_PATH

    async def resolve(self) -> ResolvedConnection:
        """Raises :class:`ProviderUnavailable` (the reason is logged, the message is for users)."""
        try:
            found = await self._discovery.authorization()
        except UpstreamCredentialsUnavailable as exc:
            log.warning("upstream %s: %s", self._name, exc.detail or exc)
            raise ProviderUnavailable(f"{self._label}: {exc}") from None
        metadata = found.metadata
        self._check_pkce(metadata)
        scopes = found.scopes
        offered = metadata.get("scopes_supported")
        if scopes and isinstance(offered, list) and "offline_access" in offered:
            scopes = (*scopes, "offline_access") if "offline_access" not in scopes else scopes
        client = await self._client(found, metadata, scopes)
        oauth = _oauth(self._auth, found, client)
        if oauth.authorization_endpoint is None:
            log.warning("upstream %s: no usable authorization_endpoint at %s", self._name, found.issuer)
            raise ProviderUnavailable(f"{self._label}'s authorization server cannot be used")
        log.info("upstream %s: client %s at %s (%s)", self._name, client.client_id, found.issuer, client.how)
        return ResolvedConnection(
            name=self._name,
            type="oauth",
            label=self._label,
            scopes=scopes,
            refresh_margin=self._auth.refresh_margin,
            oauth=oauth,
        )

    def _check_pkce(self, metadata: Mapping[str, Any]) -> None:
        methods = metadata.get("code_challenge_methods_supported")
        if not isinstance(methods, list) or "S256" not in methods:
            log.warning(
                "upstream %s: the authorization server does not list S256 in "
                "code_challenge_methods_supported: refused (MCP authorization, PKCE)",
                self._name,
            )
            raise ProviderUnavailable(f"{self._label}'s authorization server does not support PKCE")

    async def _client(
        self, found: UpstreamAuthorization, metadata: Mapping[str, Any], scopes: tuple[str, ...]
    ) -> Registration:
        auth = self._auth
        how = auth.registration
        if how == "static":
            assert auth.client_id is not None  # config
            method = auth.token_endpoint_auth_method or (
                "client_secret_basic" if auth.client_secret else "none"
            )
            return Registration(
                found.issuer, auth.client_id, auth.client_secret, method, self.redirect_uri, "static"
            )
        cimd_ok = metadata.get("client_id_metadata_document_supported") is True
        endpoint = metadata.get("registration_endpoint")
        if how == "cimd" or (how == "auto" and cimd_ok and self._public_url.startswith("https://")):
            client_id = self._public_url + CLIENT_METADATA_PATH
            return Registration(found.issuer, client_id, None, "none", self.redirect_uri, "cimd")
        if not isinstance(endpoint, str):
            log.warning(
                "upstream %s: %s offers neither client metadata documents (with an https public_url) nor "
                "dynamic registration: configure auth.registration: static",
                self._name,
                found.issuer,
            )
            raise ProviderUnavailable(f"{self._label} is not set up for Bastion yet; tell your administrator")
        kept = await self._registrations.find(self._name, found.issuer, self.redirect_uri)
        if kept is not None:
            return kept
        registration = await register(
            self._http,
            endpoint,
            issuer=found.issuer,
            redirect_uri=self.redirect_uri,
            auth_method=preferred_auth_method(metadata),
            scopes=tuple(dict.fromkeys((*scopes, *found.offered))),  # room for a later step-up
            label=self._label,
            timeout=auth.timeout,
        )
        await self._registrations.keep(self._name, registration)
        return registration


__all__ = ["CALLBACK_PATH", "UpstreamOAuthSetup", "placeholder"]
