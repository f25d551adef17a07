"""Where messages produced during one client request go.

A :class:`CallRoute` is the client's response stream for one request: notifications and
server→client requests are queued on it and the final response ends it. Server→client
requests are numbered by the client-side session (``ask``), so their ids are unique on the
client's connection even when several upstreams share it (the aggregate endpoint).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from typing import Any, Protocol

from bastion.core.errors import METHOD_NOT_FOUND

JsonObject = dict[str, Any]
_END = object()


class ServerRequestBroker(Protocol):
    """Numbers server→client requests and resolves them when the client answers."""

    def register(self) -> tuple[str, asyncio.Future[JsonObject]]: ...

    def forget(self, request_id: str) -> None: ...


class LocalBroker:
    """Broker for one client connection (a legacy session or a single modern request)."""

    def __init__(self, prefix: str = "bastion-") -> None:
        self._prefix = prefix
        self._ids = itertools.count(1)
        self._pending: dict[str, asyncio.Future[JsonObject]] = {}

    def register(self) -> tuple[str, asyncio.Future[JsonObject]]:
        request_id = f"{self._prefix}{next(self._ids)}"
        future: asyncio.Future[JsonObject] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        return request_id, future

    def forget(self, request_id: str) -> None:
        self._pending.pop(request_id, None)

    def answer(self, request_id: str, reply: JsonObject) -> bool:
        """Resolve a pending request with ``{"result": ...}`` or ``{"error": ...}``."""
        future = self._pending.pop(request_id, None)
        if future is None or future.done():
            return False
        future.set_result(reply)
        return True

    def resolve(self, message: JsonObject) -> bool:
        """Deliver a client's response; False when no such request is pending."""
        request_id = message.get("id")
        future = self._pending.pop(request_id, None) if isinstance(request_id, str) else None
        if future is None or future.done():
            return False
        reply = {"error": message["error"]} if "error" in message else {"result": message.get("result", {})}
        future.set_result(reply)
        return True

    def cancel_all(self) -> None:
        for future in self._pending.values():
            if not future.done():
                future.set_result({"error": {"code": -32000, "message": "client session closed"}})
        self._pending.clear()


class CallRoute:
    """The response stream of one client request."""

    def __init__(self, broker: ServerRequestBroker | None, *, can_ask: bool = True) -> None:
        self._queue: asyncio.Queue[object] = asyncio.Queue()
        self._broker = broker
        self.can_ask = can_ask and broker is not None
        self.progress_token: object = None
        self.closed = False

    def push(self, message: JsonObject) -> None:
        if not self.closed:
            self._queue.put_nowait(message)

    def finish(self, response: JsonObject) -> None:
        if not self.closed:
            self._queue.put_nowait(response)
            self._queue.put_nowait(_END)
            self.closed = True

    async def ask(self, method: str, params: JsonObject | None) -> JsonObject:
        """Send a server→client request on this stream and wait for the client's answer."""
        if not self.can_ask or self._broker is None or self.closed:
            return {"error": {"code": METHOD_NOT_FOUND, "message": f"the client cannot answer {method} here"}}
        request_id, future = self._broker.register()
        message: JsonObject = {"jsonrpc": "2.0", "id": request_id, "method": method}
        if params is not None:
            message["params"] = params
        self.push(message)
        try:
            return await future
        finally:
            self._broker.forget(request_id)

    async def messages(self) -> AsyncIterator[JsonObject]:
        while True:
            item = await self._queue.get()
            if item is _END:
                return
            assert isinstance(item, dict)
            yield item
