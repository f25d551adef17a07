"""bastion.oauth.cimd (draft-ietf-oauth-client-id-metadata-document) against documents served
over real HTTPS on loopback. Checklist rows 29 (200 only, no redirects, client_id == URL, exact
redirect_uri), 30 (SSRF, size, errors not cached) and 31 (no shared-secret auth methods)."""

from __future__ import annotations

import asyncio
import json
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from starlette.types import Receive, Scope, Send

from bastion.net.fetch import FetchPolicy, ForbiddenAddress, RedirectRefused, SafeFetcher, TooLarge
from bastion.oauth.cimd import (
    CimdResolver,
    ClientMetadata,
    ClientMetadataUnavailable,
    InvalidClientId,
    InvalidClientMetadata,
    ResolvedClient,
    is_cimd_client_id,
    redirect_uri_allowed,
)
from tests.support.tls import LoopbackPki, make_pki, serve_tls

GOOD_REDIRECTS = ["https://app.example.com/callback", "http://127.0.0.1/callback", "http://localhost:3000/cb"]


class ClientDocs:
    """Serves client metadata documents whose client_id is the URL they are served from."""

    def __init__(self) -> None:
        self.hits: Counter[str] = Counter()
        self.broken = False
        self._lock = threading.Lock()

    def document(self, url: str, name: str) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "client_id": url,
            "client_name": "Test Client",
            "redirect_uris": GOOD_REDIRECTS,
        }
        doc["unknown_member"] = {"ignored": True}
        if name == "mismatch":
            doc["client_id"] = url.replace("mismatch", "other")
        elif name == "secret-basic":
            doc["token_endpoint_auth_method"] = "client_secret_basic"
        elif name == "with-secret":
            doc["client_secret"] = "s3cret"
        elif name == "javascript":
            doc["redirect_uris"] = ["javascript:alert(1)//"]
        elif name == "big":
            doc["padding"] = "x" * 6 * 1024
        return doc

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        with self._lock:
            self.hits[path] += 1
        host = dict(scope["headers"])[b"host"].decode()
        name = path.rsplit("/", 1)[-1].removesuffix(".json")
        status, cache = 200, "max-age=600"
        if self.broken and name == "flaky":
            status = 500
        if name == "redirect":
            await self._send(send, 302, b"", [(b"location", b"/clients/good.json")])
            return
        if name == "slow":
            await asyncio.sleep(0.3)
        cache = {"no-store": "no-store", "forever": "max-age=999999999"}.get(name, cache)
        body = json.dumps(self.document(f"https://{host}{path}", name)).encode()
        await self._send(send, status, body, [(b"cache-control", cache.encode())])

    @staticmethod
    async def _send(send: Any, status: int, body: bytes, extra: list[tuple[bytes, bytes]]) -> None:
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            *extra,
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> LoopbackPki:
    return make_pki(Path(tmp_path_factory.mktemp("pki")))


@pytest.fixture(scope="module")
def docs() -> ClientDocs:
    return ClientDocs()


@pytest.fixture(scope="module")
def base(docs: ClientDocs, pki: LoopbackPki) -> Iterator[str]:
    with serve_tls(docs, pki) as port:
        yield f"https://localhost:{port}/clients"


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def resolver(pki: LoopbackPki, clock: Clock) -> CimdResolver:
    policy = FetchPolicy.allowing(["localhost"], ["127.0.0.1/32"], ssl_context=pki.client_context())
    return CimdResolver(SafeFetcher(policy), clock=clock)


async def test_happy_path(resolver: CimdResolver, base: str, clock: Clock) -> None:
    url = f"{base}/good.json"
    client = await resolver.resolve(url)
    assert client.client_id == url
    assert client.metadata.client_name == "Test Client"
    assert client.metadata.token_endpoint_auth_method == "none"
    assert client.domain == "localhost"
    assert (client.fetched_at, client.expires_at) == (clock.now, clock.now + 600)
    assert not client.loopback_only
    assert redirect_uri_allowed(client, "https://app.example.com/callback")


