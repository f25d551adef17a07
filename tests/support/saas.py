"""The SaaS side of per-user connections: an MCP upstream (``tests/fixtures/saas_upstream.py``)
that wants the SaaS provider's tokens (``tests.support.idp.run_saas_provider``) or an API key on
every request, and tells whom it saw.

    with run_saas_provider(tmp, redirect_uris=[CALLBACK]) as saas, saas_upstream_for(saas, tmp) as up:
        ...  # Bastion's connection at saas, its upstream at up.url
        assert up.seen()[-1]["sha256"] == credential_hash(token)
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import secrets
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx2
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client

from tests.support.idp import SaasProvider
from tests.support.procs import tail
from tests.support.servers import run_fixture_server


def credential_hash(value: str) -> str:
    """What ``/__seen`` records of a credential (its SHA-256, hex): the bare token or key, no
    ``Bearer `` prefix."""
    return hashlib.sha256(value.encode()).hexdigest()


@dataclass
class SaasUpstream:
    url: str  # the MCP endpoint, http://127.0.0.1:PORT/mcp
    base: str  # http://127.0.0.1:PORT
    log_path: Path
    keys_file: Path | None = None

    def seen(self) -> list[dict[str, Any]]:
        """Every request to /mcp so far, oldest first: ``{"sha256", "kind" ("bearer" | "api_key"
        | None), "sub", "client_id", "status" (200 = passed to the MCP server, 401, 403), "rpc"
        (JSON-RPC methods), "tool" (tools called)}``."""
        return list(self._call("GET"))

    def reset_seen(self) -> None:
        self._call("DELETE")

    def subs(self) -> list[str | None]:
        """The ``sub`` of each request seen (None: refused before anyone was recognised)."""
        return [r["sub"] for r in self.seen()]

    def set_api_keys(self, keys: Mapping[str, str | Mapping[str, Any]]) -> None:
        """Replace the valid API keys (``{key: user}`` or ``{key: {"sub", "scopes"}}``); the
        server re-reads them on its next request."""
        assert self.keys_file is not None, "started without api_keys"
        tmp = self.keys_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(dict(keys)))
        tmp.replace(self.keys_file)

    def tail(self, lines: int = 60) -> str:
        return tail(self.log_path, lines)

    def _call(self, method: str) -> Any:
        request = urllib.request.Request(f"{self.base}/__seen", method=method)
        try:
            with urllib.request.urlopen(request, timeout=10) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as err:
            raise AssertionError(f"{method} /__seen: HTTP {err.code}") from err


@contextlib.contextmanager
def run_saas_upstream(
    tmp: Path,
    *,
    issuer: str | None = None,
    jwks_url: str | None = None,
    introspection_url: str | None = None,
    client_id: str | None = None,
    client_secret: str | None = None,
    audience: str | None = None,
    required_scopes: Sequence[str] = (),
    api_key_header: str | None = None,
    api_keys: Mapping[str, str | Mapping[str, Any]] | None = None,
    args: Sequence[str] = (),
) -> Iterator[SaasUpstream]:
    """Start ``saas_upstream.py`` on a free loopback port (own process group), wait until it
    answers, stop it at exit. Bearer tokens: JWTs checked with ``jwks_url`` (default: from
    ``issuer``'s discovery), ``iss`` = ``issuer``, ``aud`` ∋ ``audience``; other tokens by
    introspection at ``introspection_url`` as ``client_id`` / ``client_secret``. API keys:
    ``api_key_header`` with ``api_keys`` (written to a file in ``tmp``). ``args``: more of the
    script's options (``--json-response``, ``--stateless``)."""
    argv: list[str] = []
    for flag, value in (
        ("--issuer", issuer),
        ("--jwks-url", jwks_url),
        ("--introspection-url", introspection_url),
        ("--client-id", client_id),
        ("--client-secret", client_secret),
        ("--audience", audience),
        ("--api-key-header", api_key_header),
    ):
        if value is not None:
            argv += [flag, value]
    for scope in required_scopes:
        argv += ["--required-scope", scope]
    tmp.mkdir(parents=True, exist_ok=True)
    keys_file = None
    if api_key_header is not None:
        keys_file = tmp / f"saas-api-keys-{secrets.token_hex(4)}.json"
        keys_file.write_text(json.dumps(dict(api_keys or {})))
        argv += ["--api-keys", str(keys_file)]
    with run_fixture_server("saas_upstream.py", tmp, *argv, *args) as url:
        port = urlsplit(url).port
        base = f"http://127.0.0.1:{port}"
        yield SaasUpstream(url, base, tmp / f"saas_upstream-{port}.log", keys_file)


@contextlib.contextmanager
def saas_upstream_for(
    provider: SaasProvider,
    tmp: Path,
    *,
    introspection: bool = False,
    required_scopes: Sequence[str] = (),
    args: Sequence[str] = (),
    prm: bool = False,
) -> Iterator[SaasUpstream]:
    """:func:`run_saas_upstream` accepting ``provider``'s access tokens for its resource: JWTs
    checked with its JWKS, or (``introspection=True``) any token introspected as its
    introspector client (the provider must then issue opaque tokens:
    ``access_token_format="opaque"``). ``prm=True``: an MCP-authorization resource server (RFC 9728
    metadata naming ``provider``; tokens must be for its own URL, the RFC 8707 resource)."""
    if introspection:
        options: dict[str, Any] = {
            "introspection_url": provider.introspection_endpoint,
            "client_id": provider.introspector["client_id"],
            "client_secret": provider.introspector["client_secret"],
        }
    else:
        options = {"jwks_url": provider.jwks_uri}
    with run_saas_upstream(
        tmp,
        issuer=provider.issuer,
        audience=None if prm else provider.resource,
        required_scopes=required_scopes,
        args=[*args, *(["--prm", provider.issuer] if prm else [])],
        **options,
    ) as upstream:
        yield upstream


async def call_tool(
    url: str,
    name: str,
    arguments: Mapping[str, Any] | None = None,
    *,
    headers: Mapping[str, str],
) -> Any:
    """Call one tool at an MCP server with the official SDK client, sending ``headers`` on every
    request; the SDK's result (``.is_error``, ``.content``)."""
    async with (
        httpx2.AsyncClient(headers=dict(headers), timeout=20) as http,
        Client(streamable_http_client(url, http_client=http)) as client,
    ):
        return await client.call_tool(name, dict(arguments or {}))


def result_json(result: Any) -> Any:
    """The JSON text content of a tool result (whoami, crm_search, crm_update)."""
    assert not result.is_error, " ".join(getattr(c, "text", "") for c in result.content)
    return json.loads("".join(getattr(c, "text", "") for c in result.content))


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
