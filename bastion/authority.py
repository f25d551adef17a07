"""Builds Bastion's authorization server and the matching authn stage from the settings
(part of the composition root: app.py calls :func:`build_authority` at startup).

One protected resource per MCP endpoint; the aggregate ``/mcp`` requires every upstream's
scopes until tool-level policy (issue #6) can tell which upstream a call is for.
"""

from __future__ import annotations

import logging
import ssl
import time
from dataclasses import dataclass, field

import httpx2
from starlette.routing import BaseRoute

from bastion.audit import events
from bastion.authn.access import AccessTokenAuthenticator, EndpointAccess
from bastion.authn.bearer import BearerVerifier
from bastion.config.model import Settings
from bastion.config.upstream_auth import BASTION_ISSUER, UpstreamOAuthAuth
from bastion.core.credentials import IdJagSource, SubjectTokenSource
from bastion.core.errors import ConfigError
from bastion.core.revocations import RevokedTokens
from bastion.core.stages import AuditSink
from bastion.idp.exchange_subjects import subject_token_sources
from bastion.idp.idjag import idjag_sources
from bastion.idp.oidc import IdpError, OidcProvider
from bastion.idp.presets import resolve
from bastion.idp.sessions import IdpSessions
from bastion.idp.subject_tokens import IdTokenSubjects
from bastion.idp.users import LocalUsers
from bastion.net.fetch import FetchPolicy, SafeFetcher
from bastion.oauth.bridge import BridgeIdJagSource, IdJagMinter, TokenExchange
from bastion.oauth.cimd import CimdResolver
from bastion.oauth.context import OAuthContext, ResourceScopes
from bastion.oauth.endpoints import oauth_routes
from bastion.oauth.errors import InvalidGrant
from bastion.oauth.idjag import IdJagGrant
from bastion.oauth.keystore import KeyRingHolder, load_master_key
from bastion.oauth.opaque import derive_key
from bastion.oauth.registry import ClientRegistry
from bastion.oauth.rfc9728 import resources
from bastion.store import Store
from bastion.vault.connections import ConnectionVault
from bastion.vault.envelope import VaultCipher
from bastion.vault.intents import ConnectIntents
from bastion.vault.keys import check_vault_keys, load_vault_keys
from bastion.vault.presets import ResolvedConnection, resolve_all
from bastion.vault.provider import Providers
from bastion.vault.rfc7591 import Registrations
from bastion.vault.upstream_oauth import UpstreamOAuthSetup, placeholder
from bastion.web.browser import BrowserSessions
from bastion.web.client_metadata import client_metadata_route
from bastion.web.connect import ConnectPages
from bastion.web.federation import FederatedLogin
from bastion.web.flow import AuthorizationFlow
from bastion.web.login import LoginPages
from bastion.web.my_connections import MyConnections

log = logging.getLogger("bastion")
JWKS_MAX_BYTES = 64 * 1024
SYNC_MARGIN_S = 60.0


@dataclass(frozen=True, slots=True)
class Connections:
    """Users' downstream accounts (issue #7): the vault, the providers, the connect intents."""

    resolved: tuple[ResolvedConnection, ...]
    providers: Providers
    vault: ConnectionVault
    intents: ConnectIntents
    request_state_key: bytes  # MACs the requestState of Bastion's own URL elicitations
    http: httpx2.AsyncClient | None = None  # upstream_oauth discovery and registration (closed here)

    def label(self, name: str) -> str:
        return next((c.label for c in self.resolved if c.name == name), name)


def _connections(
    settings: Settings, store: Store, cipher: VaultCipher, master: bytes, replica: str
) -> Connections:
    resolved = resolve_all(settings.connections)
    implicit = [(u, u.auth) for u in settings.upstreams if isinstance(u.auth, UpstreamOAuthAuth)]
    http = httpx2.AsyncClient(follow_redirects=False) if implicit else None
    setups = {}
    if http is not None:  # upstream_oauth: each such upstream is a connection of its own name
        registrations = Registrations(store.vault, cipher)
        for upstream, auth in implicit:
            assert upstream.http is not None  # config: upstream_oauth needs an http upstream
            resolved = (*resolved, placeholder(upstream.name, auth))
            setups[upstream.name] = UpstreamOAuthSetup(
                upstream.name,
                upstream.http.url,
                auth,
                public_url=settings.public_url,
                registrations=registrations,
                http=http,
            )
    providers = Providers(resolved, http=http, setups=setups)
    return Connections(
        http=http,
        resolved=resolved,
        providers=providers,
        vault=ConnectionVault(store.vault, cipher, providers, resolved, replica_id=replica),
        intents=ConnectIntents(store.grants, settings.public_url),
        request_state_key=derive_key(master, "connect-request-state"),
    )


