"""Bastion as a 2026-07-28 client of a modern HTTP upstream: one POST per request, the
per-request envelope added, and ``input_required`` results resolved by asking the client
(legacy clients) or handed back as they are (modern clients retry themselves).
"""

from __future__ import annotations

import itertools
import logging
from typing import Any

import aiohttp
import orjson
from mcp.shared.inbound import NAME_BEARING_METHODS, encode_header_value
from mcp_types.version import LATEST_MODERN_VERSION

from bastion.core.errors import UpstreamFailed, UpstreamRejectedCredentials
from bastion.core.sse import SseDecoder
from bastion.upstream.eras import envelope, with_envelope
from bastion.upstream.http import HttpUpstreamClient, map_client_error
from bastion.upstream.routes import CallRoute

JsonObject = dict[str, Any]
log = logging.getLogger("bastion.upstream")
_MAX_ROUNDS = 8


class ModernLink:
    def __init__(
        self,
        client: HttpUpstreamClient,
        *,
        capabilities: JsonObject,
        client_info: JsonObject | None,
        extra_headers: tuple[tuple[str, str], ...] = (),
        resolve_input: bool = True,
    ) -> None:
        self.upstream = client.name
        self._client = client
        self._meta = envelope(LATEST_MODERN_VERSION, capabilities, client_info)
        self._extra = extra_headers
        self._resolve_input = resolve_input
        self._ids = itertools.count(1)
        self.initialize_result: JsonObject | None = None
        self.discover_result: JsonObject | None = None

    def use_headers(self, headers: tuple[tuple[str, str], ...]) -> None:
        """The credential of the link's user, renewed (a per-user token refreshed)."""
        self._extra = headers

    def _headers(self, message: JsonObject) -> list[tuple[str, str]]:
        method = str(message.get("method"))
        headers = [
            ("content-type", "application/json"),
            ("accept", "application/json, text/event-stream"),
            ("mcp-protocol-version", LATEST_MODERN_VERSION),
            ("mcp-method", method),
        ]
        key = NAME_BEARING_METHODS.get(method)
        params = message.get("params")
        if key is not None and isinstance(params, dict) and isinstance(params.get(key), str):
            headers.append(("mcp-name", encode_header_value(params[key])))
        headers.extend(self._extra)
        return headers

    async def discover(self) -> JsonObject:
        response = await self._post(
            {"jsonrpc": "2.0", "id": 0, "method": "server/discover", "params": {}}, None
        )
        result = response.get("result")
        if not isinstance(result, dict):
            raise UpstreamFailed(
                self.upstream, "server/discover failed", detail=str(response.get("error"))[:500]
            )
        self.discover_result = result
        return result

    async def request(
        self, message: JsonObject, route: CallRoute, timeout: float | None = None
    ) -> JsonObject:
        client_id = message.get("id")
        current = message
        for _ in range(_MAX_ROUNDS):
            response = await self._post(current, route)
            result = response.get("result")
            if not (
                self._resolve_input
                and isinstance(result, dict)
                and result.get("resultType") == "input_required"
            ):
                return {**response, "id": client_id}
            answers: JsonObject = {}
            requests = result.get("inputRequests") or {}
            for key, item in requests.items() if isinstance(requests, dict) else ():
                reply = await route.ask(str(item.get("method")), item.get("params"))
                if "error" in reply:
                    return {"jsonrpc": "2.0", "id": client_id, "error": reply["error"]}
                answers[key] = reply.get("result", {})
            params = dict(current.get("params") or {})
            params["inputResponses"] = answers
            if "requestState" in result:
                params["requestState"] = result["requestState"]
            else:
                params.pop("requestState", None)
            current = {**current, "params": params}
        raise UpstreamFailed(self.upstream, f"still asked for input after {_MAX_ROUNDS} rounds")

    async def notify(self, message: JsonObject) -> None:
        return  # the 2026-07-28 wire defines no client→server notifications over HTTP

    async def close(self) -> None:
        return

    async def _post(self, message: JsonObject, route: CallRoute | None) -> JsonObject:
        outgoing = with_envelope({**message, "id": next(self._ids)}, self._meta)
        response = await self._client.request("POST", self._headers(outgoing), orjson.dumps(outgoing))
        if response.status in (401, 403):
            response.release()
            raise UpstreamRejectedCredentials.from_response(
                self.upstream, response.status, response.headers.getall("www-authenticate", [])
            )
        content_type = response.headers.get("content-type", "")
        try:
            if content_type.startswith("text/event-stream"):
                return await self._read_sse(response, route)
            body = await response.read()
        except aiohttp.ClientError as exc:
            raise map_client_error(self.upstream, exc) from None
        finally:
            response.release()
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise UpstreamFailed(self.upstream, f"answered HTTP {response.status} without JSON-RPC") from None
        if not isinstance(parsed, dict) or not ("result" in parsed or "error" in parsed):
            raise UpstreamFailed(self.upstream, f"answered HTTP {response.status} without JSON-RPC")
        return parsed

    async def _read_sse(self, response: aiohttp.ClientResponse, route: CallRoute | None) -> JsonObject:
        decoder = SseDecoder()
        async for chunk in self._client.iter_chunks(response, None):
            for event in decoder.feed(chunk):
                if not event.data:
                    continue
                try:
                    parsed = orjson.loads(event.data)
                except orjson.JSONDecodeError:
                    continue
                if not isinstance(parsed, dict):
                    continue
                if "method" in parsed:
                    if route is not None:
                        route.push(parsed)
                elif "result" in parsed or "error" in parsed:
                    return parsed
        raise UpstreamFailed(self.upstream, "stream ended without a response")