async def test_cache_honoured_then_refetched_after_expiry(
    resolver: CimdResolver, base: str, docs: ClientDocs, clock: Clock
) -> None:
    url = f"{base}/cached.json"
    first = await resolver.resolve(url)
    assert await resolver.resolve(url) is first
    assert docs.hits["/clients/cached.json"] == 1
    clock.now += 601
    assert await resolver.resolve(url) is not first
    assert docs.hits["/clients/cached.json"] == 2


@pytest.mark.parametrize(("name", "ttl"), [("no-store", 60), ("forever", 86400)])
async def test_lifetime_clamped(resolver: CimdResolver, base: str, clock: Clock, name: str, ttl: int) -> None:
    client = await resolver.resolve(f"{base}/{name}.json")
    assert client.expires_at - clock.now == ttl


async def test_failures_are_not_cached(resolver: CimdResolver, base: str, docs: ClientDocs) -> None:
    url = f"{base}/flaky.json"
    docs.broken = True
    try:
        for _ in range(2):
            with pytest.raises(ClientMetadataUnavailable):
                await resolver.resolve(url)
    finally:
        docs.broken = False
    assert (await resolver.resolve(url)).client_id == url
    assert docs.hits["/clients/flaky.json"] == 3


async def test_invalid_documents_are_not_cached(resolver: CimdResolver, base: str, docs: ClientDocs) -> None:
    for _ in range(2):
        with pytest.raises(InvalidClientMetadata, match="does not match its URL"):
            await resolver.resolve(f"{base}/mismatch.json")
    assert docs.hits["/clients/mismatch.json"] == 2


@pytest.mark.parametrize(
    ("name", "reason"),
    [("secret-basic", "shared-secret"), ("with-secret", "client_secret"), ("javascript", "redirect_uris")],
)
async def test_invalid_documents_rejected(resolver: CimdResolver, base: str, name: str, reason: str) -> None:
    with pytest.raises(InvalidClientMetadata, match=reason) as info:
        await resolver.resolve(f"{base}/{name}.json")
    assert "s3cret" not in str(info.value)  # document values are not echoed


@pytest.mark.parametrize(("name", "cause"), [("redirect", RedirectRefused), ("big", TooLarge)])
async def test_fetch_rules_apply(
    resolver: CimdResolver, base: str, name: str, cause: type[Exception]
) -> None:
    with pytest.raises(ClientMetadataUnavailable) as info:
        await resolver.resolve(f"{base}/{name}.json")
    assert isinstance(info.value.__cause__, cause)


async def test_ssrf_without_allow_list(pki: LoopbackPki, base: str, docs: ClientDocs) -> None:
    production = CimdResolver(SafeFetcher(FetchPolicy(ssl_context=pki.client_context())))
    before = docs.hits["/clients/good.json"]
    for url in (f"{base}/good.json", "https://10.0.0.1/client.json", "https://169.254.169.254/latest/c.json"):
        with pytest.raises(ClientMetadataUnavailable) as info:
            await production.resolve(url)
        assert isinstance(info.value.__cause__, ForbiddenAddress)
    assert docs.hits["/clients/good.json"] == before


async def test_concurrent_resolves_share_one_fetch(
    resolver: CimdResolver, base: str, docs: ClientDocs
) -> None:
    results = await asyncio.gather(*(resolver.resolve(f"{base}/slow.json") for _ in range(5)))
    assert docs.hits["/clients/slow.json"] == 1
    assert all(r is results[0] for r in results)


async def test_non_url_client_ids_are_not_fetched(
    resolver: CimdResolver, base: str, docs: ClientDocs
) -> None:
    before = sum(docs.hits.values())
    for client_id in (base.replace("https", "http") + "/good.json", "my-client", f"{base}/../good.json"):
        with pytest.raises(InvalidClientId):
            await resolver.resolve(client_id)
    assert sum(docs.hits.values()) == before


