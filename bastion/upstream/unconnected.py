"""Answers for a user who must (re)connect the account an upstream needs before a call can go
through: never connected, or a step-up (the upstream wants scopes the user's token lacks).

Until then Bastion answers ``initialize``, ``server/discover``, lists and ``ping`` itself, and a
call that needs the upstream gets the connect request in the client's era (URL elicitation,
-32042, or a tool error with the link); see :mod:`.connect_gate`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from bastion.core.credentials import Credentials
from bastion.core.errors import BastionError, ConnectionRequired, UpstreamRejectedCredentials
from bastion.core.records import Era, InboundCall, MessageKind, Principal
from bastion.core.replies import EmptyReply, MessageReply, Reply
from bastion.upstream.connect_gate import ASKING_METHODS, ConnectGate, modern_capabilities
from bastion.upstream.eras import negotiated_version
from bastion.upstream.extensions import with_extensions
from bastion.upstream.registry import UpstreamEntry
from bastion.upstream.relay import RelaySession, single
from bastion.upstream.sessions import SessionManager

JsonObject = dict[str, Any]


def _raise(err: BastionError) -> Reply:
    raise err


class Unconnected:
    def __init__(
        self,
        gate: ConnectGate,
        sessions: SessionManager,
        relays: dict[str, RelaySession],
        extensions: JsonObject,
        close_relay: Callable[[str], Awaitable[None]],
    ) -> None:
        self.gate = gate
        self.sessions = sessions
        self.relays = relays
        self.extensions = extensions
        self._close_relay = close_relay

    async def step_up(
        self, entry: UpstreamEntry, credentials: Credentials, err: UpstreamRejectedCredentials
    ) -> ConnectionRequired | None:
        """The upstream refused the user's credential: forget it (a 401: the next call renews
        it), or the connect request that would get the scopes a 403 asked for (None: none would)."""
        if not err.wanted_scopes:
            credentials.refused(entry.name)
            return None
        return await credentials.more_scopes(entry.name, err.wanted_scopes)

    def ask_in_flight(
        self, call: InboundCall, principal: Principal, err: ConnectionRequired, capabilities: object
    ) -> JsonObject:
        """A step-up found while a bridged call was under way: the connect request as the call's
        answer (a list cannot ask: its error carries the link)."""
        if call.method not in ASKING_METHODS:
            raise err
        return self.gate.ask_message(call, principal, err, capabilities=capabilities)

    async def answer(
        self,
        entry: UpstreamEntry,
        call: InboundCall,
        principal: Principal,
        err: ConnectionRequired,
        declined: bool,
    ) -> Reply:
        gate = self.gate
        if call.kind is not MessageKind.REQUEST and call.http_method == "POST":
            return EmptyReply(202, upstream=entry.name)
        if err.scopes and call.method not in ASKING_METHODS:
            raise err  # a step-up on a list: the client cannot ask the user; the message has the link
        if call.era is Era.MODERN:
            if call.method == "server/discover":
                result = with_extensions(gate.pending_discover(err, entry.name), self.extensions)
                return MessageReply(
                    messages=single({"jsonrpc": "2.0", "id": call.request_id, "result": result}),
                    upstream=entry.name,
                )
            if call.method in ASKING_METHODS:
                return gate.ask(
                    call, principal, err, capabilities=modern_capabilities(call), declined=declined
                )
            return gate.unconnected(call, err) or _raise(err)
        if call.session_id is None:
            if call.http_method == "POST" and call.method == "initialize":
                return await self._pending_initialize(entry, call, principal, err)
            if call.method in ASKING_METHODS:  # a stateless upstream: no capabilities known, a link
                return gate.ask(call, principal, err, capabilities=None)
            raise err
        record = await self.sessions.resolve(call.session_id, call.endpoint, principal.subject)
        relay = self.relays.get(record.session_id)
        if relay is not None and call.http_method == "GET":
            return relay.open_stream()
        if relay is not None and call.http_method == "DELETE":
            await self._close_relay(relay.session_id)
            return EmptyReply(200, upstream=entry.name)
        if call.method in ASKING_METHODS:
            reply = gate.ask(call, principal, err, capabilities=record.client_capabilities)
            if relay is not None:
                gate.watch(relay, err)
            return reply
        return gate.unconnected(call, err) or _raise(err)

    async def _pending_initialize(
        self, entry: UpstreamEntry, call: InboundCall, principal: Principal, err: ConnectionRequired
    ) -> Reply:
        """A relay session with no upstream link yet: it opens on the first call after the user
        connected, with the client's own initialize parameters."""
        params = call.params
        version = negotiated_version(params.get("protocolVersion"))
        record = await self.sessions.create_relay(entry.name, principal.subject, params, version)
        self.relays[record.session_id] = RelaySession(record)
        result = with_extensions(self.gate.pending_initialize(version, err, entry.name), self.extensions)
        return MessageReply(
            messages=single({"jsonrpc": "2.0", "id": call.request_id, "result": result}),
            headers=((b"mcp-session-id", record.session_id.encode()),),
            upstream=entry.name,
        )


__all__ = ["Unconnected"]
