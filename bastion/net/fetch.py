"""The SSRF-safe fetcher: the only way Bastion fetches a URL that someone else chose.

Rules (draft-ietf-oauth-client-id-metadata-document §SSRF, §Max Response Size, §Caching;
OAuth 2.0 Security BCP RFC 9700 §4.15; MCP auth requirements rows 29, 30 and 62):

1. ``https`` only. Plain ``http`` needs ``https_only=False`` AND an allow-listed host (development).
2. No userinfo in the URL.
3. The host is resolved ONCE. If ANY answer is a special-use address (``addresses.is_forbidden``)
   the fetch is refused before a socket is opened, unless the host or that address is allow-listed.
4. The connection goes to one of those vetted IPs (DNS-rebinding safe, see below).
5. No redirects: any 3xx is an error. Only 200 is success.
6. ``Content-Type`` must be ``application/json``; ``Content-Encoding`` must be identity.
7. The body is streamed with a hard cap (``max_bytes``), whatever ``Content-Length`` says.
8. One deadline (``total_timeout``) covers resolution, connect, TLS, headers and body.

How the connection is pinned, and why that is safe: the request URL is rebuilt with the
vetted IP literal as its host (``https://203.0.113.7:443/path``), so httpx2/httpcore2 open the
TCP connection to that IP and never call the resolver again (a numeric host needs no DNS).
The original name is carried twice: as the ``Host`` header, and as httpcore2's documented
``sni_hostname`` request extension, which httpcore2 passes as ``server_hostname`` to
``SSLContext.wrap_*``. With ``check_hostname=True`` (enforced here) the TLS layer sends SNI for
the name and verifies the certificate against the name, not the IP. A rebinding DNS server
therefore cannot move the connection elsewhere after the check, and an IP that answers for
the name must still prove it holds a certificate for the name. Each fetch uses a fresh
client that is closed afterwards: a pooled connection keyed by IP could otherwise be reused
for a different hostname without a new certificate check. ``trust_env=False`` keeps
``HTTPS_PROXY`` and friends out: a proxy would do its own (unchecked) resolution.

Response bodies are never logged; errors carry a public message and a private ``detail``.
"""

from __future__ import annotations

import asyncio
import email.utils
import ipaddress
import json
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx2

from bastion.core.errors import BastionError
from bastion.net.addresses import IPAddress, IPNetwork, in_networks, is_forbidden

Resolver = Callable[[str, int], Awaitable[list[str]]]
"""``(host, port) -> IP address strings``; the default calls ``loop.getaddrinfo``."""


class FetchError(BastionError):
    """Base of the fetch errors. The tree::

    FetchError
    ├── NotHttps           scheme is not https (and the host is not an allow-listed dev host)
    ├── ForbiddenAddress   the URL is unusable (userinfo, no host) or resolves to a special-use IP
    ├── RedirectRefused    the server answered 3xx
    ├── TooLarge           the body exceeds max_bytes
    ├── BadContentType     not application/json, or an encoded body
    ├── FetchTimeout       the total deadline passed
    └── FetchFailed        DNS failure, refused connection, TLS failure, non-200, invalid JSON
    """

    status = 502
    public: str = "the document could not be fetched"

    def __init__(self, detail: str = "", *, message: str | None = None) -> None:
        super().__init__(message or self.public, detail=detail)


class NotHttps(FetchError):
    public = "the URL must use https"


class ForbiddenAddress(FetchError):
    public = "the URL points to an address Bastion does not fetch from"


class RedirectRefused(FetchError):
    public = "the server answered with a redirect; redirects are not followed"


class TooLarge(FetchError):
    public = "the document is too large"


class BadContentType(FetchError):
    public = "the document is not application/json"


class FetchTimeout(FetchError):
    public = "the server did not answer in time"


class FetchFailed(FetchError):
    public = "the document could not be fetched"

    def __init__(self, detail: str = "", *, status: int | None = None) -> None:
        super().__init__(detail)
        self.http_status = status


