"""``upstream_oauth`` step-up (MCP authorization, "Scope Challenge Handling"): alice connected the
upstream with ``crm:read``; a call the upstream refuses with 403 ``insufficient_scope``
``scope="crm:write"`` gets her a link to reconnect asking for ``crm:read crm:write`` (the union),
and after reconnecting the same call succeeds with her new token. The upstream's challenge never
reaches the client, and a refusal that reconnecting cannot fix is not turned into a link."""

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
from tests.support.federation_checks import audit_records
from tests.support.gateway import Gateway, run_gateway
from tests.support.idp import run_saas_provider
from tests.support.oauth import REDIRECT_URI, add_users, user_token
from tests.support.saas import SaasUpstream, saas_upstream_for

pytestmark = pytest.mark.timeout(180)
PASSWORD = "correct horse battery"
CLIENTS = [{"client_id": "claude", "name": "Claude", "redirect_uris": [REDIRECT_URI], "trusted": True}]


def gateway_for(tmp: Path, upstream: SaasUpstream) -> Any:
    extra = {"auth": {"enabled": True, "scopes": ["mcp"], "required_scopes": ["mcp"]}, "clients": CLIENTS}
    auth = {"type": "upstream_oauth", "label": "Acme CRM", "scopes": ["crm:read"]}
    return run_gateway(tmp, [{"name": "crm", "http": {"url": upstream.url}, "auth": auth}], extra=extra)


async def call(
    gateway: Gateway, token: str, tool: str, arguments: dict[str, Any], mode: str = "legacy"
) -> tuple[bool, str]:
    """One tool call as a client without URL elicitation: ``legacy`` (2025-11-25, a session) or
    ``auto`` (2026-07-28)."""
    async with (
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=60) as http,
        Client(streamable_http_client(gateway.url("crm"), http_client=http), mode=mode) as client,  # type: ignore[arg-type]
    ):
        result = await client.call_tool(tool, arguments)
    return bool(result.is_error), "".join(getattr(c, "text", "") for c in result.content)


async def connect(browser: httpx2.AsyncClient, gateway: Gateway, query: str = "") -> list[str]:
    """Continue on the connect page, sign in at the provider, land on the callback: the scopes asked."""
    at_provider = await start_connect(browser, gateway.base, "crm", query)
    asked = parse_qs(urlsplit(at_provider).query)["scope"][0].split()
    back = await provider_callback(at_provider, "alice", gateway.base)
    done = await browser.get(back)
    assert done.status_code == 200, (back, gateway.tail(30))
    return asked


@pytest.mark.parametrize(
    ("mode", "upstream_era"),
    [
        ("legacy", "both"),  # the same era end to end: passthrough
        ("auto", "legacy"),  # a 2026-07-28 client, a 2025-11-25-only upstream: bridged by Bastion
    ],
)
async def test_a_403_insufficient_scope_asks_to_reconnect_with_the_union(
    flow_tmp: Path, mode: str, upstream_era: str
) -> None:
    update = {"id": "2", "value": "renewed"}
    with (
        run_saas_provider(flow_tmp, extra={"registration": True}) as saas,
        saas_upstream_for(saas, flow_tmp, prm=True, args=["--era", upstream_era]) as upstream,
        gateway_for(flow_tmp, upstream) as gateway,
    ):
        await add_users(gateway, {"alice": PASSWORD})
        grant = await user_token(
            gateway.base, client_id="claude", resource=gateway.url("crm"), username="alice", password=PASSWORD
        )
        token = str(grant["access_token"])
        async with httpx2.AsyncClient(follow_redirects=False, timeout=30) as browser:
            await sign_in(browser, gateway.base, "alice", PASSWORD)
            assert set(await connect(browser, gateway)) == {"crm:read"}  # as configured
            failed, text = await call(gateway, token, "whoami", {}, mode)
            assert not failed, text
            assert "crm:write" not in json.loads(text)["scopes"]

            failed, text = await call(gateway, token, "crm_update", update, mode)
            assert failed, text
            assert "more permissions" in text, text
            assert "crm:write" in text, text
            assert "insufficient_scope" not in text
            assert "resource_metadata" not in text
            link = text.rsplit(" ", 1)[-1]
            assert link.startswith(f"{gateway.base}/connect/crm?intent="), text
            page = await browser.get(link)
            assert "crm:write" in page.text  # the confirm page says what will be asked for
            asked = await connect(browser, gateway, "?" + urlsplit(link).query)
            assert set(asked) >= {"crm:read", "crm:write"}  # the union, not just the new one

        failed, text = await call(gateway, token, "crm_update", update, mode)
        assert not failed, text
        assert json.loads(text) == {"sub": "crm-user-alice", **update}
        failed, text = await call(gateway, token, "whoami", {}, mode)
        assert {"crm:read", "crm:write"} <= set(json.loads(text)["scopes"])
        if upstream_era == "legacy":
            assert "upstream crm speaks: legacy=True modern=False" in gateway.log()
            assert any(r["era"] == "modern" for r in audit_records(gateway, lines=200) if r.get("era"))
        refused = [r for r in upstream.seen() if r["status"] == 403]
        assert len(refused) == 1  # one refusal, one reconnect, no retry loop against the upstream
