"""``upstream_oauth`` end to end (issue #7): Bastion is the MCP client of an OAuth-protected
upstream. The upstream (tests/fixtures/saas_upstream.py ``--prm``) publishes RFC 9728 metadata
naming a real oidc-provider (``run_saas_provider`` with dynamic registration on) and accepts only
tokens whose ``aud`` is its own URL. Bastion discovers both, registers itself (RFC 7591), and
alice's first call gets the link to connect; the connect flow (httpx as her browser) asks with
PKCE S256 and ``resource`` (RFC 8707), the callback's ``iss`` is checked (RFC 9207), and her
next call reaches the upstream with her own token. A restarted Bastion reuses the registration."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx2
import pytest
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client

from tests.support.connect import provider_callback, sign_in, start_connect
from tests.support.gateway import Gateway, run_gateway
from tests.support.idp import SaasProvider, run_saas_provider
from tests.support.oauth import REDIRECT_URI, add_users, user_token
from tests.support.procs import free_port
from tests.support.saas import SaasUpstream, saas_upstream_for

pytestmark = pytest.mark.timeout(180)
PASSWORD = "correct horse battery"
CLIENTS = [{"client_id": "claude", "name": "Claude", "redirect_uris": [REDIRECT_URI], "trusted": True}]


def gateway_for(tmp: Path, upstream: SaasUpstream, port: int) -> Any:
    extra = {"auth": {"enabled": True, "scopes": ["mcp"], "required_scopes": ["mcp"]}, "clients": CLIENTS}
    upstreams = [
        {
            "name": "crm",
            "http": {"url": upstream.url},
            "auth": {"type": "upstream_oauth", "label": "Acme CRM"},
        }
    ]
    return run_gateway(tmp, upstreams, extra=extra, port=port)


async def call(gateway: Gateway, token: str, tool: str = "whoami") -> tuple[bool, str]:
    """One tool call as a 2025-11-25 client without URL elicitation: (is_error, text)."""
    async with (
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=60) as http,
        Client(streamable_http_client(gateway.url("crm"), http_client=http), mode="legacy") as client,
    ):
        result = await client.call_tool(tool, {})
    return bool(result.is_error), "".join(getattr(c, "text", "") for c in result.content)


def registrations(saas: SaasProvider) -> list[str]:
    return [line for line in Path(saas.log_path).read_text().splitlines() if "/reg" in line]


async def test_discover_register_connect_and_call(flow_tmp: Path) -> None:
    port = free_port()
    with (
        run_saas_provider(flow_tmp, extra={"registration": True}) as saas,
        saas_upstream_for(saas, flow_tmp, prm=True) as upstream,
    ):
        with gateway_for(flow_tmp, upstream, port) as gateway:
            await add_users(gateway, {"alice": PASSWORD})
            token = str(
                (
                    await user_token(
                        gateway.base,
                        client_id="claude",
                        resource=gateway.url("crm"),
                        username="alice",
                        password=PASSWORD,
                    )
                )["access_token"]
            )
            failed, text = await call(gateway, token)
            assert failed, text
            link = text.rsplit(" ", 1)[-1]
            assert link.startswith(f"{gateway.base}/connect/crm?intent="), text
            async with httpx2.AsyncClient(follow_redirects=False, timeout=30) as browser:
                await sign_in(browser, gateway.base, "alice", PASSWORD)
                at_provider = await start_connect(browser, gateway.base, "crm", "?" + link.split("?", 1)[1])
                query = parse_qs(urlsplit(at_provider).query)
                assert at_provider.startswith(saas.issuer), at_provider
                assert query["resource"] == [upstream.url]
                assert query["code_challenge_method"] == ["S256"]
                assert query["client_id"][0] not in ("", "bastion-connector")  # registered dynamically
                client_id = query["client_id"][0]
                back = await provider_callback(at_provider, "alice", gateway.base)
                assert parse_qs(urlsplit(back).query).get("iss") == [saas.issuer], back
                done = await browser.get(back)
                assert done.status_code == 200, (back, gateway.tail(30))
                assert "Connected Acme CRM" in done.text
                mine = await browser.get(f"{gateway.base}/connections")
                assert "Acme CRM" in mine.text
                # a forged iss is refused (RFC 9207): the state of a fresh attempt is not redeemed
                again = await start_connect(browser, gateway.base, "crm")
                state = parse_qs(urlsplit(again).query)["state"][0]
                forged = await browser.get(
                    f"{gateway.base}/connect/callback?state={state}&code=x&iss=https%3A%2F%2Fevil.example"
                )
                assert forged.status_code == 400
            failed, text = await call(gateway, token)
            assert not failed, text
            assert json.loads(text)["sub"] == "crm-user-alice"
            passed = [r for r in upstream.seen() if r["status"] == 200]
            assert passed
            assert all(r["sub"] == "crm-user-alice" for r in passed)
            assert all(r["client_id"] == client_id for r in passed)
        # a restart: the registration kept in the vault store is reused, alice stays connected
        with gateway_for(flow_tmp, upstream, port) as gateway:
            failed, text = await call(gateway, token)
            assert not failed, text
            assert json.loads(text)["sub"] == "crm-user-alice"
            log = gateway.tail(400)
            assert f"client {client_id} at {saas.issuer} (dcr)" in log, log