@dataclass(frozen=True, slots=True)
class FetchPolicy:
    """What a fetch may do. Defaults are the production rules; the allow-lists are for
    development and tests (e.g. ``allowed_hosts={"localhost"}``) and are empty by default.

    ``allowed_hosts``: hostnames (lower-case, IDNA) that may resolve to special-use addresses
    and, with ``https_only=False``, may use plain http. ``allowed_networks``: special-use
    networks that any host may resolve into. ``ssl_context``: trust store (default: system /
    certifi via httpx2); it must verify certificates and hostnames.
    """

    https_only: bool = True
    allowed_hosts: frozenset[str] = frozenset()
    allowed_networks: tuple[IPNetwork, ...] = ()
    max_bytes: int = 5 * 1024
    connect_timeout: float = 3.0
    total_timeout: float = 5.0
    follow_redirects: bool = field(default=False, init=False)
    user_agent: str = "Bastion/0.1 (+https://github.com/bastion-mcp)"
    ssl_context: ssl.SSLContext | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        ctx = self.ssl_context
        if ctx is not None and (not ctx.check_hostname or ctx.verify_mode != ssl.CERT_REQUIRED):
            raise ValueError("FetchPolicy.ssl_context must verify certificates and hostnames")
        if self.max_bytes <= 0 or self.connect_timeout <= 0 or self.total_timeout <= 0:
            raise ValueError("FetchPolicy limits must be positive")

    @classmethod
    def allowing(cls, hosts: Iterable[str], networks: Iterable[str], **kwargs: Any) -> FetchPolicy:
        """Convenience for development: allow-list ``hosts`` and ``networks`` (CIDR strings)."""
        return cls(
            allowed_hosts=frozenset(h.lower() for h in hosts),
            allowed_networks=tuple(ipaddress.ip_network(n) for n in networks),
            **kwargs,
        )


@dataclass(frozen=True, slots=True)
class FetchResult:
    """A successful (200, JSON, within limits) fetch. ``cache_max_age`` is seconds from
    ``fetched_at`` (epoch seconds) per the response's cache headers, or None when they say
    nothing (the caller picks a heuristic lifetime)."""

    status: int
    headers: Mapping[str, str]
    body_json: Any
    fetched_at: float
    cache_max_age: int | None


