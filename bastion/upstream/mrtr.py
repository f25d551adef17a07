"""Server→client requests of a legacy upstream, for a 2026-07-28 client (MRTR bridge).

A legacy server asks mid-call (``elicitation/create``, ``sampling/createMessage``,
``roots/list``); a modern client can only be asked by ending its response with
``resultType: "input_required"`` and reading the answer from its retry. So the upstream call is
kept open here while the client answers: the first response ends with ``inputRequests`` and an
opaque ``requestState``; the retry (new JSON-RPC id, same method and name, ``inputResponses``,
the same ``requestState``) resumes the very same upstream call.

``requestState`` is a 256-bit random handle to state held in this replica: it reveals nothing,
cannot be forged, is bound to the principal and to the method and name of the request that
created it, is single use, and expires after ``ttl`` seconds (the upstream call is then
cancelled).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from bastion.core.errors import BastionError, InvalidParams
from bastion.core.records import InboundCall, Principal
from bastion.core.replies import MessageReply
from bastion.upstream.relay import error_response
from bastion.upstream.routes import CallRoute, LocalBroker

JsonObject = dict[str, Any]


@dataclass(eq=False)
class _Held:
    route: CallRoute
    broker: LocalBroker
    task: asyncio.Task[None]
    subject: str
    method: str | None
    name: str | None
    asked: dict[str, JsonObject] = field(default_factory=dict)  # open server requests by id
    expires: float = 0.0


class MrtrBridge:
    def __init__(self, ttl: float = 300.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl = ttl
        self._clock = clock
        self._held: dict[str, _Held] = {}

    @staticmethod
    def is_retry(call: InboundCall) -> bool:
        return "requestState" in call.params or "inputResponses" in call.params

    def holds(self, call: InboundCall) -> bool:
        state = call.params.get("requestState")
        return isinstance(state, str) and state in self._held

    def start(
        self,
        call: InboundCall,
        principal: Principal,
        work: Callable[[CallRoute], Awaitable[JsonObject]],
        upstream: str,
    ) -> MessageReply:
        """Run ``work`` on a route whose server→client requests become input_required results."""
        self.sweep()
        broker = LocalBroker(prefix="input-")
        route = CallRoute(broker)

        async def runner() -> None:
            try:
                response = await work(route)
            except BastionError as err:
                response = error_response(call.request_id, err)
            route.finish(response)

        held = _Held(
            route, broker, asyncio.ensure_future(runner()), principal.subject, call.method, call.name
        )
        return MessageReply(messages=self._stream(held, call.request_id), upstream=upstream)

    def resume(self, call: InboundCall, principal: Principal, upstream: str) -> MessageReply:
        self.sweep()
        state = call.params.get("requestState")
        held = self._held.pop(state, None) if isinstance(state, str) else None
        if held is None:
            raise InvalidParams("Invalid params: requestState is unknown, expired or already used")
        if (held.subject, held.method, held.name) != (principal.subject, call.method, call.name):
            held.task.cancel()
            raise InvalidParams("Invalid params: requestState belongs to another request")
        responses = call.params.get("inputResponses")
        if isinstance(responses, dict):
            for key, value in responses.items():
                if key in held.asked and isinstance(value, dict):
                    held.asked.pop(key)
                    held.broker.answer(key, {"result": value})
        return MessageReply(messages=self._stream(held, call.request_id), upstream=upstream)

    async def _stream(self, held: _Held, request_id: object) -> AsyncIterator[JsonObject]:
        detached = False
        try:
            if held.asked:  # the retry did not answer everything: ask again
                detached = True
                yield self._input_required(held, request_id)
                return
            async for message in held.route.messages():
                if "method" in message and "id" in message:
                    held.asked[str(message["id"])] = {
                        "method": message["method"],
                        "params": message.get("params") or {},
                    }
                    detached = True
                    yield self._input_required(held, request_id)
                    return
                if "method" in message:
                    yield message
                else:
                    yield {**message, "id": request_id}
                    return
        finally:
            if not detached and not held.task.done():
                held.task.cancel()  # the client went away before the call ended: cancel upstream

    def _input_required(self, held: _Held, request_id: object) -> JsonObject:
        token = secrets.token_urlsafe(32)
        held.expires = self._clock() + self._ttl
        self._held[token] = held
        result = {"resultType": "input_required", "inputRequests": dict(held.asked), "requestState": token}
        return {"jsonrpc": "2.0", "id": request_id, "result": result}

    def sweep(self) -> None:
        now = self._clock()
        for token in [t for t, h in self._held.items() if h.expires < now]:
            self._held.pop(token).task.cancel()

    def close(self) -> None:
        for held in self._held.values():
            held.task.cancel()
        self._held.clear()