@pytest.mark.parametrize(
    ("client_id", "ok"),
    [
        ("https://app.example.com/oauth/client-metadata.json", True),
        ("https://app.example.com:8443/c?v=1", True),
        ("https://app.example.com/", True),
        ("https://app.example.com", False),  # no path
        ("http://app.example.com/c.json", False),
        ("https://app.example.com/c.json#frag", False),
        ("https://user@app.example.com/c.json", False),
        ("https://app.example.com/a/./c.json", False),
        ("https://app.example.com/a/../c.json", False),
        ("https://app.example.com/a/%2e%2E/c.json", False),
        ("https://app.example.com:99999/c.json", False),
        ("https:///c.json", False),
        ("https://app.example.com/c json", False),
        ("client-123", False),
    ],
)
def test_is_cimd_client_id(client_id: str, ok: bool) -> None:
    assert is_cimd_client_id(client_id) is ok


def resolved(*redirect_uris: str) -> ResolvedClient:
    doc = {"client_id": "https://c.example/m.json", "client_name": "c", "redirect_uris": list(redirect_uris)}
    return ResolvedClient(ClientMetadata.model_validate(doc), fetched_at=0, expires_at=1, domain="c.example")


@pytest.mark.parametrize(
    ("asked", "ok"),
    [
        ("https://app.example.com/callback", True),
        ("https://app.example.com/callback/", False),
        ("https://app.example.com:443/callback", False),  # exact string match, no normalisation
        ("https://APP.example.com/callback", False),
        ("http://127.0.0.1:51234/callback", True),  # loopback: any port (RFC 8252 §7.3)
        ("http://127.0.0.1/callback", True),
        ("http://127.0.0.1:51234/other", False),
        ("http://127.0.0.1:99999/callback", False),
        ("http://localhost:4000/cb", True),
        ("http://127.0.0.1:4000/cb", False),  # localhost and 127.0.0.1 are not interchangeable
        ("http://[::1]:4000/callback", False),
        ("http://127.0.0.1:5000/callback#x", False),
        ("http://evil.example:3000/cb", False),
    ],
)
def test_redirect_uri_allowed(asked: str, ok: bool) -> None:
    client = resolved(
        "https://app.example.com/callback", "http://127.0.0.1/callback", "http://localhost:3000/cb"
    )
    assert redirect_uri_allowed(client, asked) is ok


@pytest.mark.parametrize(
    "uri",
    [
        "javascript:alert(1)",
        "data:text/html,hi",
        "http://app.example.com/cb",
        "https://app.example.com/cb#f",
        "https://good.example@evil.example/cb",
        "com.example.app:/cb",
    ],
)
def test_bad_redirect_uris_rejected(uri: str) -> None:
    with pytest.raises(ValueError, match="redirect_uris"):
        resolved(uri)


def test_loopback_only_flag_for_consent_warning() -> None:
    assert resolved("http://127.0.0.1/cb", "http://[::1]/cb").loopback_only
    assert not resolved("http://127.0.0.1/cb", "https://a.example/cb").loopback_only


@pytest.mark.parametrize(
    ("extra", "ok"),
    [
        ({"token_endpoint_auth_method": "private_key_jwt"}, False),  # needs keys
        ({"token_endpoint_auth_method": "private_key_jwt", "jwks_uri": "https://c.example/jwks"}, True),
        ({"token_endpoint_auth_method": "client_secret_post"}, False),
        ({"token_endpoint_auth_method": "client_secret_jwt"}, False),
        ({"jwks_uri": "http://c.example/jwks"}, False),
        ({"jwks": {"keys": []}, "jwks_uri": "https://c.example/jwks"}, False),
        ({"redirect_uris": []}, False),
        ({"client_name": ""}, False),
        ({"client_secret_expires_at": 0}, False),
    ],
)
def test_metadata_model(extra: dict[str, Any], ok: bool) -> None:
    doc = {
        "client_id": "https://c.example/m.json",
        "client_name": "c",
        "redirect_uris": ["https://c.example/cb"],
    }
    doc.update(extra)
    if ok:
        ClientMetadata.model_validate(doc)
    else:
        with pytest.raises(ValidationError):
            ClientMetadata.model_validate(doc)


def test_resolver_rejects_inverted_ttls(pki: LoopbackPki) -> None:
    fetcher = SafeFetcher(FetchPolicy(ssl_context=pki.client_context()))
    with pytest.raises(ValueError, match="ttl"):
        CimdResolver(fetcher, min_ttl=600, default_ttl=60)