async def system_resolver(host: str, port: int) -> list[str]:
    """Resolve ``host`` with the system resolver, once, without blocking the loop."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def cache_max_age(headers: Mapping[str, str], now: float) -> int | None:
    """Freshness lifetime per RFC 9111 §4.2.1 for a private cache: ``no-store``/``no-cache`` →
    0; ``max-age`` (minus ``Age``) wins over ``Expires`` (minus ``Date``, or ``now``)."""
    directives: dict[str, str] = {}
    for part in headers.get("cache-control", "").split(","):
        name, _, value = part.strip().partition("=")
        if name:
            directives[name.lower()] = value.strip().strip('"')
    if "no-store" in directives or "no-cache" in directives:
        return 0
    age = _to_int(headers.get("age", "")) or 0
    if "max-age" in directives:
        max_age = _to_int(directives["max-age"])
        return None if max_age is None else max(0, max_age - age)
    expires = _http_date(headers.get("expires", ""))
    if expires is None:
        return 0 if "expires" in headers else None  # an invalid Expires means "already expired"
    date = _http_date(headers.get("date", "")) or now
    return max(0, int(expires - date) - age)


def _to_int(value: str) -> int | None:
    return int(value) if value.isdigit() else None


def _http_date(value: str) -> float | None:
    try:
        return email.utils.parsedate_to_datetime(value).timestamp() if value else None
    except (TypeError, ValueError):
        return None


class SafeFetcher:
    """Fetches small JSON documents from untrusted URLs under a ``FetchPolicy``.

    ``resolver`` is the DNS seam (tests inject answers); ``clock`` stamps ``fetched_at``.
    """

    def __init__(
        self,
        policy: FetchPolicy,
        *,
        resolver: Resolver | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._policy = policy
        self._resolve = resolver or system_resolver
        self._clock = clock
        self._ssl = policy.ssl_context or httpx2.create_ssl_context(trust_env=False)

    @property
    def policy(self) -> FetchPolicy:
        return self._policy

    async def get_json(self, url: str) -> FetchResult:
        """GET ``url`` and return its JSON body, or raise a ``FetchError``."""
        try:
            async with asyncio.timeout(self._policy.total_timeout):
                return await self._get_json(url)
        except TimeoutError as exc:
            raise FetchTimeout(f"{url}: no complete answer within {self._policy.total_timeout}s") from exc

    async def _get_json(self, url: str) -> FetchResult:
        target = self._check_url(url)
        host = target.raw_host.decode("ascii")
        port = target.port or (443 if target.scheme == "https" else 80)
        addresses = await self._vetted_addresses(host, port)
        last_error: Exception | None = None
        for address in addresses:
            try:
                return await self._get_from(target, host, address)
            except httpx2.ConnectError as exc:  # nothing was sent yet: try the next vetted address
                last_error = exc
        raise FetchFailed(f"{host}: cannot connect to {addresses}: {last_error!r}")

    def _check_url(self, url: str) -> httpx2.URL:
        try:
            target = httpx2.URL(url)
        except (httpx2.InvalidURL, TypeError, ValueError) as exc:
            raise ForbiddenAddress(f"unparseable URL: {exc}") from exc
        host = target.raw_host.decode("ascii").lower()
        if not host:
            raise ForbiddenAddress("URL has no host")
        if target.userinfo:
            raise ForbiddenAddress("URL carries userinfo")
        if target.scheme == "https":
            return target
        if target.scheme == "http" and not self._policy.https_only and host in self._policy.allowed_hosts:
            return target
        raise NotHttps(f"scheme {target.scheme!r} for host {host}")

    async def _vetted_addresses(self, host: str, port: int) -> list[IPAddress]:
        try:
            literal: IPAddress | None = ipaddress.ip_address(host)
        except ValueError:
            literal = None
        if literal is not None:
            answers: list[IPAddress] = [literal]
        else:
            try:
                raw = await self._resolve(host, port)
                answers = [ipaddress.ip_address(a.split("%", 1)[0]) for a in raw]
            except (OSError, ValueError) as exc:
                raise FetchFailed(f"{host}: DNS resolution failed: {exc!r}") from exc
        if not answers:
            raise FetchFailed(f"{host}: DNS returned no address")
        host_allowed = host.lower() in self._policy.allowed_hosts
        for address in answers:
            if is_forbidden(address) and not (
                host_allowed or in_networks(address, self._policy.allowed_networks)
            ):
                raise ForbiddenAddress(f"{host} resolves to special-use address {address}")
        return list(dict.fromkeys(answers))

    async def _get_from(self, target: httpx2.URL, host: str, address: IPAddress) -> FetchResult:
        pinned = target.copy_with(host=str(address), fragment=None)
        headers = {
            "Host": target.netloc.decode("ascii"),
            "Accept": "application/json",
            "Accept-Encoding": "identity",
            "User-Agent": self._policy.user_agent,
        }
        timeout = httpx2.Timeout(self._policy.total_timeout, connect=self._policy.connect_timeout)
        transport = httpx2.AsyncHTTPTransport(verify=self._ssl, trust_env=False, retries=0)
        async with httpx2.AsyncClient(
            transport=transport, trust_env=False, follow_redirects=False, timeout=timeout
        ) as client:
            request = client.build_request("GET", pinned, headers=headers, extensions={"sni_hostname": host})
            try:
                response = await client.send(request, stream=True)
            except httpx2.ConnectError:
                raise
            except httpx2.TimeoutException as exc:
                raise FetchTimeout(f"{host}: {exc!r}") from exc
            except httpx2.HTTPError as exc:
                raise FetchFailed(f"{host} ({address}): {exc!r}") from exc
            try:
                return await self._read(response, host)
            finally:
                await response.aclose()

    async def _read(self, response: httpx2.Response, host: str) -> FetchResult:
        status = response.status_code
        if 300 <= status < 400:
            raise RedirectRefused(f"{host}: HTTP {status}")
        if status != 200:
            raise FetchFailed(f"{host}: HTTP {status}", status=status)
        media_type = response.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if media_type != "application/json":
            raise BadContentType(f"{host}: content-type {media_type!r}")
        if response.headers.get("content-encoding", "identity").strip().lower() != "identity":
            raise BadContentType(f"{host}: content-encoding {response.headers['content-encoding']!r}")
        declared = response.headers.get("content-length", "")
        limit = self._policy.max_bytes
        if declared.isdigit() and int(declared) > limit:
            raise TooLarge(f"{host}: declared {declared} bytes > {limit}")
        body = bytearray()
        try:
            async for chunk in response.aiter_raw():
                body += chunk
                if len(body) > limit:  # counted, whatever Content-Length claimed
                    raise TooLarge(f"{host}: body exceeds {limit} bytes")
        except httpx2.TimeoutException as exc:
            raise FetchTimeout(f"{host}: {exc!r}") from exc
        except httpx2.HTTPError as exc:
            raise FetchFailed(f"{host}: reading body: {exc!r}") from exc
        try:
            document = json.loads(body)
        except (UnicodeDecodeError, ValueError) as exc:
            raise FetchFailed(f"{host}: body is not valid JSON ({len(body)} bytes)") from exc
        fetched_at = self._clock()
        plain_headers = {k.lower(): v for k, v in response.headers.items()}
        return FetchResult(
            status=status,
            headers=plain_headers,
            body_json=document,
            fetched_at=fetched_at,
            cache_max_age=cache_max_age(plain_headers, fetched_at),
        )
