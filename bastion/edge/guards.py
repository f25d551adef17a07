"""DNS-rebinding protection (Host and Origin checks), per the Streamable HTTP transport's
security warning: servers MUST validate Origin, and local servers SHOULD bind to loopback.

The allowed sets are computed once from the config; each request costs two set lookups.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from bastion.config.model import Settings
from bastion.core.errors import InvalidHost, InvalidOrigin

_LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")


def _default_port(scheme: str) -> int:
    return 443 if scheme == "https" else 80


@dataclass(frozen=True, slots=True)
class HostGuard:
    hosts: frozenset[str]  # lowercase "host:port" and, for default ports, "host"
    origins: frozenset[str]  # lowercase "scheme://host[:port]"
    any_host: bool

    @classmethod
    def from_settings(cls, settings: Settings) -> HostGuard:
        public = urlsplit(settings.public_url)
        scheme = public.scheme
        hosts: set[str] = set()
        origins: set[str] = set()

        def add(host: str, port: int, origin_scheme: str) -> None:
            host = host.lower()
            if ":" in host and not host.startswith("["):
                host = f"[{host}]"
            hosts.add(f"{host}:{port}")
            if port == _default_port(origin_scheme):
                hosts.add(host)
                origins.add(f"{origin_scheme}://{host}")
            origins.add(f"{origin_scheme}://{host}:{port}")

        add(public.hostname or "", public.port or _default_port(scheme), scheme)
        listen_port = settings.listen_port
        add(settings.listen_host, listen_port, "http")
        if settings.listens_on_loopback() or settings.listen_host in ("0.0.0.0", "::"):  # noqa: S104
            for name in _LOOPBACK_NAMES:
                add(name.strip("[]"), listen_port, "http")
        any_host = False
        for extra in settings.edge.allowed_hosts:
            if extra == "*":
                any_host = True
            else:
                hosts.add(extra.lower())
        for extra in settings.edge.allowed_origins:
            origins.add(extra.lower().rstrip("/"))
        return cls(frozenset(hosts), frozenset(origins), any_host)

    def check(self, host: str | None, origin: str | None) -> None:
        if not self.any_host and (host is None or host.lower() not in self.hosts):
            raise InvalidHost("Invalid Host header", detail=f"host={host!r}")
        if origin is not None and origin.lower() not in self.origins:
            raise InvalidOrigin("Invalid Origin header", detail=f"origin={origin!r}")
