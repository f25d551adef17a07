"""The fast path: a client and an HTTP upstream that speak the same era.

The JSON-RPC body is forwarded byte for byte and the response streamed back chunk by chunk.
Bastion changes only what it must: its own session id for the upstream's, its own headers for
the client's (the client's Authorization never travels upstream), the extensions Bastion
implements added to the initialize / server/discover result (see extensions.py), list results
filtered by policy (lists.py; no other response is parsed), and upstream failures become
JSON-RPC errors naming the upstream.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import aiohttp

from bastion.core.errors import UpstreamFailed, UpstreamRejectedCredentials
from bastion.core.records import (
    Era,
    InboundCall,
    ListFilter,
    MessageKind,
    Principal,
    SessionRecord,
    UpstreamCredential,
)
from bastion.core.replies import ByteReply, Headers
from bastion.upstream.extensions import RESULT_METHODS, JsonObject, with_extensions
from bastion.upstream.http import HttpUpstreamClient, map_client_error
from bastion.upstream.lists import LIST_KINDS, filter_result
from bastion.upstream.result_rewrite import ResultRewrite, rewrite_json, rewrite_sse
from bastion.upstream.sessions import SessionManager

# content-length is not copied: Bastion frames the body itself (whole, or chunked while streaming)
_RESPONSE_HEADERS = frozenset({"content-type", "cache-control", "x-accel-buffering"})
_SMALL_BODY = 256 * 1024  # read JSON bodies up to this size whole: one ASGI send instead of several


@dataclass(frozen=True, slots=True)
class ForwardPlan:
    call: InboundCall
    principal: Principal
    credential: UpstreamCredential
    session: SessionRecord | None
    lists: ListFilter | None = None  # policy's filter for list results


def request_headers(
    call: InboundCall, credential: UpstreamCredential, upstream_session: str | None
) -> list[tuple[str, str]]:
    headers: list[tuple[str, str]] = []
    if call.http_method == "POST":
        headers.append(("content-type", "application/json"))
    headers.append(("accept", call.accept or "application/json, text/event-stream"))
    if call.protocol_version:
        headers.append(("mcp-protocol-version", call.protocol_version))
    if call.era is Era.MODERN and call.method is not None:
        headers.append(("mcp-method", call.method))
        if call.name is not None:
            headers.append(("mcp-name", call.name))
    if call.last_event_id is not None:
        headers.append(("last-event-id", call.last_event_id))
    if upstream_session is not None:
        headers.append(("mcp-session-id", upstream_session))
    headers.extend(call.extra_headers)
    headers.extend(credential.headers)
    return headers


class Passthrough:
    def __init__(
        self, client: HttpUpstreamClient, sessions: SessionManager, extensions: JsonObject | None = None
    ) -> None:
        self._client = client
        self._sessions = sessions
        self._extensions = extensions or {}  # Bastion's own, declared in initialize/discover results
        self._name = client.name
        self._request_timeout = client.spec.timeouts.request

    async def forward(self, plan: ForwardPlan) -> ByteReply:
        call = plan.call
        upstream_session = plan.session.upstream_session_id if plan.session is not None else None
        headers = request_headers(call, plan.credential, upstream_session)
        body = call.body if call.http_method == "POST" else None
        streaming_get = call.http_method == "GET"
        response = await self._client.request(
            call.http_method,
            headers,
            body,
            timeout=self._client.spec.timeouts.connect + self._request_timeout,
            long_lived=streaming_get,
        )
        status = response.status
        if status in (401, 403):
            response.release()
            raise UpstreamRejectedCredentials.from_response(
                self._name, status, response.headers.getall("www-authenticate", [])
            )
        if status >= 500:
            response.release()
            raise UpstreamFailed(self._name, f"answered HTTP {status}")
        content_type = response.headers.get("content-type", "")
        is_sse = content_type.startswith("text/event-stream")
        if (
            status < 300
            and status != 202
            and call.kind is MessageKind.REQUEST
            and not (is_sse or content_type.startswith("application/json"))
        ):
            response.release()
            raise UpstreamFailed(
                self._name, f"answered {content_type or 'without a content type'}, not JSON-RPC"
            )
        out_headers = await self._response_headers(plan, response)
        if status == 404 and plan.session is not None:
            await self._sessions.drop(plan.session.session_id)
        if call.http_method == "DELETE" and plan.session is not None and status < 300:
            await self._sessions.drop(plan.session.session_id)
        rewrite = self._rewrite(plan) if status == 200 else None
        length = response.content_length
        if not is_sse and (rewrite is not None or (length is not None and length <= _SMALL_BODY)):
            try:
                async with asyncio.timeout(self._request_timeout):
                    data = await response.read()
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise map_client_error(self._name, exc) from None
            finally:
                response.release()
            if rewrite is not None:
                data = rewrite_json(data, call.request_id, rewrite)
            return ByteReply(status, out_headers, None, data, False, self._name)
        loop = asyncio.get_running_loop()
        deadline = None if streaming_get else loop.time() + self._request_timeout
        chunks = self._client.iter_chunks(response, deadline)
        if rewrite is not None and is_sse:
            chunks = rewrite_sse(chunks, call.request_id, rewrite)
        return ByteReply(status, out_headers, chunks, b"", is_sse, self._name)

    def _rewrite(self, plan: ForwardPlan) -> ResultRewrite | None:
        """The one result Bastion changes, if any: the extensions it declares in initialize /
        server/discover, or a list filtered by policy. Every other response stays bytes."""
        method = plan.call.method
        if self._extensions and method in RESULT_METHODS:
            extensions = self._extensions
            return lambda result: with_extensions(result, extensions)
        lists = plan.lists
        if lists is not None and method in LIST_KINDS:
            name, modern = self._name, plan.call.era is Era.MODERN
            return lambda result: filter_result(
                result, method=method, upstream=name, lists=lists, modern=modern
            )
        return None

    async def _response_headers(self, plan: ForwardPlan, response: aiohttp.ClientResponse) -> Headers:
        out: list[tuple[bytes, bytes]] = []
        for key, value in response.raw_headers:
            if key.decode("latin-1").lower() in _RESPONSE_HEADERS:
                out.append((key.lower(), value))
        upstream_session = response.headers.get("mcp-session-id")
        if upstream_session is not None and plan.call.method == "initialize" and plan.session is None:
            record = await self._sessions.create(
                endpoint=plan.call.endpoint,
                subject=plan.principal.subject,
                protocol_version=str(plan.call.params.get("protocolVersion", "")),
                mode="passthrough",
                upstream_session_id=upstream_session,
                client_capabilities=plan.call.params.get("capabilities") or {},
                client_info=plan.call.params.get("clientInfo") or {},
            )
            out.append((b"mcp-session-id", record.session_id.encode()))
        elif plan.session is not None:
            out.append((b"mcp-session-id", plan.session.session_id.encode()))
        return tuple(out)