@dataclass(slots=True)
class Authority:
    ctx: OAuthContext
    authenticator: AccessTokenAuthenticator
    routes: list[BaseRoute]
    providers: list[OidcProvider]
    bridge_source: BridgeIdJagSource | None = None  # ID-JAGs from Bastion's own bridge (Role 3)
    id_tokens: IdTokenSubjects | None = None
    idp_id_jags: dict[str, IdJagSource] = field(default_factory=dict)  # by identity provider name
    # the users' sign-ins as subject tokens of token exchanges, by identity provider name
    idp_subject_tokens: dict[str, SubjectTokenSource] = field(default_factory=dict)
    # seals and opens users' downstream credentials (issue #7); checked against the store at startup
    vault_cipher: VaultCipher = field(kw_only=True)
    connections: Connections = field(kw_only=True)

    def id_jag_source(self, issuer: str) -> IdJagSource:
        """Who mints ID-JAGs for an ``auth: {type: ema}`` upstream (its ``id_jag_issuer``)."""
        if issuer == BASTION_ISSUER:
            if self.bridge_source is None:
                raise ConfigError("id_jag_issuer 'bastion' needs ema.bridge.enabled")
            return self.bridge_source
        source = self.idp_id_jags.get(issuer)
        if source is None:
            raise ConfigError(f"id_jag_issuer '{issuer}' is not an identity provider")
        return source

    def subject_tokens(self, provider_name: str) -> SubjectTokenSource:
        """The users' sign-ins through ``provider_name`` as subject tokens, for an ``auth: {type:
        token_exchange}`` upstream (its ``identity_provider``)."""
        source = self.idp_subject_tokens.get(provider_name)
        if source is None:
            raise ConfigError(f"identity_provider '{provider_name}' is not an identity provider")
        return source

    async def aclose(self) -> None:
        await self.connections.providers.aclose()
        if self.connections.http is not None:
            await self.connections.http.aclose()
        for provider in self.providers:
            await provider.aclose()
        if self.id_tokens is not None:
            await self.id_tokens.aclose()

    async def sync(self) -> None:
        """Pick up key rotations and revocations made by other replicas or the CLI."""
        ctx = self.ctx
        before = ctx.keys.ring.active.kid
        await ctx.keys.refresh()
        if ctx.keys.ring.active.kid != before:
            ctx.event(events.KEY_ROTATED, detail=f"now signing with {ctx.keys.ring.active.kid}")
        now = time.time()
        # re-read a margin: revoked_at comes from the revoking replica's clock, and rows may
        # commit out of order (re-adding a jti is harmless)
        since = max(0.0, ctx.revoked.synced_until - SYNC_MARGIN_S)
        rows = await ctx.store.revoked_tokens.revoked_since(since, now)
        for jti, expires_at, revoked_at in rows:
            ctx.revoked.add(jti, expires_at)
            ctx.revoked.synced_until = max(ctx.revoked.synced_until, revoked_at)
        ctx.revoked.prune(now)

    async def purge(self) -> None:
        store, now = self.ctx.store, time.time()
        await store.grants.purge_expired(now)
        await store.clients.purge_expired(now)
        await store.revoked_tokens.purge_expired(now)
        await store.throttle.purge_before(now - 86400)
        await store.idp_sessions.purge_expired(now)


class _BridgeIdTokens:
    """The bridge's ``IdTokenVerifier`` over the identity providers (their errors: invalid_grant)."""

    def __init__(self, subjects: IdTokenSubjects) -> None:
        self._subjects = subjects

    async def user_for(self, id_token: str, *, audience: str) -> tuple[str, float | None]:
        try:
            return await self._subjects.user_for(id_token, audience=audience)
        except IdpError as exc:
            raise InvalidGrant(exc.message, detail=exc.detail) from None


def _bridge(
    settings: Settings, ctx: OAuthContext, master: bytes, store: Store
) -> tuple[TokenExchange | None, BridgeIdJagSource | None, IdTokenSubjects | None]:
    """Enterprise-Managed Authorization, Role 2: Bastion mints ID-JAGs (ema.bridge)."""
    ema = settings.ema
    if any(t.issuer == settings.public_url for t in ema.trusted_issuers):
        raise ConfigError("ema.trusted_issuers: Bastion's own issuer (public_url) must never be trusted")
    if not ema.bridge.enabled:
        return None, None, None
    minter = IdJagMinter(ctx, ema.bridge, derive_key(master, "ema-bridge-pairwise"))
    subjects = None
    if settings.identity_providers and ema.bridge.idp_client_ids:
        subjects = IdTokenSubjects([resolve(p) for p in settings.identity_providers], store.users)
    exchange = TokenExchange(
        minter,
        ctx,
        id_tokens=_BridgeIdTokens(subjects) if subjects is not None else None,
        idp_client_ids=ema.bridge.idp_client_ids,
    )
    return exchange, BridgeIdJagSource(minter, ctx), subjects


def _fetch_policy(settings: Settings, max_bytes: int) -> FetchPolicy:
    cimd = settings.auth.client_metadata_documents
    context = None
    if cimd.ca_file:
        context = ssl.create_default_context()
        context.load_verify_locations(cafile=cimd.ca_file)
    return FetchPolicy.allowing(
        cimd.allowed_hosts,
        cimd.allowed_networks,
        https_only=cimd.https_only,
        max_bytes=max_bytes,
        ssl_context=context,
    )


