"""A Bastion-held legacy-era MCP session with one upstream, shared by many client requests.

Used wherever Bastion relays messages rather than bytes: stdio upstreams, the aggregate
endpoint, and modern-era clients in front of legacy-only upstreams. Request ids and progress
tokens are rewritten on the way up and restored on the way down, so many callers can share
one upstream session; server→client requests are relayed to the caller they belong to.

Routing of upstream messages that the wire does not attribute to a request:
progress → by its (rewritten) progress token; server requests, logging and other
notifications → the only in-flight request if there is exactly one, else the newest
in-flight request that can answer, else the session's GET stream, else answered with an
error / dropped (see docs/protocol-bridging.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from bastion.config.model import Timeouts
from bastion.core.errors import (
    METHOD_NOT_FOUND,
    UpstreamError,
    UpstreamFailed,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from bastion.upstream.routes import CallRoute

JsonObject = dict[str, Any]
SessionAsker = Callable[[str, JsonObject | None], Awaitable[JsonObject]]
log = logging.getLogger("bastion.upstream")


class MessageTransport(Protocol):
    async def send(self, message: JsonObject) -> None: ...

    async def close(self) -> None: ...


class LegacyChannel:
    def __init__(self, upstream: str, init_params: JsonObject, timeouts: Timeouts) -> None:
        self.upstream = upstream
        self.init_params = init_params
        self.timeouts = timeouts
        self.transport: MessageTransport | None = None
        self.initialize_result: JsonObject | None = None
        self.session_sink: Callable[[JsonObject], None] | None = None
        self.session_asker: SessionAsker | None = None
        self.closed = False
        self._ids = itertools.count(1)
        self._tokens = itertools.count(1)
        self._pending: dict[int, asyncio.Future[JsonObject]] = {}
        self._routes: dict[int, CallRoute] = {}
        self._progress: dict[str, tuple[CallRoute, object]] = {}
        self._ready = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self.last_used = asyncio.get_running_loop().time()

    def attach(self, transport: MessageTransport) -> None:
        self.transport = transport

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    # -- lifecycle ---------------------------------------------------------------------------

    async def handshake(self) -> None:
        """Run initialize + notifications/initialized; called on every (re)start of the transport."""
        self._ready.clear()
        message = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": self.init_params}
        response = await self._exchange(message, None, self.timeouts.connect + self.timeouts.request)
        if "error" in response or not isinstance(response.get("result"), dict):
            error = response.get("error") or {}
            raise UpstreamFailed(self.upstream, "refused initialize", detail=str(error)[:500])
        self.initialize_result = response["result"]
        await self._send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        self._ready.set()

    def transport_lost(self, reason: str) -> None:
        """The transport died: fail every pending request (the supervisor may restart it)."""
        self._ready.clear()
        error = UpstreamFailed(self.upstream, reason)
        for future in self._pending.values():
            if not future.done():
                future.set_exception(error)

    async def close(self) -> None:
        self.closed = True
        self.transport_lost("session closed")
        for task in list(self._tasks):
            task.cancel()
        if self.transport is not None:
            await self.transport.close()

    async def wait_ready(self, timeout: float) -> None:
        if self._ready.is_set():
            return
        if self.closed:
            raise UpstreamUnavailable(self.upstream, "session closed")
        try:
            async with asyncio.timeout(timeout):
                await self._ready.wait()
        except TimeoutError:
            raise UpstreamUnavailable(self.upstream, "not ready (starting or restarting)") from None

    # -- client → upstream -------------------------------------------------------------------

    async def request(
        self, message: JsonObject, route: CallRoute, timeout: float | None = None
    ) -> JsonObject:
        """Forward one client request; returns the response carrying the client's own id."""
        await self.wait_ready(self.timeouts.connect)
        client_id = message.get("id")
        params = message.get("params")
        token_key: str | None = None
        if isinstance(params, dict):
            meta = params.get("_meta")
            if isinstance(meta, dict) and "progressToken" in meta:
                token_key = f"bastion-{next(self._tokens)}"
                self._progress[token_key] = (route, meta["progressToken"])
                params = {**params, "_meta": {**meta, "progressToken": token_key}}
                message = {**message, "params": params}
        try:
            response = await self._exchange(message, route, timeout or self.timeouts.request)
        finally:
            if token_key is not None:
                self._progress.pop(token_key, None)
        return {**response, "id": client_id}

    async def notify(self, message: JsonObject) -> None:
        await self.wait_ready(self.timeouts.connect)
        await self._send(message)

    async def cancel(self, upstream_id: int, reason: str) -> None:
        with contextlib.suppress(UpstreamError):
            await self._send(
                {
                    "jsonrpc": "2.0",
                    "method": "notifications/cancelled",
                    "params": {"requestId": upstream_id, "reason": reason},
                }
            )

    def upstream_id_for(self, route: CallRoute) -> int | None:
        for upstream_id, candidate in self._routes.items():
            if candidate is route:
                return upstream_id
        return None

    async def _exchange(self, message: JsonObject, route: CallRoute | None, timeout: float) -> JsonObject:
        upstream_id = next(self._ids) if message.get("method") != "initialize" else 0
        future: asyncio.Future[JsonObject] = asyncio.get_running_loop().create_future()
        self._pending[upstream_id] = future
        if route is not None:
            self._routes[upstream_id] = route
        self.last_used = asyncio.get_running_loop().time()
        try:
            await self._send({**message, "id": upstream_id})
            async with asyncio.timeout(timeout):
                return await future
        except TimeoutError:
            await self.cancel(upstream_id, "timeout")
            raise UpstreamTimeout(self.upstream, f"no answer within {timeout:g} s") from None
        except asyncio.CancelledError:
            task = asyncio.ensure_future(self.cancel(upstream_id, "client cancelled or disconnected"))
            self._keep(task)
            raise
        finally:
            self._pending.pop(upstream_id, None)
            self._routes.pop(upstream_id, None)
            self.last_used = asyncio.get_running_loop().time()

    async def _send(self, message: JsonObject) -> None:
        if self.transport is None:
            raise UpstreamUnavailable(self.upstream, "not connected")
        await self.transport.send(message)

    # -- upstream → client -------------------------------------------------------------------

    def on_message(self, message: JsonObject) -> None:
        if "method" in message:
            if "id" in message:
                self._on_server_request(message)
            else:
                self._on_notification(message)
            return
        upstream_id = message.get("id")
        future = self._pending.get(upstream_id) if isinstance(upstream_id, int) else None
        if future is not None and not future.done():
            future.set_result(message)
        else:
            log.debug("upstream %s: response for unknown id dropped", self.upstream)

    def _target_route(self, need_ask: bool) -> CallRoute | None:
        routes = [r for r in self._routes.values() if not r.closed]
        if len(routes) == 1:
            return routes[0]
        for route in reversed(routes):
            if not need_ask or route.can_ask:
                return route
        return None

    def _on_notification(self, message: JsonObject) -> None:
        route: CallRoute | None
        params = message.get("params")
        if message["method"] == "notifications/progress" and isinstance(params, dict):
            entry = self._progress.get(str(params.get("progressToken")))
            if entry is not None:
                route, original = entry
                route.push({**message, "params": {**params, "progressToken": original}})
            return
        if message["method"] == "notifications/cancelled":
            return  # cancels a server→client request; the client's stream ends with its answer anyway
        route = self._target_route(need_ask=False)
        if route is not None:
            route.push(message)
        elif self.session_sink is not None:
            self.session_sink(message)

    def _on_server_request(self, message: JsonObject) -> None:
        upstream_request_id = message["id"]
        if message["method"] == "ping":
            self._keep(asyncio.ensure_future(self._answer(upstream_request_id, {"result": {}})))
            return
        route = self._target_route(need_ask=True)
        self._keep(asyncio.ensure_future(self._relay_request(route, upstream_request_id, message)))

    async def _relay_request(
        self, route: CallRoute | None, upstream_request_id: object, message: JsonObject
    ) -> None:
        method = message["method"]
        params = message.get("params") if isinstance(message.get("params"), dict) else None
        if route is not None and route.can_ask:
            reply = await route.ask(method, params)
        elif self.session_asker is not None:
            reply = await self.session_asker(method, params)
        else:
            reply = {
                "error": {
                    "code": METHOD_NOT_FOUND,
                    "message": f"no client can answer {method} through Bastion",
                }
            }
        await self._answer(upstream_request_id, reply)

    async def _answer(self, upstream_request_id: object, reply: JsonObject) -> None:
        with contextlib.suppress(UpstreamError):
            await self._send({"jsonrpc": "2.0", "id": upstream_request_id, **reply})

    def _keep(self, task: asyncio.Task[None]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
