"""The /mcp handler. The only place that knows the order of the stages:

    edge → authn → policy → vault → upstream → (reply streams back through edge)
                                                  audit receives one record, always

Each stage is a small object passed in by app.py; errors are typed and rendered by
bastion.edge.render; nothing here formats bytes itself.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import MutableMapping
from typing import Any

import orjson

from bastion.audit import events
from bastion.core.credentials import Credentials
from bastion.core.errors import BastionError, ClientError, PolicyDenied, UnknownEndpoint
from bastion.core.records import AuditRecord, Decision, Era, InboundCall, MessageKind, Principal
from bastion.core.stages import AuditSink, Authenticator, CredentialResolver, Dispatcher, PolicyEngine
from bastion.edge.guards import HostGuard
from bastion.edge.inbound import Receive, read_call
from bastion.edge.render import Send, send_error
from bastion.edge.reply import DisconnectWatch, Sent, send_reply
from bastion.edge.supplied import take_supplied_token
from bastion.upstream.sessions import session_tag

log = logging.getLogger("bastion.pipeline")
WATCH_DELAY = 0.05  # seconds before a 2026-07-28 request starts watching for its client leaving
_PREFIX = "/mcp"


def endpoint_of(path: str) -> tuple[bool, str | None]:
    """``/mcp`` → (True, None) (aggregate), ``/mcp/<name>`` → (True, name), else (False, None)."""
    path = path.rstrip("/") or "/"
    if path == _PREFIX:
        return True, None
    if path.startswith(_PREFIX + "/"):
        name = path[len(_PREFIX) + 1 :]
        if name and "/" not in name:
            return True, name
    return False, None


def _success_event(call: InboundCall) -> str:
    if call.http_method == "GET":
        return events.STREAM_OPENED
    if call.http_method == "DELETE":
        return events.SESSION_DELETED
    if call.kind is MessageKind.NOTIFICATION:
        return events.NOTIFICATION_FORWARDED
    if call.kind is MessageKind.RESPONSE:
        return events.RESPONSE_FORWARDED
    if call.method == "initialize":
        return events.SESSION_CREATED
    return events.CALL_FORWARDED


def _authorization(scope: MutableMapping[str, Any]) -> str | None:
    for key, value in scope["headers"]:
        if key == b"authorization":
            return str(value.decode("latin-1"))
    return None


class McpPipeline:
    def __init__(
        self,
        *,
        guard: HostGuard,
        max_body: int,
        authn: Authenticator,
        policy: PolicyEngine,
        vault: CredentialResolver,
        upstream: Dispatcher,
        audit: AuditSink,
    ) -> None:
        self._guard = guard
        self._max_body = max_body
        self._authn = authn
        self._policy = policy
        self._vault = vault
        self._upstream = upstream
        self._audit = audit

    async def _respond(
        self,
        call: InboundCall,
        principal: Principal,
        decision: Decision,
        credentials: Credentials,
        *,
        receive: Receive,
        send: Send,
    ) -> Sent:
        if call.era is not Era.MODERN or call.kind is not MessageKind.REQUEST:
            return await send_reply(
                send, receive, call, await self._upstream.dispatch(call, principal, decision, credentials)
            )
        # 2026-07-28: a client that closes the stream cancels the request, also while the
        # upstream has not answered yet (the upstream connection closes, which is its cancellation)
        current = asyncio.current_task()
        assert current is not None
        watch = DisconnectWatch(receive, current, delay=WATCH_DELAY)
        try:
            reply = await self._upstream.dispatch(call, principal, decision, credentials)
            return await send_reply(send, receive, call, reply, watch)
        except asyncio.CancelledError:
            if watch.fired:
                current.uncancel()
                return Sent(status=499)
            raise
        finally:
            await watch.stop()

    async def __call__(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        is_mcp, endpoint = endpoint_of(scope["path"])
        call: InboundCall | None = None
        principal: Principal | None = None
        event = events.CALL_FORWARDED
        status = 0
        error_code: int | None = None
        upstream = endpoint
        detail = ""
        try:
            if not is_mcp or not self._upstream.known(endpoint):
                raise UnknownEndpoint(f"No MCP endpoint at {scope['path'][:200]}")
            call = await read_call(
                scope, receive, endpoint=endpoint, guard=self._guard, max_body=self._max_body
            )
            principal = self._authn.authenticate(call, _authorization(scope))
            call, supplied = take_supplied_token(call)  # before policy, the vault or any upstream
            decision = self._policy.decide(principal, call)
            if decision.rule is not None:
                detail = f"policy: {decision.rule}"  # every decision names the rule that made it
            if decision.canonical_body:
                call = call._replace(body=orjson.dumps(call.message))
            if not decision.allowed:
                if decision.step_up:
                    raise self._authn.insufficient_scope(call, decision.step_up, decision.reason)
                raise PolicyDenied(decision.reason or "Denied by policy")
            tool = call.name if call.method == "tools/call" else None
            credentials = self._vault.bind(principal, decision, supplied, tool)
            sent = await self._respond(call, principal, decision, credentials, receive=receive, send=send)
            status, error_code = sent.status, sent.error_code
            event = events.CALL_CANCELLED if status == 499 else _success_event(call)
            if sent.failure is not None:
                event, error_code = sent.failure.event, sent.failure.code
                detail = f"{detail}; {sent.failure.message}" if detail else sent.failure.message
        except BastionError as err:
            era = call.era if call is not None else None
            request_id = call.request_id if call is not None else err.request_id
            status = await send_error(send, err, request_id, era)
            event, error_code = err.event, err.code
            detail = f"{detail}; {err.message}" if detail else err.message  # keeps the deciding rule
            level = logging.INFO if isinstance(err, ClientError) else logging.WARNING
            log.log(
                level,
                "%s %s: %s%s",
                scope["method"],
                scope["path"][:200],
                err.message,
                f" ({err.detail})" if err.detail else "",
            )
        except Exception:
            # never a stack trace to the client: a JSON-RPC internal error, and the trace in our log
            log.exception("internal error on %s %s", scope["method"], scope["path"][:200])
            internal = BastionError("Internal error")
            status = await send_error(
                send, internal, call.request_id if call else None, call.era if call else None
            )
            event, error_code, detail = events.CALL_FAILED, internal.code, "internal error"
        finally:
            self._audit.record(
                AuditRecord(
                    ts=time.time(),
                    event=event,
                    trace_id=call.trace_id if call is not None else "-",
                    endpoint=endpoint,
                    upstream=upstream,
                    era=call.era.value if call is not None else None,
                    method=call.method if call is not None else scope.get("method"),
                    name=call.name if call is not None else None,
                    request_id=str(call.request_id)
                    if call is not None and call.request_id is not None
                    else None,
                    status=status,
                    error_code=error_code,
                    latency_ms=round((time.perf_counter() - started) * 1000, 3),
                    subject=principal.subject if principal is not None else None,
                    client_id=principal.client_id if principal is not None else None,
                    session=session_tag(call.session_id) if call is not None else None,
                    detail=detail[:500],
                )
            )


__all__ = ["McpPipeline", "endpoint_of"]
