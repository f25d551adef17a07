"""Message relay for one client request or one legacy client session.

``run_on_link`` turns one client request into a :class:`MessageReply` whose stream carries
what the upstream sends during the call and ends with the response. :class:`RelaySession`
is a legacy client session whose upstream side is held by Bastion (stdio upstreams,
bridged eras, the aggregate endpoint).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from bastion.core.errors import BastionError, UpstreamError
from bastion.core.records import SessionRecord
from bastion.core.replies import MessageReply
from bastion.upstream.routes import CallRoute, LocalBroker

JsonObject = dict[str, Any]
_CLOSE = object()


def error_response(request_id: object, err: BastionError) -> JsonObject:
    error: JsonObject = {"code": err.code, "message": err.message}
    if err.data is not None:
        error["data"] = err.data
    return {"jsonrpc": "2.0", "id": request_id, "error": error}


async def _stream(route: CallRoute, task: asyncio.Task[None]) -> AsyncIterator[JsonObject]:
    try:
        async for message in route.messages():
            yield message
    finally:
        if not task.done():
            task.cancel()


def run_on_route(
    route: CallRoute,
    request_id: object,
    work: Callable[[], Awaitable[JsonObject]],
    *,
    upstream: str = "",
    on_done: Callable[[JsonObject], None] | None = None,
) -> MessageReply:
    """Run ``work`` (which returns the response) in a task; stream the route's messages."""

    async def runner() -> None:
        try:
            response = await work()
        except BastionError as err:
            response = error_response(request_id, err)
        if on_done is not None:
            on_done(response)
        route.finish(response)

    task = asyncio.ensure_future(runner())
    return MessageReply(messages=_stream(route, task), upstream=upstream)


async def single(message: JsonObject) -> AsyncIterator[JsonObject]:
    yield message


class RelaySession:
    """A legacy client session held in this replica: its broker, GET stream and links."""

    def __init__(self, record: SessionRecord) -> None:
        self.record = record
        self.broker = LocalBroker()
        self._get_queue: asyncio.Queue[object] | None = None
        self.client_ids: dict[object, tuple[Any, CallRoute]] = {}  # client request id → (link, route)
        self.closed = False

    @property
    def session_id(self) -> str:
        return self.record.session_id

    @property
    def init_params(self) -> JsonObject:
        """The client's own initialize parameters, for (re)opening its upstream links."""
        record = self.record
        return {
            "protocolVersion": record.protocol_version,
            "capabilities": record.client_capabilities,
            "clientInfo": record.client_info,
        }

    def sink(self, message: JsonObject) -> None:
        """Unattributed upstream messages go to the client's GET stream, if it opened one."""
        if self._get_queue is not None:
            self._get_queue.put_nowait(message)

    async def ask(self, method: str, params: JsonObject | None) -> JsonObject:
        if self._get_queue is None:
            return {"error": {"code": -32601, "message": f"the client has no open stream for {method}"}}
        request_id, future = self.broker.register()
        message: JsonObject = {"jsonrpc": "2.0", "id": request_id, "method": method}
        if params is not None:
            message["params"] = params
        self._get_queue.put_nowait(message)
        try:
            return await future
        finally:
            self.broker.forget(request_id)

    def open_stream(self) -> MessageReply:
        if self._get_queue is not None:
            self._get_queue.put_nowait(_CLOSE)  # one GET stream per session: the newer one wins
        queue: asyncio.Queue[object] = asyncio.Queue()
        self._get_queue = queue

        async def messages() -> AsyncIterator[JsonObject]:
            try:
                while True:
                    item = await queue.get()
                    if item is _CLOSE:
                        return
                    assert isinstance(item, dict)
                    yield item
            finally:
                if self._get_queue is queue:
                    self._get_queue = None

        return MessageReply(messages=messages(), stream=True)

    def close(self) -> None:
        self.closed = True
        self.broker.cancel_all()
        if self._get_queue is not None:
            self._get_queue.put_nowait(_CLOSE)


async def forward_cancel(session: RelaySession, message: JsonObject) -> None:
    """A client's notifications/cancelled: cancel the matching in-flight relay."""
    params = message.get("params")
    if not isinstance(params, dict):
        return
    entry = session.client_ids.get(params.get("requestId"))
    if entry is None:
        return
    link, route = entry
    upstream_id = getattr(link, "upstream_id_for", lambda _r: None)(route)
    if upstream_id is not None:
        with contextlib.suppress(UpstreamError):
            await link.cancel(upstream_id, str(params.get("reason") or "cancelled by the client"))
