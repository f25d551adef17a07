"""Bastion as a legacy-era Streamable HTTP client: the transport under a LegacyChannel
when Bastion holds its own session with an HTTP upstream (aggregate endpoint, modern clients
in front of a legacy-only upstream).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import aiohttp
import orjson

from bastion.core.errors import UpstreamError, UpstreamFailed, UpstreamRejectedCredentials
from bastion.core.sse import SseDecoder
from bastion.upstream.http import HttpUpstreamClient, map_client_error

JsonObject = dict[str, Any]
log = logging.getLogger("bastion.upstream")


class HttpSessionTransport:
    def __init__(
        self,
        client: HttpUpstreamClient,
        on_message: Callable[[JsonObject], None],
        *,
        extra_headers: tuple[tuple[str, str], ...] = (),
        on_lost: Callable[[str], None] | None = None,
    ) -> None:
        self._client = client
        self._on_message = on_message
        self._extra = extra_headers
        self._on_lost = on_lost
        self.session_id: str | None = None
        self.protocol_version: str | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._get_task: asyncio.Task[None] | None = None
        self._closed = False

    def use_headers(self, headers: tuple[tuple[str, str], ...]) -> None:
        """The credential of the session's user, renewed (a per-user token refreshed)."""
        self._extra = headers

    def _headers(self) -> list[tuple[str, str]]:
        headers = [("content-type", "application/json"), ("accept", "application/json, text/event-stream")]
        if self.session_id is not None:
            headers.append(("mcp-session-id", self.session_id))
        if self.protocol_version is not None:
            headers.append(("mcp-protocol-version", self.protocol_version))
        headers.extend(self._extra)
        return headers

    async def send(self, message: JsonObject) -> None:
        is_initialize = message.get("method") == "initialize"
        if is_initialize:
            self.session_id = None
            self.protocol_version = None
        response = await self._client.request("POST", self._headers(), orjson.dumps(message))
        status = response.status
        if is_initialize:
            self.session_id = response.headers.get("mcp-session-id")
        content_type = response.headers.get("content-type", "")
        if status in (401, 403):
            response.release()
            raise UpstreamRejectedCredentials.from_response(
                self._client.name, status, response.headers.getall("www-authenticate", [])
            )
        if status == 202 or ("id" not in message and status < 300):
            response.release()
            return
        if status == 404 and self.session_id is not None and not is_initialize:
            response.release()
            self.session_id = None
            if self._on_lost is not None:
                self._on_lost("upstream session expired")
            return
        if content_type.startswith("text/event-stream") and status < 300:
            self._spawn(self._read_sse(response, is_initialize))
            return
        try:
            body = await response.read()
        except aiohttp.ClientError as exc:
            raise map_client_error(self._client.name, exc) from None
        finally:
            response.release()
        self._deliver_body(message, status, body, is_initialize)

    def _deliver_body(self, message: JsonObject, status: int, body: bytes, is_initialize: bool) -> None:
        try:
            parsed = orjson.loads(body) if body else None
        except orjson.JSONDecodeError:
            parsed = None
        if isinstance(parsed, dict) and ("result" in parsed or "error" in parsed or "method" in parsed):
            if is_initialize:
                self._note_version(parsed)
            self._on_message(parsed)
            return
        if "id" in message:
            self._on_message(
                {
                    "jsonrpc": "2.0",
                    "id": message["id"],
                    "error": {
                        "code": -32012,
                        "message": f"upstream '{self._client.name}' answered HTTP {status}",
                    },
                }
            )

    def _note_version(self, message: JsonObject) -> None:
        result = message.get("result")
        if isinstance(result, dict) and isinstance(result.get("protocolVersion"), str):
            self.protocol_version = result["protocolVersion"]
            if self._get_task is None:
                self._get_task = asyncio.ensure_future(self._listen())

    async def _read_sse(self, response: aiohttp.ClientResponse, is_initialize: bool) -> None:
        decoder = SseDecoder()
        try:
            async for chunk in self._client.iter_chunks(response, None):
                for event in decoder.feed(chunk):
                    if event.event != "message" or not event.data:
                        continue
                    try:
                        parsed = orjson.loads(event.data)
                    except orjson.JSONDecodeError:
                        log.warning("upstream %s: unparseable SSE event dropped", self._client.name)
                        continue
                    if isinstance(parsed, dict):
                        if is_initialize:
                            self._note_version(parsed)
                        self._on_message(parsed)
        except UpstreamError as exc:
            log.warning("upstream %s: stream failed: %s", self._client.name, exc.message)

    async def _listen(self) -> None:
        """The GET stream for server-initiated messages; absent (405) is fine."""
        delay = 1.0
        while not self._closed and self.session_id is not None:
            headers = [h for h in self._headers() if h[0] != "content-type"]
            headers = [("accept", "text/event-stream") if h[0] == "accept" else h for h in headers]
            try:
                response = await self._client.request(
                    "GET", headers, None, timeout=self._client.spec.timeouts.connect, long_lived=True
                )
            except UpstreamError:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
                continue
            if response.status != 200 or not response.headers.get("content-type", "").startswith(
                "text/event-stream"
            ):
                response.release()
                return
            await self._read_sse(response, False)
            delay = 1.0

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        self._closed = True
        if self._get_task is not None:
            self._get_task.cancel()
        for task in list(self._tasks):
            task.cancel()
        if self.session_id is not None:
            with contextlib.suppress(UpstreamError, UpstreamFailed):
                response = await self._client.request("DELETE", self._headers(), None, timeout=5.0)
                response.release()
            self.session_id = None
