"""One entry per configured upstream: its HTTP client or stdio processes, the eras it speaks,
and the channels Bastion holds with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
from mcp_types import CLIENT_CAPABILITIES_META_KEY, CLIENT_INFO_META_KEY
from mcp_types.version import LATEST_HANDSHAKE_VERSION, LATEST_MODERN_VERSION

from bastion.config.model import Upstream
from bastion.core.errors import UpstreamError, UpstreamRejectedCredentials, UpstreamUnavailable
from bastion.core.records import NO_CREDENTIAL, UpstreamCredential
from bastion.upstream.channel import LegacyChannel, SessionAsker
from bastion.upstream.eras import BASTION_CLIENT_INIT
from bastion.upstream.http import HttpUpstreamClient
from bastion.upstream.http_session import HttpSessionTransport
from bastion.upstream.modern_link import ModernLink
from bastion.upstream.routes import CallRoute
from bastion.upstream.stdio import StdioProcess

JsonObject = dict[str, Any]
log = logging.getLogger("bastion.upstream")
_RELAYED_CAPABILITIES = frozenset({"sampling", "elicitation", "roots"})


_UNSCOPED_NO_CAPS = orjson.dumps([None, {}])


def _renew(link: object, credential: UpstreamCredential) -> None:
    """A link held for one user sends that user's current credential (their token is renewed
    before it expires; static credentials never change)."""
    if credential.process_scope is None:
        return
    if isinstance(link, ModernLink):
        link.use_headers(credential.headers)
    elif isinstance(link, LegacyChannel) and isinstance(link.transport, HttpSessionTransport):
        link.transport.use_headers(credential.headers)


class Link(Protocol):
    """A way to send client requests to one upstream (a LegacyChannel or a ModernLink)."""

    initialize_result: JsonObject | None

    async def request(
        self, message: JsonObject, route: CallRoute, timeout: float | None = None
    ) -> JsonObject: ...

    async def notify(self, message: JsonObject) -> None: ...

    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class EraSupport:
    legacy: bool
    modern: bool
    discover_result: JsonObject | None = None


class _ProcessTransport:
    def __init__(self, process: StdioProcess) -> None:
        self.process = process

    async def send(self, message: JsonObject) -> None:
        await self.process.send(message)

    async def close(self) -> None:
        await self.process.stop()


class UpstreamEntry:
    def __init__(self, config: Upstream) -> None:
        self.config = config
        self.name = config.name
        self.http: HttpUpstreamClient | None = (
            HttpUpstreamClient(config.name, config.http) if config.http else None
        )
        self._eras: EraSupport | None = None
        self._era_lock = asyncio.Lock()
        self._shared: dict[bytes, LegacyChannel] = {}  # keyed by the client capabilities declared upstream
        self._shared_lock = asyncio.Lock()
        self._session_links: dict[str, Link] = {}

    @property
    def is_stdio(self) -> bool:
        return self.config.stdio is not None

    @property
    def timeouts(self) -> Any:
        spec = self.config.http or self.config.stdio
        assert spec is not None
        return spec.timeouts

    # -- eras ----------------------------------------------------------------------------------

    @property
    def per_user(self) -> bool:
        """Bastion authenticates to this upstream as each user (it cannot probe it alone)."""
        return self.config.auth.type != "none"

    async def eras(self, credential: UpstreamCredential = NO_CREDENTIAL) -> EraSupport:
        """Which eras the upstream serves, probed once (with the first caller's credential for an
        upstream that wants one; a probe the upstream refused is not remembered)."""
        if self.is_stdio:
            return EraSupport(legacy=True, modern=False)
        if self._eras is not None:
            return self._eras
        async with self._era_lock:
            if self._eras is None:
                self._eras = await self._probe(credential.headers)
            return self._eras

    async def _probe(self, auth_headers: tuple[tuple[str, str], ...]) -> EraSupport:
        """Ask the upstream which eras it serves: server/discover, then initialize (+ DELETE)."""
        assert self.http is not None
        modern_link = ModernLink(
            self.http,
            capabilities={},
            client_info=BASTION_CLIENT_INIT["clientInfo"],
            extra_headers=auth_headers,
        )
        discover: JsonObject | None = None
        try:
            discover = await modern_link.discover()
        except UpstreamUnavailable:
            raise
        except UpstreamError:
            discover = None
        modern = discover is not None and LATEST_MODERN_VERSION in (discover.get("supportedVersions") or [])
        legacy = await self._probe_legacy(auth_headers)
        if not (legacy or modern):
            legacy = True  # let the client's own request produce the upstream's error
        support = EraSupport(legacy=legacy, modern=modern, discover_result=discover if modern else None)
        log.info("upstream %s speaks: legacy=%s modern=%s", self.name, legacy, modern)
        return support

    async def _probe_legacy(self, auth_headers: tuple[tuple[str, str], ...]) -> bool:
        assert self.http is not None
        body = orjson.dumps(
            {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": BASTION_CLIENT_INIT}
        )
        headers = [
            ("content-type", "application/json"),
            ("accept", "application/json, text/event-stream"),
            *auth_headers,
        ]
        try:
            response = await self.http.request("POST", headers, body)
        except UpstreamError:
            return False
        session = response.headers.get("mcp-session-id")
        ok = response.status == 200
        response.release()
        if response.status in (401, 403) and self.per_user:
            raise UpstreamRejectedCredentials.from_response(
                self.name, response.status, response.headers.getall("www-authenticate", [])
            )
        if ok and session is not None:
            with contextlib.suppress(UpstreamError):
                delete = await self.http.request(
                    "DELETE",
                    [
                        ("mcp-session-id", session),
                        ("mcp-protocol-version", LATEST_HANDSHAKE_VERSION),
                        *auth_headers,
                    ],
                    None,
                )
                delete.release()
        return ok

    @property
    def discover_result(self) -> JsonObject | None:
        """The upstream's server/discover result, when it speaks the 2026-07-28 era."""
        return self._eras.discover_result if self._eras is not None else None

    def forget_eras(self) -> None:
        self._eras = None

    # -- channels ------------------------------------------------------------------------------

    def is_shared(self, link: object) -> bool:
        return any(link is channel for channel in self._shared.values())

    async def shared_channel(
        self, credential: UpstreamCredential, capabilities: JsonObject | None = None
    ) -> LegacyChannel:
        """A channel Bastion itself initialized, shared by callers declaring the same client
        capabilities (modern-era clients, ``isolation: shared``): a server only asks a client
        for what it declared, so callers that can answer elicitation get a session that says so."""
        caps = {k: v for k, v in (capabilities or {}).items() if k in _RELAYED_CAPABILITIES}
        # a per-user credential (process_scope set) never shares a channel with another user
        key = orjson.dumps([credential.process_scope, caps], option=orjson.OPT_SORT_KEYS)
        channel = self._shared.get(key)
        if channel is not None and not channel.closed:
            _renew(channel, credential)
            return channel
        async with self._shared_lock:
            channel = self._shared.get(key)
            if channel is None or channel.closed:
                label = (
                    "shared" if key == _UNSCOPED_NO_CAPS else f"shared-{hashlib.sha256(key).hexdigest()[:8]}"
                )
                channel = await self.open_channel(
                    {**BASTION_CLIENT_INIT, "capabilities": caps}, label, credential
                )
                self._shared[key] = channel
            else:
                _renew(channel, credential)
            return channel

    async def open_channel(
        self, init_params: JsonObject, key: str, credential: UpstreamCredential
    ) -> LegacyChannel:
        channel = LegacyChannel(self.name, init_params, self.timeouts)
        if self.config.stdio is not None:
            process = StdioProcess(
                self.name,
                self.config.stdio,
                key=key,
                extra_env=dict(credential.env),
                on_message=channel.on_message,
                on_started=channel.handshake,
                on_exited=lambda code: channel.transport_lost(f"process exited (code {code})"),
                supervise=True,
                logger=logging.getLogger(f"bastion.upstream.{self.name}"),
            )
            channel.attach(_ProcessTransport(process))
            await process.start()
            return channel
        assert self.http is not None
        transport = HttpSessionTransport(
            self.http,
            channel.on_message,
            extra_headers=credential.headers,
            on_lost=lambda reason: self._rehandshake(channel, reason),
        )
        channel.attach(transport)
        await channel.handshake()
        return channel

    def _rehandshake(self, channel: LegacyChannel, reason: str) -> None:
        channel.transport_lost(reason)
        if not channel.closed:
            task = asyncio.ensure_future(channel.handshake())
            task.add_done_callback(lambda t: t.cancelled() or t.exception())

    async def session_link(
        self,
        session_id: str,
        init_params: JsonObject,
        credential: UpstreamCredential,
        *,
        sink: Callable[[JsonObject], None] | None = None,
        asker: SessionAsker | None = None,
    ) -> Link:
        """The link a legacy client session uses: its own channel (full fidelity) or the shared one.

        ``sink``/``asker`` receive what the upstream sends outside any call (the session's GET
        stream); they apply to the session's own channel only, never to a shared one.
        """
        link = self._session_links.get(session_id)
        if link is not None:
            _renew(link, credential)
            return link
        eras = await self.eras(credential)
        if self.config.stdio is not None and self.config.stdio.isolation == "shared":
            return await self.shared_channel(credential, init_params.get("capabilities"))
        if not self.is_stdio and not eras.legacy:
            assert self.http is not None
            modern = ModernLink(
                self.http,
                capabilities=dict(init_params.get("capabilities") or {}),
                client_info=init_params.get("clientInfo"),
                extra_headers=credential.headers,
            )
            modern.initialize_result = None
            link = modern
        else:
            stdio = self.config.stdio
            if stdio is not None:
                own = sum(
                    1 for existing in self._session_links.values() if isinstance(existing, LegacyChannel)
                )
                if own >= stdio.max_processes:
                    raise UpstreamUnavailable(
                        self.name, f"has reached its limit of {stdio.max_processes} per-session processes"
                    )
            channel = await self.open_channel(init_params, session_id, credential)
            channel.session_sink = sink
            channel.session_asker = asker
            link = channel
        self._session_links[session_id] = link
        return link

    async def reap_idle(self) -> int:
        """Stop per-session stdio processes idle for ``stdio.idle_timeout``; a later call on the
        session starts a fresh one (initialized again with the client's own parameters)."""
        stdio = self.config.stdio
        if stdio is None:
            return 0
        now = asyncio.get_running_loop().time()
        reaped = 0
        for session_id, link in list(self._session_links.items()):
            if (
                isinstance(link, LegacyChannel)
                and link.in_flight == 0
                and now - link.last_used > stdio.idle_timeout
            ):
                del self._session_links[session_id]
                await link.close()
                reaped += 1
        return reaped

    def modern_link(
        self, meta: JsonObject, credential: UpstreamCredential, resolve_input: bool
    ) -> ModernLink:
        assert self.http is not None
        return ModernLink(
            self.http,
            capabilities=dict(meta.get(CLIENT_CAPABILITIES_META_KEY) or {}),
            client_info=meta.get(CLIENT_INFO_META_KEY),
            extra_headers=credential.headers,
            resolve_input=resolve_input,
        )

    async def close_session(self, session_id: str) -> None:
        link = self._session_links.pop(session_id, None)
        if link is not None and not self.is_shared(link):
            await link.close()

    async def close(self) -> None:
        for session_id in list(self._session_links):
            await self.close_session(session_id)
        for channel in self._shared.values():
            await channel.close()
        self._shared.clear()
        if self.http is not None:
            await self.http.close()
