"""The aggregate endpoint ``/mcp``: every upstream's tools, resources and prompts behind one
MCP server, named by the scheme in :mod:`bastion.upstream.naming`.

Bastion terminates the protocol here: it answers initialize/discover itself (advertising
every list capability; upstream links open lazily on first use), merges list results from
all upstreams (all pages, concurrently; an unreachable upstream is left out and logged), and
routes calls back by name.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from mcp_types import CLIENT_CAPABILITIES_META_KEY, SERVER_INFO_META_KEY
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from bastion.core.credentials import CLIENT_SUPPLIED, Credentials
from bastion.core.errors import (
    BastionError,
    ConnectionRequired,
    HttpMethodNotAllowed,
    InvalidParams,
    InvalidRequest,
    MethodNotFound,
    SessionNotFound,
    SessionRequired,
    SuppliedTokenRejected,
    UpstreamRejectedCredentials,
)
from bastion.core.records import Decision, Era, InboundCall, ListFilter, MessageKind, Principal
from bastion.core.replies import EmptyReply, MessageReply, Reply
from bastion.upstream import naming
from bastion.upstream.connect_gate import ASKING_METHODS, ConnectGate
from bastion.upstream.eras import BASTION_INFO, negotiated_version, strip_envelope, to_modern_response
from bastion.upstream.extensions import with_extensions
from bastion.upstream.mrtr import MrtrBridge
from bastion.upstream.registry import Link, UpstreamEntry
from bastion.upstream.relay import RelaySession, forward_cancel, run_on_route, single
from bastion.upstream.routes import CallRoute
from bastion.upstream.sessions import SessionManager

JsonObject = dict[str, Any]
LinkFor = Callable[[UpstreamEntry], Awaitable[Link]]
Ask = Callable[[ConnectionRequired], JsonObject]  # the answer when the user must connect first
AGGREGATE = "*"  # what a retry's requestState is bound to on this endpoint
log = logging.getLogger("bastion.upstream")

CAPABILITIES: JsonObject = {
    "tools": {"listChanged": True},
    "resources": {"subscribe": True, "listChanged": True},
    "prompts": {"listChanged": True},
    "logging": {},
    "completions": {},
}
INSTRUCTIONS = (
    "Bastion aggregate endpoint: tools and prompts are named <upstream>__<name>, "
    "resource URIs <upstream>+<uri>."
)
_LISTS = {
    "tools/list": "tools",
    "prompts/list": "prompts",
    "resources/list": "resources",
    "resources/templates/list": "resourceTemplates",
}
_MAX_PAGES = 100


class Aggregator:
    def __init__(
        self,
        entries: dict[str, UpstreamEntry],
        sessions: SessionManager,
        relays: dict[str, RelaySession],
        mrtr: MrtrBridge,
        extensions: JsonObject | None = None,
        *,
        connect: ConnectGate | None = None,
    ) -> None:
        self._mrtr = mrtr
        self._connect = connect
        self._extensions = extensions or {}  # Bastion's own, declared in initialize/discover results
        self._entries = entries
        self._sessions = sessions
        self._relays = relays

    async def dispatch(
        self, call: InboundCall, principal: Principal, decision: Decision, credentials: Credentials
    ) -> Reply:
        if call.era is Era.MODERN:
            return await self._modern(call, principal, credentials, decision.lists)
        if call.session_id is None:
            if call.http_method == "POST" and call.method == "initialize":
                return await self._initialize(call, principal)
            raise SessionRequired("Bad Request: Mcp-Session-Id header is required")
        record = await self._sessions.resolve(call.session_id, None, principal.subject)
        relay = self._relays.get(record.session_id)
        if relay is None:
            await self._sessions.drop(record.session_id)
            raise SessionNotFound("Session not found")
        return await self._legacy(relay, call, principal, credentials, decision.lists)

    # -- legacy ----------------------------------------------------------------------------------

    async def _initialize(self, call: InboundCall, principal: Principal) -> Reply:
        params = call.params
        version = negotiated_version(params.get("protocolVersion"))
        record = await self._sessions.create(
            endpoint=None,
            subject=principal.subject,
            protocol_version=version,
            mode="relay",
            client_capabilities=params.get("capabilities") or {},
            client_info=params.get("clientInfo") or {},
        )
        self._relays[record.session_id] = RelaySession(record)
        result = with_extensions(
            {
                "protocolVersion": version,
                "capabilities": CAPABILITIES,
                "serverInfo": BASTION_INFO,
                "instructions": INSTRUCTIONS,
            },
            self._extensions,
        )
        response = {"jsonrpc": "2.0", "id": call.request_id, "result": result}
        return MessageReply(
            messages=single(response), headers=((b"mcp-session-id", record.session_id.encode()),)
        )

    async def _legacy(
        self,
        relay: RelaySession,
        call: InboundCall,
        principal: Principal,
        credentials: Credentials,
        lists: ListFilter | None,
    ) -> Reply:
        if call.http_method == "GET":
            return relay.open_stream()
        if call.http_method == "DELETE":
            relay.close()
            self._relays.pop(relay.session_id, None)
            for entry in self._entries.values():
                await entry.close_session(relay.session_id)
            await self._sessions.drop(relay.session_id)
            return EmptyReply(200)

        async def link_for(entry: UpstreamEntry) -> Link:
            name = entry.name

            def sink(message: JsonObject) -> None:
                relay.sink(naming.qualify_notification(name, message))

            credential = await credentials.for_upstream(name)
            return await entry.session_link(
                relay.session_id, relay.init_params, credential, sink=sink, asker=relay.ask
            )

        if call.kind is MessageKind.RESPONSE:
            relay.broker.resolve(call.message)
            return EmptyReply(202)
        if call.kind is MessageKind.NOTIFICATION:
            if call.method == "notifications/cancelled":
                await forward_cancel(relay, call.message)
            elif call.method == "notifications/roots/list_changed":
                await self._broadcast(call.message, link_for)
            return EmptyReply(202)
        if call.method == "initialize":
            raise InvalidRequest("Invalid Request: the session is already initialized")
        route = CallRoute(relay.broker)
        gate = self._connect
        ask: Ask | None = None
        if gate is not None:

            def ask(err: ConnectionRequired) -> JsonObject:
                assert gate is not None
                gate.watch(relay, err)
                capabilities = relay.record.client_capabilities
                return gate.ask_message(call, principal, err, capabilities=capabilities, endpoint=AGGREGATE)

        return self._run(call, route, link_for, era=Era.LEGACY, relay=relay, lists=lists, ask=ask)

    async def _broadcast(self, message: JsonObject, link_for: LinkFor) -> None:
        for entry in self._entries.values():
            try:
                link = await link_for(entry)
                await link.notify(message)
            except BastionError as err:
                log.info("aggregate: %s not notified: %s", entry.name, err.message)

    # -- modern ----------------------------------------------------------------------------------

    async def _modern(
        self, call: InboundCall, principal: Principal, credentials: Credentials, lists: ListFilter | None
    ) -> Reply:
        if call.http_method != "POST":
            raise HttpMethodNotAllowed("Method Not Allowed: the 2026-07-28 transport uses POST only")
        if call.kind is not MessageKind.REQUEST:
            return EmptyReply(202)
        if call.method == "server/discover":
            result = {
                "supportedVersions": list(MODERN_PROTOCOL_VERSIONS),
                "capabilities": CAPABILITIES,
                "instructions": INSTRUCTIONS,
                "resultType": "complete",
                "cacheScope": "public",
                "ttlMs": 0,
                "_meta": {SERVER_INFO_META_KEY: BASTION_INFO},
            }
            result = with_extensions(result, self._extensions)
            return MessageReply(messages=single({"jsonrpc": "2.0", "id": call.request_id, "result": result}))
        if self._mrtr.holds(call):  # a retry answering a legacy upstream's question
            return self._mrtr.resume(call, principal, "")
        gate, declined = self._connect, False
        if gate is not None and gate.is_retry(call):  # a retry answering Bastion's connect request
            call, declined = gate.resume(call, principal, AGGREGATE)
        meta = call.params.get("_meta") or {}
        caps = meta.get(CLIENT_CAPABILITIES_META_KEY) if isinstance(meta, dict) else None
        ask: Ask | None = None
        if gate is not None:
            asked = call

            def ask(err: ConnectionRequired) -> JsonObject:
                assert gate is not None
                return gate.ask_message(
                    asked, principal, err, capabilities=caps, declined=declined, endpoint=AGGREGATE
                )

        async def link_for(entry: UpstreamEntry) -> Link:
            credential = await credentials.for_upstream(entry.name)
            eras = await entry.eras(credential)
            if entry.http is not None and eras.modern:  # its own input_required goes to the client as is
                return entry.modern_link(meta, credential, resolve_input=False)
            return await entry.shared_channel(credential, caps if isinstance(caps, dict) else None)

        method = call.method or ""
        message = strip_envelope(call.message)

        async def work(route: CallRoute) -> JsonObject:
            return to_modern_response(
                method,
                await self._handle(method, message, route, link_for, era=Era.MODERN, lists=lists, ask=ask),
            )

        return self._mrtr.start(call, principal, work, "")

    # -- shared ------------------------------------------------------------------------------------

    def _run(
        self,
        call: InboundCall,
        route: CallRoute,
        link_for: LinkFor,
        *,
        era: Era,
        relay: RelaySession | None,
        lists: ListFilter | None,
        ask: Ask | None = None,
    ) -> Reply:
        method = call.method or ""
        message = strip_envelope(call.message) if era is Era.MODERN else call.message

        async def work() -> JsonObject:
            response = await self._handle(method, message, route, link_for, era=era, lists=lists, ask=ask)
            return to_modern_response(method, response) if era is Era.MODERN else response

        if relay is None:
            return run_on_route(route, call.request_id, work)
        relay.client_ids[call.request_id] = (None, route)

        def done(_response: JsonObject) -> None:
            relay.client_ids.pop(call.request_id, None)

        return run_on_route(route, call.request_id, work, on_done=done)

    async def _handle(
        self,
        method: str,
        message: JsonObject,
        route: CallRoute,
        link_for: LinkFor,
        *,
        era: Era,
        lists: ListFilter | None,
        ask: Ask | None = None,
    ) -> JsonObject:
        request_id = message.get("id")
        params = message.get("params") if isinstance(message.get("params"), dict) else {}
        assert isinstance(params, dict)
        if method == "ping":
            return {"jsonrpc": "2.0", "id": request_id, "result": {}}
        if method in _LISTS:
            return await self._merged_list(method, message, route, link_for, lists)
        if method == "logging/setLevel":
            await asyncio.gather(*(self._try(e, message, route, link_for) for e in self._entries.values()))
            return {"jsonrpc": "2.0", "id": request_id, "result": {}}
        entry, rewritten = self._target(method, params)
        try:
            link = await link_for(entry)
        except ConnectionRequired as err:
            if ask is None or method not in ASKING_METHODS:
                raise
            return ask(err)
        try:
            response = await link.request({**message, "params": rewritten}, route)
        except UpstreamRejectedCredentials as err:
            if entry.config.auth.type == CLIENT_SUPPLIED:  # #234 mode: the client's token was refused
                raise SuppliedTokenRejected(params.get("name"), err.message) from None
            raise
        if method == "resources/read" and isinstance(response.get("result"), dict):
            response = {**response, "result": naming.qualify_contents(entry.name, response["result"])}
        return response

    def _entry(self, name: str | None) -> UpstreamEntry:
        entry = self._entries.get(name or "")
        if entry is None:
            raise InvalidParams(f"Unknown upstream '{name}' in the aggregate name")
        return entry

    def _target(self, method: str, params: JsonObject) -> tuple[UpstreamEntry, JsonObject]:
        if method in ("tools/call", "prompts/get"):
            split = naming.split_tool_name(str(params.get("name", "")))
            if split is None:
                raise InvalidParams("Invalid params: names here are <upstream>__<name>")
            return self._entry(split[0]), {**params, "name": split[1]}
        if method in ("resources/read", "resources/subscribe", "resources/unsubscribe"):
            split = naming.split_resource_uri(str(params.get("uri", "")))
            if split is None:
                raise InvalidParams("Invalid params: resource URIs here are <upstream>+<uri>")
            return self._entry(split[0]), {**params, "uri": split[1]}
        if method == "completion/complete":
            ref = params.get("ref") if isinstance(params.get("ref"), dict) else {}
            assert isinstance(ref, dict)
            if ref.get("type") == "ref/prompt":
                split = naming.split_tool_name(str(ref.get("name", "")))
                new_ref = {**ref, "name": split[1]} if split else ref
            else:
                split = naming.split_resource_uri(str(ref.get("uri", "")))
                new_ref = {**ref, "uri": split[1]} if split else ref
            if split is None:
                raise InvalidParams("Invalid params: completion ref does not name an upstream")
            return self._entry(split[0]), {**params, "ref": new_ref}
        raise MethodNotFound(f"Method not found: {method}")

    async def _try(
        self, entry: UpstreamEntry, message: JsonObject, route: CallRoute, link_for: LinkFor
    ) -> JsonObject | None:
        try:
            link = await link_for(entry)
            return await link.request(message, route)
        except BastionError as err:
            log.warning("aggregate: upstream %s left out: %s", entry.name, err.message)
            return None

    async def _merged_list(
        self, method: str, message: JsonObject, route: CallRoute, link_for: LinkFor, lists: ListFilter | None
    ) -> JsonObject:
        kind = _LISTS[method]

        async def collect(entry: UpstreamEntry) -> list[JsonObject]:
            items: list[JsonObject] = []
            params = {k: v for k, v in (message.get("params") or {}).items() if k != "cursor"}
            for _ in range(_MAX_PAGES):
                response = await self._try(entry, {**message, "params": params}, route, link_for)
                result = response.get("result") if response else None
                if not isinstance(result, dict):
                    break
                listed = [item for item in result.get(kind) or [] if isinstance(item, dict)]
                if lists is not None:  # policy decides per upstream, on the upstream's own names
                    listed = lists.visible(entry.name, kind, listed)
                items.extend(naming.qualify_items(entry.name, kind, listed))
                cursor = result.get("nextCursor")
                if not isinstance(cursor, str):
                    break
                params = {**params, "cursor": cursor}
            return items

        groups = await asyncio.gather(*(collect(e) for e in self._entries.values()))
        merged = [item for group in groups for item in group]
        return {"jsonrpc": "2.0", "id": message.get("id"), "result": {kind: merged}}


__all__ = ["Aggregator"]
