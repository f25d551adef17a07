"""bastion.net.fetch against real HTTPS servers on loopback (trustme CA). Requirements proved:
CIMD §SSRF / §Max Response Size / no redirects (checklist rows 29, 30, 62)."""

from __future__ import annotations

import asyncio
import json
import ssl
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.types import Receive, Scope, Send

from bastion.net.fetch import (
    BadContentType,
    FetchFailed,
    FetchPolicy,
    FetchTimeout,
    ForbiddenAddress,
    NotHttps,
    RedirectRefused,
    SafeFetcher,
    TooLarge,
    cache_max_age,
)
from tests.support.tls import LoopbackPki, make_pki, serve_raw_tls, serve_tls

BIG = b'{"pad":"' + b"x" * 6 * 1024 + b'"}'


class DocumentApp:
    """A plain ASGI app: one behaviour per path, and a count of requests per path."""

    def __init__(self) -> None:
        self.hits: Counter[str] = Counter()
        self._lock = threading.Lock()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        with self._lock:
            self.hits[path] += 1
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        if path in ("/301", "/302"):
            await self._reply(send, int(path[1:]), b"", "application/json", [(b"location", b"/doc.json")])
        elif path == "/big.json":
            await self._reply(send, 200, BIG, "application/json")
        elif path == "/big-chunked.json":  # no Content-Length at all
            await send(
                {"type": "http.response.start", "status": 200, "headers": self._ct("application/json")}
            )
            for i in range(0, len(BIG), 512):
                await send({"type": "http.response.body", "body": BIG[i : i + 512], "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        elif path == "/slow.json":
            await asyncio.sleep(1.5)
            await self._reply(send, 200, b"{}", "application/json")
        elif path == "/drip.json":
            await send(
                {"type": "http.response.start", "status": 200, "headers": self._ct("application/json")}
            )
            for _ in range(8):
                await send({"type": "http.response.body", "body": b" ", "more_body": True})
                await asyncio.sleep(0.2)
            await send({"type": "http.response.body", "body": b"{}"})
        elif path == "/host.json":
            body = json.dumps({"host": headers.get("host", "")}).encode()
            await self._reply(send, 200, body, "application/json; charset=utf-8")
        elif path == "/text":
            await self._reply(send, 200, b"{}", "text/plain")
        elif path == "/gzip.json":
            await self._reply(send, 200, b"{}", "application/json", [(b"content-encoding", b"gzip")])
        elif path == "/notjson.json":
            await self._reply(send, 200, b"{nope", "application/json")
        elif path == "/doc.json":
            await self._reply(
                send, 200, b'{"hello": "world"}', "application/json", [(b"cache-control", b"max-age=120")]
            )
        else:
            await self._reply(send, 404, b"{}", "application/json")

    @staticmethod
    def _ct(content_type: str) -> list[tuple[bytes, bytes]]:
        return [(b"content-type", content_type.encode())]

    async def _reply(
        self, send: Any, status: int, body: bytes, ctype: str, extra: list[tuple[bytes, bytes]] | None = None
    ) -> None:
        headers = [*self._ct(ctype), (b"content-length", str(len(body)).encode()), *(extra or [])]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> LoopbackPki:
    return make_pki(Path(tmp_path_factory.mktemp("pki")))


@pytest.fixture(scope="module")
def app() -> DocumentApp:
    return DocumentApp()


@pytest.fixture(scope="module")
def port(app: DocumentApp, pki: LoopbackPki) -> Iterator[int]:
    with serve_tls(app, pki) as p:
        yield p


@pytest.fixture
def trust(pki: LoopbackPki) -> ssl.SSLContext:
    return pki.client_context()


def dev_fetcher(trust: ssl.SSLContext, **kwargs: Any) -> SafeFetcher:
    policy = FetchPolicy.allowing(["localhost"], ["127.0.0.1/32"], ssl_context=trust, total_timeout=1.0)
    return SafeFetcher(policy, clock=lambda: 1000.0, **kwargs)


class FakeDns:
    """The far side of DNS, which cannot run here: fixed answers, and a call log."""

    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers
        self.calls: list[str] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append(host)
        if host not in self.answers:
            raise OSError(f"NXDOMAIN {host}")
        return self.answers[host]


async def test_happy_path(port: int, trust: ssl.SSLContext) -> None:
    result = await dev_fetcher(trust).get_json(f"https://localhost:{port}/doc.json")
    assert result.status == 200
    assert result.body_json == {"hello": "world"}
    assert result.fetched_at == 1000.0
    assert result.cache_max_age == 120


async def test_the_allow_list_is_what_lets_loopback_through(
    port: int, app: DocumentApp, trust: ssl.SSLContext
) -> None:
    before = app.hits["/doc.json"]
    production = SafeFetcher(FetchPolicy(ssl_context=trust))
    with pytest.raises(ForbiddenAddress):
        await production.get_json(f"https://localhost:{port}/doc.json")
    with pytest.raises(ForbiddenAddress):
        await production.get_json(f"https://127.0.0.1:{port}/doc.json")
    assert app.hits["/doc.json"] == before


async def test_connection_is_pinned_to_the_vetted_ip_with_the_original_host_and_sni(
    port: int, trust: ssl.SSLContext
) -> None:
    dns = FakeDns({"cimd.test": ["127.0.0.1"]})
    policy = FetchPolicy.allowing([], ["127.0.0.1/32"], ssl_context=trust)
    result = await SafeFetcher(policy, resolver=dns).get_json(f"https://cimd.test:{port}/host.json")
    assert result.body_json == {"host": f"cimd.test:{port}"}  # Host header is the name, not the IP
    assert dns.calls == ["cimd.test"]  # resolved exactly once


async def test_certificate_is_checked_against_the_hostname_not_the_ip(
    port: int, trust: ssl.SSLContext
) -> None:
    dns = FakeDns({"other.test": ["127.0.0.1"]})  # our server's IP, but no certificate for this name
    policy = FetchPolicy.allowing([], ["127.0.0.1/32"], ssl_context=trust)
    with pytest.raises(FetchFailed):
        await SafeFetcher(policy, resolver=dns).get_json(f"https://other.test:{port}/doc.json")


async def test_plain_http_refused(port: int, trust: ssl.SSLContext) -> None:
    with pytest.raises(NotHttps):
        await dev_fetcher(trust).get_json(f"http://localhost:{port}/doc.json")
    lax = SafeFetcher(FetchPolicy(https_only=False, ssl_context=trust))
    with pytest.raises(NotHttps):  # http is only ever for allow-listed development hosts
        await lax.get_json("http://example.com/doc.json")


@pytest.mark.parametrize("code", [301, 302])
async def test_redirects_refused(port: int, trust: ssl.SSLContext, app: DocumentApp, code: int) -> None:
    before = app.hits["/doc.json"]
    with pytest.raises(RedirectRefused):
        await dev_fetcher(trust).get_json(f"https://localhost:{port}/{code}")
    assert app.hits["/doc.json"] == before  # the target was never fetched


@pytest.mark.parametrize("path", ["/big.json", "/big-chunked.json"])
async def test_six_kilobytes_refused(port: int, trust: ssl.SSLContext, path: str) -> None:
    with pytest.raises(TooLarge):
        await dev_fetcher(trust).get_json(f"https://localhost:{port}{path}")


async def test_lying_content_length_does_not_lift_the_cap(pki: LoopbackPki, trust: ssl.SSLContext) -> None:
    async def liar(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 20\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        writer.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(BIG), BIG))
        await writer.drain()

    async with serve_raw_tls(liar, pki) as raw_port:
        with pytest.raises(TooLarge):
            await dev_fetcher(trust).get_json(f"https://localhost:{raw_port}/doc.json")


@pytest.mark.parametrize("path", ["/text", "/gzip.json"])
async def test_wrong_content_type_or_encoding(port: int, trust: ssl.SSLContext, path: str) -> None:
    with pytest.raises(BadContentType):
        await dev_fetcher(trust).get_json(f"https://localhost:{port}{path}")


async def test_content_type_parameters_allowed(port: int, trust: ssl.SSLContext) -> None:
    result = await dev_fetcher(trust).get_json(f"https://localhost:{port}/host.json")
    assert result.body_json == {"host": f"localhost:{port}"}
    assert result.cache_max_age is None


@pytest.mark.parametrize("path", ["/slow.json", "/drip.json"])
async def test_total_timeout(port: int, trust: ssl.SSLContext, path: str) -> None:
    policy = FetchPolicy.allowing(["localhost"], [], ssl_context=trust, total_timeout=0.5)
    started = time.monotonic()
    with pytest.raises(FetchTimeout):
        await SafeFetcher(policy).get_json(f"https://localhost:{port}{path}")
    assert time.monotonic() - started < 1.2


async def test_non_200_and_invalid_json_fail(port: int, trust: ssl.SSLContext) -> None:
    with pytest.raises(FetchFailed) as info:
        await dev_fetcher(trust).get_json(f"https://localhost:{port}/missing.json")
    assert info.value.http_status == 404
    with pytest.raises(FetchFailed):
        await dev_fetcher(trust).get_json(f"https://localhost:{port}/notjson.json")


@pytest.mark.parametrize(
    "answer", ["10.0.0.1", "169.254.169.254", "::1", "::ffff:127.0.0.1", "100.64.0.1", "fd00::1"]
)
async def test_special_use_dns_answers_refused(trust: ssl.SSLContext, answer: str) -> None:
    dns = FakeDns({"evil.example": [answer]})
    with pytest.raises(ForbiddenAddress) as info:
        await SafeFetcher(FetchPolicy(ssl_context=trust), resolver=dns).get_json(
            "https://evil.example/x.json"
        )
    assert "special-use" in info.value.detail
    assert "special-use" not in info.value.message  # the public text names no address


async def test_any_forbidden_answer_refuses_before_connecting(
    port: int, app: DocumentApp, trust: ssl.SSLContext
) -> None:
    # the first answer is our (allow-listed, reachable) server; the second is internal
    dns = FakeDns({"cimd.test": ["127.0.0.1", "10.0.0.1"]})
    policy = FetchPolicy.allowing([], ["127.0.0.1/32"], ssl_context=trust)
    before = sum(app.hits.values())
    with pytest.raises(ForbiddenAddress):
        await SafeFetcher(policy, resolver=dns).get_json(f"https://cimd.test:{port}/doc.json")
    assert sum(app.hits.values()) == before


@pytest.mark.parametrize(
    "url", ["https://10.0.0.1/x", "https://[::1]/x", "https://169.254.169.254/latest/meta-data"]
)
async def test_ip_literals_checked_without_dns(trust: ssl.SSLContext, url: str) -> None:
    dns = FakeDns({})
    with pytest.raises(ForbiddenAddress):
        await SafeFetcher(FetchPolicy(ssl_context=trust), resolver=dns).get_json(url)
    assert dns.calls == []


async def test_userinfo_refused(port: int, trust: ssl.SSLContext) -> None:
    with pytest.raises(ForbiddenAddress):
        await dev_fetcher(trust).get_json(f"https://user:pw@localhost:{port}/doc.json")


async def test_dns_failure_is_a_fetch_failure(trust: ssl.SSLContext) -> None:
    with pytest.raises(FetchFailed):
        await SafeFetcher(FetchPolicy(ssl_context=trust), resolver=FakeDns({})).get_json(
            "https://nx.example/x"
        )


def test_policy_refuses_a_context_that_does_not_verify() -> None:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    with pytest.raises(ValueError, match="verify"):
        FetchPolicy(ssl_context=ctx)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, None),
        ({"cache-control": "public, max-age=600"}, 600),
        ({"cache-control": "max-age=600", "age": "100"}, 500),
        ({"cache-control": "no-store, max-age=600"}, 0),
        ({"cache-control": "no-cache"}, 0),
        ({"expires": "Thu, 01 Jan 1970 00:20:00 GMT", "date": "Thu, 01 Jan 1970 00:10:00 GMT"}, 600),
        ({"expires": "Thu, 01 Jan 1970 00:20:00 GMT"}, 200),  # no Date: measured from now=1000
        ({"expires": "0"}, 0),
        ({"cache-control": "max-age=soon"}, None),
    ],
)
def test_cache_max_age(headers: dict[str, str], expected: int | None) -> None:
    assert cache_max_age(headers, now=1000.0) == expected
