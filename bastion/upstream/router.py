"""The upstream stage's entry: decide, per endpoint and era, how a call reaches its upstream.

| client era | upstream                 | path                                              |
|------------|--------------------------|---------------------------------------------------|
| legacy     | HTTP speaking legacy     | passthrough (bytes), Bastion's session id mapped  |
| modern     | HTTP speaking modern     | passthrough (bytes)                               |
| legacy     | HTTP modern-only         | relay session over a ModernLink (bridged)         |
| modern     | HTTP legacy-only         | shared LegacyChannel (bridged)                    |
| legacy     | stdio                    | relay session; own process per session by default |
| modern     | stdio                    | shared process (bridged)                          |
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, replace
from typing import Any

from mcp_types import CLIENT_CAPABILITIES_META_KEY

from bastion.config.model import Settings
from bastion.core.credentials import CLIENT_SUPPLIED, Credentials
from bastion.core.eras_errors import legacy_only_rejection, modern_only_rejection
from bastion.core.errors import (
    BastionError,
    ConnectionRequired,
    HttpMethodNotAllowed,
    InvalidRequest,
    SessionNotFound,
    SessionRequired,
    SuppliedTokenRejected,
    UnknownEndpoint,
    UpstreamRejectedCredentials,
)
from bastion.core.records import (
    Decision,
    Era,
    InboundCall,
    ListFilter,
    MessageKind,
    Principal,
    UpstreamCredential,
)
from bastion.core.replies import EmptyReply, MessageReply, Reply
from bastion.upstream.aggregate import Aggregator
from bastion.upstream.connect_gate import ConnectGate, modern_capabilities
from bastion.upstream.eras import (
    discover_from_initialize,
    initialize_from_discover,
    negotiated_version,
    strip_envelope,
    to_modern_response,
)
from bastion.upstream.extensions import server_extensions, with_extensions
from bastion.upstream.lists import AnnotatedLists, ToolAnnotations, filter_response
from bastion.upstream.mrtr import MrtrBridge
from bastion.upstream.passthrough import ForwardPlan, Passthrough
from bastion.upstream.registry import UpstreamEntry
from bastion.upstream.relay import RelaySession, forward_cancel, run_on_route, single
from bastion.upstream.routes import CallRoute
from bastion.upstream.sessions import SessionManager
from bastion.upstream.unconnected import Unconnected

JsonObject = dict[str, Any]
log = logging.getLogger("bastion.upstream")


def _rejected(
    err: UpstreamRejectedCredentials, credential: UpstreamCredential, call: InboundCall
) -> BastionError:
    """The upstream refused what Bastion sent: a token the client supplied (#234 mode) is the
    client's problem (-32003 naming the tool); anything else stays Bastion's (-32012)."""
    if credential.mode == CLIENT_SUPPLIED:
        return SuppliedTokenRejected(call.name, err.message)
    return err


@dataclass(frozen=True, slots=True)
class _Target:
    """Where one call goes, and with whose credential."""

    entry: UpstreamEntry
    principal: Principal
    credential: UpstreamCredential
    credentials: Credentials


class UpstreamStage:
    def __init__(
        self, settings: Settings, sessions: SessionManager, connect: ConnectGate | None = None
    ) -> None:
        self.sessions = sessions
        self.connect = connect
        self.extensions = server_extensions(settings)  # declared in every initialize/discover result
        self.annotations = ToolAnnotations(settings)
        self.entries = {u.name: UpstreamEntry(u) for u in settings.upstreams}
        self.passthrough = {
            name: Passthrough(entry.http, sessions, self.extensions)
            for name, entry in self.entries.items()
            if entry.http is not None
        }
        self.relays: dict[str, RelaySession] = {}
        self.mrtr = MrtrBridge()
        self.aggregate = (
            Aggregator(self.entries, sessions, self.relays, self.mrtr, self.extensions, connect=connect)
            if settings.aggregate.enabled
            else None
        )
        self.unconnected = (
            Unconnected(connect, sessions, self.relays, self.extensions, self.close_relay)
            if connect is not None
            else None
        )
        self._background: set[asyncio.Task[None]] = set()
        sessions.on_expired.append(self._expired)

    def known(self, endpoint: str | None) -> bool:
        return self.aggregate is not None if endpoint is None else endpoint in self.entries

    async def dispatch(
        self, call: InboundCall, principal: Principal, decision: Decision, credentials: Credentials
    ) -> Reply:
        if call.endpoint is None:
            if self.aggregate is None:
                raise UnknownEndpoint("No aggregate endpoint: it is disabled in the configuration")
            lists = self._lists(None, decision)
            if lists is not decision.lists:
                decision = replace(decision, lists=lists)
            return await self.aggregate.dispatch(call, principal, decision, credentials)
        entry = self.entries.get(call.endpoint)
        if entry is None:
            raise UnknownEndpoint(f"No upstream named '{call.endpoint}'")
        declined = False
        if self.connect is not None and self.connect.is_retry(call):  # answers our connect request
            call, declined = self.connect.resume(call, principal, entry.name)
        try:
            credential = await credentials.for_upstream(entry.name)
        except ConnectionRequired as err:
            if self.unconnected is None:
                raise
            return await self.unconnected.answer(entry, call, principal, err, declined)
        target = _Target(entry, principal, credential, credentials)
        try:
            return await self._to_entry(target, call, self._lists(entry.name, decision))
        except UpstreamRejectedCredentials as err:
            if self.unconnected is None:
                credentials.refused(entry.name)
                raise _rejected(err, credential, call) from None
            ask = await self.unconnected.step_up(entry, credentials, err)  # the user may grant more
            if ask is None:
                raise _rejected(err, credential, call) from None
            return await self.unconnected.answer(entry, call, principal, ask, declined)

    async def _refused_in_flight(
        self, target: _Target, call: InboundCall, err: UpstreamRejectedCredentials, capabilities: object
    ) -> JsonObject:
        """A bridged call the upstream refused: a step-up asks the user, anything else fails."""
        if self.unconnected is not None:
            ask = await self.unconnected.step_up(target.entry, target.credentials, err)
            if ask is not None:
                return self.unconnected.ask_in_flight(call, target.principal, ask, capabilities)
        else:
            target.credentials.refused(target.entry.name)
        raise _rejected(err, target.credential, call) from None

    def _lists(self, upstream: str | None, decision: Decision) -> ListFilter | None:
        """Policy's list filter, with the #234 tool annotations when this endpoint has them."""
        if not self.annotations.applies(upstream):
            return decision.lists
        return AnnotatedLists(decision.lists, self.annotations)

    async def _to_entry(self, target: _Target, call: InboundCall, lists: ListFilter | None) -> Reply:
        eras = target.entry.config.client_eras
        if call.era is Era.MODERN:
            if "modern" not in eras:
                raise legacy_only_rejection(call.protocol_version)
            return await self._modern(target, call, lists)
        if "legacy" not in eras and call.session_id is None:
            raise modern_only_rejection(call.params.get("protocolVersion"))
        return await self._legacy(target, call, lists)

    # -- legacy era ------------------------------------------------------------------------------

    async def _legacy(self, target: _Target, call: InboundCall, lists: ListFilter | None) -> Reply:
        entry, principal, credential = target.entry, target.principal, target.credential
        if call.session_id is not None:
            record = await self.sessions.resolve(call.session_id, call.endpoint, principal.subject)
            if record.mode == "passthrough":
                return await self.passthrough[entry.name].forward(
                    ForwardPlan(call, principal, credential, record, lists)
                )
            relay = self.relays.get(record.session_id)
            if relay is None:  # held by a replica that is gone, or by this process before a restart
                await self.sessions.drop(record.session_id)
                raise SessionNotFound("Session not found")
            return await self._relay(target, relay, record.client_capabilities, call, lists)
        eras = await entry.eras(credential)
        if entry.http is not None and eras.legacy:
            return await self.passthrough[entry.name].forward(
                ForwardPlan(call, principal, credential, None, lists)
            )
        if call.http_method == "POST" and call.method == "initialize":
            return await self._relay_initialize(entry, call, principal, credential)
        raise SessionRequired("Bad Request: Mcp-Session-Id header is required")

    async def _relay_initialize(
        self, entry: UpstreamEntry, call: InboundCall, principal: Principal, credential: UpstreamCredential
    ) -> Reply:
        params = call.params
        version = negotiated_version(params.get("protocolVersion"))
        record = await self.sessions.create_relay(entry.name, principal.subject, params, version)
        relay = RelaySession(record)
        try:
            link = await entry.session_link(
                record.session_id,
                {**params, "protocolVersion": version},
                credential,
                sink=relay.sink,
                asker=relay.ask,
            )
        except BaseException:
            await self.sessions.drop(record.session_id)
            raise
        self.relays[record.session_id] = relay
        result = with_extensions(self._initialize_result(link, entry, version), self.extensions)
        response = {"jsonrpc": "2.0", "id": call.request_id, "result": result}
        return MessageReply(
            messages=single(response),
            headers=((b"mcp-session-id", record.session_id.encode()),),
            upstream=entry.name,
        )

    @staticmethod
    def _initialize_result(link: Any, entry: UpstreamEntry, version: str) -> JsonObject:
        if link.initialize_result is not None:
            return {**link.initialize_result, "protocolVersion": version}
        return initialize_from_discover(entry.discover_result or {}, version)

    async def _relay(
        self,
        target: _Target,
        relay: RelaySession,
        capabilities: object,
        call: InboundCall,
        lists: ListFilter | None,
    ) -> Reply:
        entry, credential = target.entry, target.credential
        if call.http_method == "GET":
            return relay.open_stream()
        if call.http_method == "DELETE":
            await self.close_relay(relay.session_id)
            return EmptyReply(200, upstream=entry.name)
        link = await entry.session_link(
            relay.session_id, relay.init_params, credential, sink=relay.sink, asker=relay.ask
        )
        message = call.message
        if call.kind is MessageKind.RESPONSE:
            relay.broker.resolve(message)
            return EmptyReply(202, upstream=entry.name)
        if call.kind is MessageKind.NOTIFICATION:
            if call.method == "notifications/cancelled":
                await forward_cancel(relay, message)
            elif call.method != "notifications/initialized":
                await link.notify(message)
            return EmptyReply(202, upstream=entry.name)
        if call.method == "initialize":
            raise InvalidRequest("Invalid Request: the session is already initialized")
        route = CallRoute(relay.broker)
        relay.client_ids[call.request_id] = (link, route)

        def done(_response: JsonObject) -> None:
            relay.client_ids.pop(call.request_id, None)

        async def answer() -> JsonObject:
            try:
                response = await link.request(message, route)
            except UpstreamRejectedCredentials as err:
                return await self._refused_in_flight(target, call, err, capabilities)
            return filter_response(
                response, method=call.method, upstream=entry.name, lists=lists, modern=False
            )

        return run_on_route(route, call.request_id, answer, upstream=entry.name, on_done=done)

    async def close_relay(self, session_id: str) -> None:
        relay = self.relays.pop(session_id, None)
        if relay is not None:
            relay.close()
        for entry in self.entries.values():
            await entry.close_session(session_id)
        await self.sessions.drop(session_id)

    def _expired(self, session_id: str) -> None:
        relay = self.relays.pop(session_id, None)
        if relay is not None:
            relay.close()
            task = asyncio.ensure_future(self._close_links(session_id))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _close_links(self, session_id: str) -> None:
        for entry in self.entries.values():
            await entry.close_session(session_id)

    # -- modern era ------------------------------------------------------------------------------

    async def _modern(self, target: _Target, call: InboundCall, lists: ListFilter | None) -> Reply:
        entry, principal, credential = target.entry, target.principal, target.credential
        if call.http_method != "POST":
            raise HttpMethodNotAllowed("Method Not Allowed: the 2026-07-28 transport uses POST only")
        eras = await entry.eras(credential)
        if entry.http is not None and eras.modern:
            return await self.passthrough[entry.name].forward(
                ForwardPlan(call, principal, credential, None, lists)
            )
        if call.kind is not MessageKind.REQUEST:
            return EmptyReply(202, upstream=entry.name)  # no client→server notifications on this wire
        if self.mrtr.is_retry(call):
            return self.mrtr.resume(call, principal, entry.name)
        meta = call.params.get("_meta")
        caps = meta.get(CLIENT_CAPABILITIES_META_KEY) if isinstance(meta, dict) else None
        channel = await entry.shared_channel(credential, caps if isinstance(caps, dict) else None)
        if call.method == "server/discover":
            assert channel.initialize_result is not None
            response = {
                "jsonrpc": "2.0",
                "id": call.request_id,
                "result": with_extensions(
                    discover_from_initialize(channel.initialize_result), self.extensions
                ),
            }
            return MessageReply(messages=single(response), upstream=entry.name)
        message = strip_envelope(call.message)
        method = call.method

        async def work(route: CallRoute) -> JsonObject:
            try:
                answered = await channel.request(message, route)
            except UpstreamRejectedCredentials as err:
                return await self._refused_in_flight(target, call, err, modern_capabilities(call))
            response = to_modern_response(method, answered)
            return filter_response(response, method=method, upstream=entry.name, lists=lists, modern=True)

        return self.mrtr.start(call, principal, work, entry.name)

    async def reap_idle(self) -> int:
        self.mrtr.sweep()
        reaped = 0
        for entry in self.entries.values():
            reaped += await entry.reap_idle()
        return reaped

    async def close(self) -> None:
        self.mrtr.close()
        if self.connect is not None:
            self.connect.close()
        for session_id in list(self.relays):
            relay = self.relays.pop(session_id)
            relay.close()
        for entry in self.entries.values():
            await entry.close()
