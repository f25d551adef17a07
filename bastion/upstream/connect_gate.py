"""A user who has not connected the account an upstream needs (``auth: user_oauth`` or
``user_api_key``) is asked to connect it, in the way the client's era and capabilities allow
(MCP elicitation, URL mode; requirements digest §7):

- 2026-07-28 clients that declared ``elicitation.url``: an ``input_required`` result whose
  ``inputRequests`` holds one ``elicitation/create`` in URL mode, and a ``requestState``. The
  retry (new id, same request, ``inputResponses``, the same ``requestState``) is checked here and
  goes on as the original request once the account is connected, or asks again;
- 2025-11-25 clients that declared it: JSON-RPC error ``-32042`` with ``data.elicitations``;
- any other client: a tool error (``isError``) whose text carries the link, or for prompts and
  resources a JSON-RPC error with the link in its message.

``requestState`` is not stored: it is a MAC-protected (HMAC-SHA256, a key derived from the
master key) statement of who asked, for which upstream, connection, method and parameters, and
until when. Any replica can check it; a state made for another user, request or upstream, or
altered, or expired, is refused. It says nothing about the connection itself: whether the user
is connected is read from the vault at every retry, so replaying it only asks again.

Until the user connects, Bastion answers the handshake and the lists itself, so the client can
start: ``initialize`` opens a relay session with no upstream link yet (the link opens, with the
user's credential, on the first call after they connected), ``server/discover`` says what a
gateway can, the lists are empty, ``ping`` answers.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from mcp_types import CLIENT_CAPABILITIES_META_KEY, SERVER_INFO_META_KEY
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from bastion.core.errors import URL_ELICITATION_REQUIRED, ConnectionRequired, InvalidParams
from bastion.core.records import Era, InboundCall, Principal
from bastion.core.replies import MessageReply, Reply
from bastion.upstream.eras import BASTION_INFO
from bastion.upstream.relay import RelaySession, single

JsonObject = dict[str, Any]
Completed = Callable[[str], Awaitable[bool]]  # elicitation id → the user finished connecting
log = logging.getLogger("bastion.upstream")
WATCH_INTERVAL_S = 2.0
PENDING_CAPABILITIES: JsonObject = {"tools": {"listChanged": True}}
STATE_PREFIX = "bastion-connect."
STATE_TTL_S = 15 * 60
ASKING_METHODS = frozenset({"tools/call", "prompts/get", "resources/read"})
EMPTY_LISTS = {
    "tools/list": "tools",
    "prompts/list": "prompts",
    "resources/list": "resources",
    "resources/templates/list": "resourceTemplates",
}


def url_elicitation_declared(capabilities: object) -> bool:
    """The client declared URL-mode elicitation (``elicitation: {url: {}}``); a bare
    ``elicitation: {}`` means form only."""
    if not isinstance(capabilities, dict):
        return False
    elicitation = capabilities.get("elicitation")
    return isinstance(elicitation, dict) and isinstance(elicitation.get("url"), dict)


def modern_capabilities(call: InboundCall) -> object:
    meta = call.params.get("_meta")
    return meta.get(CLIENT_CAPABILITIES_META_KEY) if isinstance(meta, dict) else None


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _request_digest(call: InboundCall) -> str:
    """What the retry must repeat: the method and its parameters (minus the retry's own fields)."""
    params = {k: v for k, v in call.params.items() if k not in ("requestState", "inputResponses", "_meta")}
    body = orjson.dumps([call.method, params], option=orjson.OPT_SORT_KEYS)
    return _b64(hashlib.sha256(body).digest())


class ConnectGate:
    def __init__(self, key: bytes, completed: Completed | None = None) -> None:
        self._key = key
        self._completed = completed
        self._watching: dict[str, asyncio.Task[None]] = {}  # elicitation id → its watcher

    # -- requestState ------------------------------------------------------------------------

    def _mac(self, payload: str) -> str:
        return _b64(hmac.new(self._key, payload.encode("ascii"), hashlib.sha256).digest())

    def _state(self, call: InboundCall, principal: Principal, upstream: str, connection: str) -> str:
        claims = {
            "s": principal.subject,
            "u": upstream,
            "c": connection,
            "d": _request_digest(call),
            "e": int(time.time()) + STATE_TTL_S,
        }
        payload = _b64(orjson.dumps(claims))
        return f"{STATE_PREFIX}{payload}.{self._mac(payload)}"

    @staticmethod
    def is_retry(call: InboundCall) -> bool:
        state = call.params.get("requestState")
        return isinstance(state, str) and state.startswith(STATE_PREFIX)

    def resume(self, call: InboundCall, principal: Principal, upstream: str) -> tuple[InboundCall, bool]:
        """The retry of a request Bastion answered with its connect request, as the original
        request (``requestState`` and ``inputResponses`` removed), and whether the user declined."""
        state = call.params.get("requestState")
        assert isinstance(state, str)
        payload, _, mac = state[len(STATE_PREFIX) :].partition(".")
        try:
            valid_mac = hmac.compare_digest(mac.encode("ascii"), self._mac(payload).encode("ascii"))
            claims = orjson.loads(_unb64(payload)) if valid_mac else None
        except (ValueError, UnicodeError):
            claims = None
        if (
            not isinstance(claims, dict)
            or claims.get("s") != principal.subject
            or claims.get("u") != upstream
            or claims.get("d") != _request_digest(call)
            or not isinstance(claims.get("e"), int)
            or claims["e"] < time.time()
        ):
            raise InvalidParams("Invalid params: requestState is not valid for this request (or has expired)")
        responses = call.params.get("inputResponses")
        answer = responses.get(_input_key(str(claims.get("c")))) if isinstance(responses, dict) else None
        declined = isinstance(answer, dict) and answer.get("action") in ("decline", "cancel")
        params = {k: v for k, v in call.params.items() if k not in ("requestState", "inputResponses")}
        message = {**call.message, "params": params}
        return call._replace(message=message, body=orjson.dumps(message)), declined

    # -- answers -----------------------------------------------------------------------------

    def ask(
        self,
        call: InboundCall,
        principal: Principal,
        err: ConnectionRequired,
        *,
        capabilities: object,
        declined: bool = False,
        endpoint: str | None = None,
    ) -> Reply:
        """The answer to a request that needs the connection (tools/call, prompts/get,
        resources/read): the connect request in the client's era, or the link in an error."""
        message = self.ask_message(
            call, principal, err, capabilities=capabilities, declined=declined, endpoint=endpoint
        )
        return MessageReply(messages=single(message), upstream=err.upstream)

    def ask_message(
        self,
        call: InboundCall,
        principal: Principal,
        err: ConnectionRequired,
        *,
        capabilities: object,
        declined: bool = False,
        endpoint: str | None = None,
    ) -> JsonObject:
        """:meth:`ask` as the JSON-RPC message. ``endpoint``: what the retry's requestState is
        bound to (the upstream's own endpoint by default; the aggregate endpoint names its own)."""
        if declined:
            return self._tool_error(
                call, err, f"The request needs your {err.label} account, which is not connected."
            )
        if url_elicitation_declared(capabilities):
            if call.era is Era.MODERN:
                result = {
                    "resultType": "input_required",
                    "inputRequests": {
                        _input_key(err.connection): {
                            "method": "elicitation/create",
                            "params": {"mode": "url", "url": err.url, "message": err.prompt},
                        }
                    },
                    "requestState": self._state(call, principal, endpoint or err.upstream, err.connection),
                }
                return _message(call, {"result": result})
            error = {
                "code": URL_ELICITATION_REQUIRED,
                "message": "URL elicitation required: " + err.prompt,
                "data": {
                    "elicitations": [
                        {
                            "mode": "url",
                            "elicitationId": err.elicitation_id,
                            "url": err.url,
                            "message": err.prompt,
                        }
                    ]
                },
            }
            return _message(call, {"error": error})
        return self._tool_error(call, err, f"{err.prompt} Open this link in your browser: {err.url}")

    @staticmethod
    def _tool_error(call: InboundCall, err: ConnectionRequired, text: str) -> JsonObject:
        if call.method != "tools/call":
            raise err
        result: JsonObject = {"content": [{"type": "text", "text": text}], "isError": True}
        if call.era is Era.MODERN:
            result["resultType"] = "complete"
        return _message(call, {"result": result})

    @staticmethod
    def unconnected(call: InboundCall, err: ConnectionRequired) -> Reply | None:
        """Bastion's own answer to a list or ping while the user is not connected (None: the
        method needs the upstream)."""
        key = EMPTY_LISTS.get(call.method or "")
        if key is not None:
            result: JsonObject = {key: []}
        elif call.method == "ping":
            result = {}
        else:
            return None
        if call.era is Era.MODERN:
            result.update(resultType="complete", cacheScope="private", ttlMs=0)
        return _reply(call, {"result": result}, err.upstream)

    # -- before the user connected -------------------------------------------------------------

    @staticmethod
    def pending_initialize(version: str, err: ConnectionRequired, upstream: str) -> JsonObject:
        """Bastion's initialize result for a session whose user has not connected yet."""
        return {
            "protocolVersion": version,
            "capabilities": PENDING_CAPABILITIES,
            "serverInfo": {**BASTION_INFO, "name": f"bastion/{upstream}"},
            "instructions": err.prompt + " Calling a tool shows how.",
        }

    @staticmethod
    def pending_discover(err: ConnectionRequired, upstream: str) -> JsonObject:
        return {
            "supportedVersions": list(MODERN_PROTOCOL_VERSIONS),
            "capabilities": PENDING_CAPABILITIES,
            "instructions": err.prompt + " Calling a tool shows how.",
            "resultType": "complete",
            "cacheScope": "private",
            "ttlMs": 0,
            "_meta": {SERVER_INFO_META_KEY: {**BASTION_INFO, "name": f"bastion/{upstream}"}},
        }

    def watch(self, relay: RelaySession, err: ConnectionRequired) -> None:
        """Tell a legacy session's GET stream when the user finished connecting:
        ``notifications/elicitation/complete`` and ``notifications/tools/list_changed``."""
        if self._completed is None or err.elicitation_id in self._watching:
            return
        task = asyncio.ensure_future(self._watch(relay, err.elicitation_id))
        self._watching[err.elicitation_id] = task
        task.add_done_callback(lambda _t: self._watching.pop(err.elicitation_id, None))

    async def _watch(self, relay: RelaySession, elicitation_id: str) -> None:
        assert self._completed is not None
        deadline = time.monotonic() + STATE_TTL_S
        while not relay.closed and time.monotonic() < deadline:
            await asyncio.sleep(WATCH_INTERVAL_S)
            try:
                done = await self._completed(elicitation_id)
            except Exception as exc:  # a store hiccup: keep watching
                log.info("connect watch: %s", exc)
                continue
            if done:
                relay.sink(
                    {
                        "jsonrpc": "2.0",
                        "method": "notifications/elicitation/complete",
                        "params": {"elicitationId": elicitation_id},
                    }
                )
                relay.sink({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"})
                return

    def close(self) -> None:
        for task in self._watching.values():
            task.cancel()
        self._watching.clear()


def _input_key(connection: str) -> str:
    return f"bastion_connect_{connection}"


def _message(call: InboundCall, body: JsonObject) -> JsonObject:
    return {"jsonrpc": "2.0", "id": call.request_id, **body}


def _reply(call: InboundCall, body: JsonObject, upstream: str) -> Reply:
    return MessageReply(messages=single(_message(call, body)), upstream=upstream)


__all__ = ["ASKING_METHODS", "STATE_PREFIX", "ConnectGate", "modern_capabilities", "url_elicitation_declared"]