async def build_authority(
    settings: Settings, store: Store, audit: AuditSink, *, replica: str = ""
) -> Authority:
    auth = settings.auth
    issuer = settings.public_url
    master = load_master_key(settings)
    keys = KeyRingHolder(store, master, alg=auth.signing_alg, max_token_lifetime_s=auth.access_token_ttl)
    await keys.load()
    vault_keys = load_vault_keys(settings, master)
    await check_vault_keys(store.vault, vault_keys)  # a wrong vault key is a startup error
    cipher = VaultCipher(vault_keys)
    connections = _connections(settings, store, cipher, master, replica)
    cimd = None
    if auth.client_metadata_documents.enabled:
        cimd = CimdResolver(SafeFetcher(_fetch_policy(settings, 5 * 1024)))
    registry = ClientRegistry(
        store.clients, cimd=cimd, jwks_fetcher=SafeFetcher(_fetch_policy(settings, JWKS_MAX_BYTES))
    )
    await registry.sync_config(settings.clients)

    per_upstream = {u.name: tuple(u.required_scopes) for u in settings.upstreams}
    every = tuple(dict.fromkeys(s for scopes in per_upstream.values() for s in scopes))
    known: dict[str, ResourceScopes] = {}
    endpoints: dict[str | None, EndpointAccess] = {}
    for resource in resources(settings):
        extra = every if resource.endpoint is None else per_upstream[resource.endpoint]
        required = tuple(dict.fromkeys([*auth.required_scopes, *extra]))
        known[resource.resource] = ResourceScopes(resource, required)
        endpoints[resource.endpoint] = EndpointAccess(resource.resource, resource.metadata_url, required)

    providers = {
        p.name: OidcProvider(resolve(p), redirect_uri=f"{issuer}/login/idp/{p.name}/callback")
        for p in settings.identity_providers
    }
    idp_sessions = IdpSessions(store, providers, derive_key(master, "idp-session"))
    ctx = OAuthContext(
        issuer=issuer,
        auth=auth,
        keys=keys,
        registry=registry,
        store=store,
        resources=known,
        revoked=RevokedTokens(),
        refresh_key=derive_key(master, "refresh-successor"),
        audit=audit,
        sessions=idp_sessions,
        user_attributes=settings.policy.user_attributes,
    )
    verifier = BearerVerifier(keys, issuer=issuer, clock=time.time)
    authenticator = AccessTokenAuthenticator(verifier, endpoints, ctx.revoked)
    sessions = BrowserSessions(
        derive_key(master, "browser-session"),
        secure=issuer.startswith("https://"),
        ttl=auth.login.session_ttl,
    )
    csrf_key = derive_key(master, "csrf")
    bound = {f"{issuer}/mcp/{u.name}": u.identity_provider for u in settings.upstreams if u.identity_provider}
    only = next(iter(providers)) if len(providers) == 1 and not auth.login.password else None
    realms = {d: p.name for p in settings.identity_providers for d in p.email_domains}
    flow = AuthorizationFlow(
        ctx, sessions, csrf_key, bound_providers=bound, only_provider=only, realms=realms
    )
    login = LoginPages(
        ctx,
        sessions,
        csrf_key,
        LocalUsers(store.users),
        auth.login,
        providers=tuple((name, p.provider.label) for name, p in providers.items()),
        realms=realms,
    )
    federation = FederatedLogin(
        ctx, sessions=sessions, csrf_key=csrf_key, flow=flow, providers=providers, idp_sessions=idp_sessions
    )
    idjag = IdJagGrant(ctx, settings.ema)
    exchange, bridge_source, id_tokens = _bridge(settings, ctx, master, store)
    routes: list[BaseRoute] = [
        *oauth_routes(ctx, idjag, exchange),
        *flow.routes(),
        *login.routes(),
        *federation.routes(),
    ]
    if connections.resolved:  # users connect their downstream accounts (issue #7)
        connect = ConnectPages(
            ctx,
            sessions=sessions,
            csrf_key=csrf_key,
            connections=connections.resolved,
            providers=connections.providers,
            vault=connections.vault,
            intents=connections.intents,
        )
        mine = MyConnections(
            ctx,
            sessions=sessions,
            csrf_key=csrf_key,
            connections=connections.resolved,
            vault=connections.vault,
        )
        routes += [*connect.routes(), *mine.routes()]
    if connections.http is not None:  # upstream_oauth: Bastion's Client ID Metadata Document
        routes.append(client_metadata_route(issuer))
    authority = Authority(
        ctx,
        authenticator,
        routes,
        list(providers.values()),
        bridge_source=bridge_source,
        id_tokens=id_tokens,
        idp_id_jags=dict(idjag_sources(settings, store, providers, derive_key(master, "idp-session"))),
        idp_subject_tokens=dict(subject_token_sources(providers, store, derive_key(master, "idp-session"))),
        vault_cipher=cipher,
        connections=connections,
    )
    await authority.sync()
    return authority
