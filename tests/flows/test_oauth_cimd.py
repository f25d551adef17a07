"""Client ID Metadata Documents against the real ``bastion serve``: documents served over real
HTTPS on loopback (a test CA Bastion is told to trust, ``localhost`` allow-listed), the
consent page naming the publishing domain, and every document or URL Bastion must refuse —
on a page, never by redirecting to a redirect URI nobody has vouched for."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from tests.support.gateway import Gateway, run_gateway
from tests.support.oauth import (
    REDIRECT_URI,
    add_users,
    authorize_url,
    browser,
    demo_upstream,
    exchange_code,
    hidden_fields,
    pkce,
    query_of,
)
from tests.support.tls import make_pki, serve_tls

PASSWORD = "correct horse battery"


class DocumentServer:
    """Serves client metadata documents whose ``client_id`` is the URL they were fetched from
    (built from the Host header), and remembers every path asked for."""

    def __init__(self) -> None:
        self.hits: list[str] = []
        self.app = Starlette(routes=[Route("/{name:path}", self.serve)])

    async def serve(self, request: Request) -> Response:
        name = request.path_params["name"]
        self.hits.append(f"{request.headers.get('host')}/{name}")
        url = f"https://{request.headers['host']}/{name}"
        doc: dict[str, Any] = {
            "client_id": url,
            "client_name": "Metadata App",
            "redirect_uris": [REDIRECT_URI],
            "grant_types": ["authorization_code", "refresh_token"],
            "token_endpoint_auth_method": "none",
        }
        if name == "good.json":
            return JSONResponse(doc, headers={"cache-control": "max-age=300"})
        if name == "mismatch.json":
            return JSONResponse({**doc, "client_id": url.replace("mismatch", "good")})
        if name == "redirect.json":
            return RedirectResponse(url.replace("redirect", "good"), 302)
        if name == "big.json":
            return JSONResponse({**doc, "description": "x" * 6000})
        if name == "secret.json":
            return JSONResponse({**doc, "token_endpoint_auth_method": "client_secret_basic"})
        if name == "text.json":
            return Response(JSONResponse(doc).body, media_type="text/plain")
        return JSONResponse({"error": "not found"}, 404)


@pytest.fixture(scope="module")
def docs() -> DocumentServer:
    return DocumentServer()


@pytest.fixture(scope="module")
def doc_port(flow_tmp: Path, docs: DocumentServer) -> Iterator[tuple[int, Path]]:
    pki_dir = flow_tmp / "cimd-pki"
    pki_dir.mkdir(exist_ok=True)
    pki = make_pki(pki_dir)
    ca_file = pki_dir / "ca.pem"
    pki.ca.cert_pem.write_to_path(str(ca_file))
    with serve_tls(docs.app, pki) as port:
        yield port, ca_file


@pytest.fixture(scope="module")
def gw(flow_tmp: Path, doc_port: tuple[int, Path]) -> Iterator[Gateway]:
    _, ca_file = doc_port
    documents = {"allowed_hosts": ["localhost"], "ca_file": str(ca_file)}
    auth = {"enabled": True, "client_metadata_documents": documents}
    with run_gateway(flow_tmp, [demo_upstream("a", flow_tmp)], extra={"auth": auth}) as g:
        yield g


@pytest.fixture
async def http(gw: Gateway, users: dict[str, str]) -> AsyncIterator[httpx2.AsyncClient]:
    async with browser() as client:
        yield client


@pytest.fixture(scope="module")
async def users(gw: Gateway) -> dict[str, str]:
    return await add_users(gw, {"alice": PASSWORD})


def doc_url(doc_port: tuple[int, Path], name: str, host: str = "localhost") -> str:
    return f"https://{host}:{doc_port[0]}/{name}"


async def refused_on_a_page(http: httpx2.AsyncClient, gw: Gateway, client_id: str, why: str) -> None:
    url = authorize_url(gw.base, client_id=client_id, resource=gw.url("a"), challenge=pkce().challenge)
    response = await http.get(url)
    assert response.status_code == 400, response.text[:300]
    assert "location" not in response.headers
    assert "cannot sign in" in response.text
    assert why in response.text, response.text


async def test_document_client_signs_in_and_consent_names_the_domain(
    gw: Gateway, http: httpx2.AsyncClient, doc_port: tuple[int, Path]
) -> None:
    client_id = doc_url(doc_port, "good.json")
    proof = pkce()
    url = authorize_url(gw.base, client_id=client_id, resource=gw.url("a"), challenge=proof.challenge)
    start = await http.get(url)
    assert start.status_code == 303
    login = await http.get(gw.base + start.headers["location"])
    signed_in = await http.post(
        f"{gw.base}/login", data=hidden_fields(login.text) | {"username": "alice", "password": PASSWORD}
    )
    consent = await http.get(gw.base + signed_in.headers["location"])
    assert consent.status_code == 200
    assert "Metadata published by localhost." in consent.text
    assert "This app runs on your computer." in consent.text  # loopback-only redirect URIs
    assert "Metadata App" in consent.text
    final = await http.post(f"{gw.base}/consent", data={**hidden_fields(consent.text), "decision": "allow"})
    query = query_of(final.headers["location"])
    assert query["iss"] == gw.base
    token = await exchange_code(
        http, gw.base, code=query["code"], verifier=proof.verifier, client_id=client_id, resource=gw.url("a")
    )
    assert token.status_code == 200, token.text
    assert "refresh_token" in token.json()


async def test_redirect_uri_must_be_in_the_document(
    gw: Gateway, http: httpx2.AsyncClient, doc_port: tuple[int, Path]
) -> None:
    url = authorize_url(
        gw.base,
        client_id=doc_url(doc_port, "good.json"),
        resource=gw.url("a"),
        challenge=pkce().challenge,
        redirect_uri="https://attacker.example/cb",
    )
    response = await http.get(url)
    assert response.status_code == 400
    assert "location" not in response.headers
    assert "redirect_uri is not registered" in response.text


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("mismatch.json", "client_id does not match its URL"),
        ("secret.json", "shared-secret authentication"),
        ("big.json", "could not be fetched"),
        ("text.json", "could not be fetched"),
        ("missing.json", "could not be fetched"),
    ],
)
async def test_unacceptable_documents_are_refused_on_a_page(
    gw: Gateway,
    http: httpx2.AsyncClient,
    doc_port: tuple[int, Path],
    docs: DocumentServer,
    name: str,
    why: str,
) -> None:
    await refused_on_a_page(http, gw, doc_url(doc_port, name), why)
    assert docs.hits[-1].endswith("/" + name)  # it was fetched, and refused for its content


async def test_redirecting_document_is_not_followed(
    gw: Gateway, http: httpx2.AsyncClient, doc_port: tuple[int, Path], docs: DocumentServer
) -> None:
    before = len(docs.hits)
    await refused_on_a_page(http, gw, doc_url(doc_port, "redirect.json"), "could not be fetched")
    assert [hit.rsplit("/", 1)[1] for hit in docs.hits[before:]] == ["redirect.json"]


@pytest.mark.parametrize(
    "target",
    [
        "https://127.0.0.1:{port}/good.json",  # loopback, not allow-listed (only "localhost" is)
        "https://[::1]:{port}/good.json",
        "https://169.254.169.254/latest/meta-data/client.json",
        "https://10.0.0.1/client.json",
        "https://192.168.1.1/client.json",
    ],
)
async def test_special_use_addresses_are_never_fetched(
    gw: Gateway, http: httpx2.AsyncClient, doc_port: tuple[int, Path], docs: DocumentServer, target: str
) -> None:
    before = len(docs.hits)
    client_id = target.format(port=doc_port[0])
    await refused_on_a_page(http, gw, client_id, "address Bastion does not fetch from")
    assert docs.hits[before:] == []


async def test_plain_http_client_id_is_not_a_document_url(
    gw: Gateway, http: httpx2.AsyncClient, doc_port: tuple[int, Path], docs: DocumentServer
) -> None:
    before = len(docs.hits)
    await refused_on_a_page(http, gw, f"http://localhost:{doc_port[0]}/good.json", "unknown client")
    assert docs.hits[before:] == []
