"""Composition root: the only place that builds concrete objects and wires them together."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import secrets
import signal
import time
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, Router

from bastion.audit import events
from bastion.audit.recorder import AuditRecorder
from bastion.authn.anonymous import AnonymousAuthenticator
from bastion.authority import Authority, build_authority
from bastion.config.model import Settings
from bastion.config.upstream_auth import (
    ClientSuppliedAuth,
    EmaUpstreamAuth,
    ServiceAuth,
    TokenExchangeAuth,
    UpstreamOAuthAuth,
    UserApiKeyAuth,
    UserOAuthAuth,
)
from bastion.core.errors import UpstreamError
from bastion.core.records import AuditRecord
from bastion.core.stages import Authenticator
from bastion.edge.guards import HostGuard
from bastion.edge.inbound import Receive
from bastion.edge.render import Send, send_json
from bastion.pipeline import McpPipeline
from bastion.policy.loader import load_policy
from bastion.policy.reload import PolicyHolder, PolicyReloader, ReloadOutcome
from bastion.store import Store, open_store
from bastion.upstream.connect_gate import ConnectGate
from bastion.upstream.router import UpstreamStage
from bastion.upstream.sessions import SessionManager
from bastion.vault.ema import EmaUpstreamCredentials
from bastion.vault.exchange import TokenExchangeCredentials, exchange_client
from bastion.vault.sources import ConnectionCredentials, ServiceCredentials
from bastion.vault.stage import CredentialSource, Vault
from bastion.vault.supplied import SuppliedCredentials

log = logging.getLogger("bastion")
MAINTENANCE_INTERVAL = 30.0
SYNC_INTERVAL = 5.0  # seconds until a revocation or key rotation made elsewhere reaches this replica


async def _healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


_HEALTH = Route("/healthz", _healthz, methods=["GET"])


class _NoAudit:
    """``audit.enabled: false``: per-request records are not kept (lifecycle events still are)."""

    def record(self, rec: AuditRecord) -> None:
        return


class BastionApp:
    """The ASGI application. Built fully at lifespan startup; serves /mcp* through the pipeline."""

    def __init__(self, settings: Settings, *, config_path: Path | None = None) -> None:
        self.settings = settings
        self.config_path = config_path  # re-read for its policies on SIGHUP and when it changes
        self.policy: PolicyHolder | None = None
        self._sighup = False
        self.replica = secrets.token_hex(6)
        self.store: Store | None = None
        self.audit: AuditRecorder | None = None
        self.upstream: UpstreamStage | None = None
        self.pipeline: McpPipeline | None = None
        self.authority: Authority | None = None
        self._router: Router | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._closers: list[Callable[[], Awaitable[None]]] = []

    async def startup(self) -> None:
        settings = self.settings
        if not settings.auth.enabled:
            log.warning(
                "AUTHENTICATION IS DISABLED (auth.enabled: false): anyone who can reach %s can use every "
                "upstream. Use this only for development on loopback.",
                settings.listen,
            )
        # AllowAll unless a policy is configured; ConfigError names file:line. Held, to be reloaded.
        self.policy = policy = PolicyHolder(load_policy(settings))
        self.store = await open_store(settings.storage)
        self.audit = AuditRecorder(
            self.store.audit,
            jsonl_path=settings.audit.jsonl_path,
            retention_days=settings.audit.retention_days,
        )
        await self.audit.start()
        sink = self.audit if settings.audit.enabled else _NoAudit()
        authn: Authenticator = AnonymousAuthenticator()
        if settings.auth.enabled:
            self.authority = await build_authority(settings, self.store, self.audit, replica=self.replica)
            authn = self.authority.authenticator
        self._router = Router(routes=[*(self.authority.routes if self.authority else []), _HEALTH])
        sessions = SessionManager(
            self.store.sessions, idle_ttl=settings.sessions.idle_ttl, replica=self.replica
        )
        self.upstream = UpstreamStage(settings, sessions, self._connect_gate())
        self.pipeline = McpPipeline(
            guard=HostGuard.from_settings(settings),
            max_body=settings.edge.max_body_bytes,
            authn=authn,
            policy=policy,
            vault=Vault(self._credential_sources(), self._suppliers()),
            upstream=self.upstream,
            audit=sink,
        )
        self._lifecycle(events.SERVER_STARTED, f"{len(settings.upstreams)} upstreams")
        self._watch_policy(policy)
        # Everything built so far lives as long as the process: keep it out of the cyclic
        # collector's generations, so collections on the request path scan only request garbage.
        gc.collect()
        gc.freeze()
        self._tasks.append(asyncio.ensure_future(self._warm_up()))
        self._tasks.append(asyncio.ensure_future(self._maintain(sessions)))
        if self.authority is not None:
            self._tasks.append(asyncio.ensure_future(self._sync(self.authority)))

    def _watch_policy(self, holder: PolicyHolder) -> None:
        """Reload the policy on SIGHUP and when the config file or a policy file changes."""
        reloader = PolicyReloader(
            holder, self.settings, config_path=self.config_path, env=os.environ, notify=self._policy_reloaded
        )
        if reloader.watching:
            self._tasks.append(asyncio.ensure_future(reloader.watch()))

        async def reload() -> None:
            await reloader.reload_now("SIGHUP")

        def on_sighup() -> None:
            self._tasks = [t for t in self._tasks if not t.done()]
            self._tasks.append(asyncio.ensure_future(reload()))

        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):  # not the main thread
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, on_sighup)
            self._sighup = True

    def _policy_reloaded(self, outcome: ReloadOutcome) -> None:
        event = events.POLICY_RELOADED if outcome.accepted else events.POLICY_REJECTED
        self._lifecycle(event, outcome.message()[:500])

    def _credential_sources(self) -> dict[str, CredentialSource]:
        """Per-user credentials of the upstreams that want them (``upstreams[].auth``)."""
        sources: dict[str, CredentialSource] = {}
        for upstream in self.settings.upstreams:
            auth = upstream.auth
            if isinstance(auth, ServiceAuth):
                sources[upstream.name] = ServiceCredentials(
                    upstream.name, auth, stdio=upstream.stdio is not None
                )
            if isinstance(auth, UserOAuthAuth | UserApiKeyAuth | UpstreamOAuthAuth):
                assert self.authority is not None  # config: these modes need auth.enabled
                connections = self.authority.connections
                sources[upstream.name] = ConnectionCredentials(
                    upstream.name,
                    auth,
                    label=connections.label(
                        upstream.name if isinstance(auth, UpstreamOAuthAuth) else auth.connection
                    ),
                    tokens=connections.vault,
                    intents=connections.intents,
                    stdio=upstream.stdio is not None,
                )
            if isinstance(auth, EmaUpstreamAuth):
                assert self.authority is not None  # config: ema needs auth.enabled
                assert upstream.http is not None  # config: ema needs an http upstream
                source = EmaUpstreamCredentials(
                    upstream.name, upstream.http.url, auth, self.authority.id_jag_source(auth.id_jag_issuer)
                )
                self._closers.append(source.aclose)
                sources[upstream.name] = source
            if isinstance(auth, TokenExchangeAuth):
                assert self.authority is not None  # config: token_exchange needs auth.enabled
                idp = next(p for p in self.settings.identity_providers if p.name == auth.identity_provider)
                exchange = TokenExchangeCredentials(
                    upstream.name,
                    auth,
                    self.authority.subject_tokens(auth.identity_provider),
                    exchange_client(auth, idp),
                    stdio=upstream.stdio is not None,
                )
                self._closers.append(exchange.aclose)
                sources[upstream.name] = exchange
        return sources

    def _connect_gate(self) -> ConnectGate | None:
        """How a user without the account an upstream needs is asked to connect it."""
        if self.authority is None:
            return None
        connections = self.authority.connections
        return ConnectGate(connections.request_state_key, connections.intents.completed)

    def _suppliers(self) -> dict[str, SuppliedCredentials]:
        """Upstreams in the #234 compatibility mode (``auth: {type: client_supplied}``)."""
        return {
            u.name: SuppliedCredentials(u.name, u.auth)
            for u in self.settings.upstreams
            if isinstance(u.auth, ClientSuppliedAuth)
        }

    def _lifecycle(self, event: str, detail: str) -> None:
        if self.audit is not None:
            self.audit.record(AuditRecord(ts=time.time(), event=event, trace_id="-", detail=detail))

    async def _warm_up(self) -> None:
        """Learn each HTTP upstream's eras early, so the first client call does not pay for it;
        read the metadata of connections' providers named by issuer only."""
        assert self.upstream is not None
        if self.authority is not None:
            failed = await self.authority.connections.providers.discover()
            for name, reason in failed.items():
                log.warning(
                    "connection %s: provider discovery failed (%s); retried on first use", name, reason
                )
        for entry in self.upstream.entries.values():
            if entry.http is None or entry.per_user:  # probed with the first user's credential
                continue
            try:
                await entry.eras()
            except UpstreamError as err:
                log.warning("%s (will retry on first use)", err.message)
                entry.forget_eras()

    async def _maintain(self, sessions: SessionManager) -> None:
        assert self.upstream is not None
        while True:
            await asyncio.sleep(MAINTENANCE_INTERVAL)
            try:
                if self.authority is not None:
                    await self.authority.purge()
                for _ in await sessions.maintain():
                    self._lifecycle(events.SESSION_EXPIRED, "idle")
                reaped = await self.upstream.reap_idle()
                if reaped:
                    log.info("stopped %d idle per-session stdio processes", reaped)
            except Exception:
                log.exception("maintenance failed")

    async def _sync(self, authority: Authority) -> None:
        while True:
            await asyncio.sleep(SYNC_INTERVAL)
            try:
                await authority.sync()
            except Exception:
                log.exception("key ring / revocation sync failed")

    async def shutdown(self) -> None:
        if self._sighup:
            asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
            self._sighup = False
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        if self.upstream is not None:
            await self.upstream.close()
        for close in self._closers:
            await close()
        self._closers.clear()
        if self.authority is not None:
            await self.authority.aclose()
        self._lifecycle(events.SERVER_STOPPED, "")
        if self.audit is not None:
            await self.audit.aclose()
        if self.store is not None:
            await self.store.close()

    async def __call__(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            path: str = scope["path"]
            if path.startswith("/mcp") and self.pipeline is not None:
                await self.pipeline(scope, receive, send)
            elif self._router is not None:
                await self._router(scope, receive, send)
            else:
                await send_json(send, 503, {"error": "starting", "error_description": "Bastion is starting"})
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    log.exception("startup failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return


def create_app(settings: Settings, *, config_path: Path | None = None) -> BastionApp:
    """``config_path``: the file ``settings`` came from, re-read for its policies on reload."""
    return BastionApp(settings, config_path=config_path)


__all__ = ["BastionApp", "create_app"]
