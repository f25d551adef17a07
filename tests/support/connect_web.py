"""The stack the connect-page tests run against (``tests/flows/test_connect_web.py``): the real
``bastion serve`` with OAuth connections at a real SaaS provider (oidc-provider), one whose
token endpoint is a closed port, one with a wrong client secret, one whose provider is not
running yet, and an API-key connection; an MCP upstream for each kind. Plus what those tests
check on every refusal: a plain page, nothing stored, nothing secret anywhere."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client

from bastion.config.loader import load_config
from bastion.core.records import VaultRecord
from bastion.oauth.keystore import load_master_key
from bastion.vault.envelope import VaultCipher
from bastion.vault.keys import load_vault_keys
from tests.support.federation_checks import audit_records
from tests.support.gateway import Gateway, run_gateway
from tests.support.idp import SAAS_CLIENT_ID, SAAS_CLIENT_SECRET, SaasProvider, run_saas_provider
from tests.support.oauth import REDIRECT_URI, gateway_store, hidden_fields, stored_grants
from tests.support.procs import free_port
from tests.support.saas import SaasUpstream, run_saas_upstream, saas_upstream_for

CLIENTS = [{"client_id": "claude", "name": "Claude", "redirect_uris": [REDIRECT_URI], "trusted": True}]
CRM_SCOPES = ["openid", "email", "crm:read", "offline_access"]
TICKETS_INSTRUCTIONS = "Create a key under Settings > API keys <b>not</b> your password."
TICKETS_KEY_USER = "tickets-user-frank"


@dataclass
class ConnectStack:
    gateway: Gateway
    saas: SaasProvider
    crm: SaasUpstream
    tickets: SaasUpstream
    tmp: Path
    late_port: int  # the "late" connection's provider: nothing listens here until a test starts it

    @property
    def callback(self) -> str:
        return f"{self.gateway.base}/connect/callback"


def _oauth(name: str, label: str, issuer: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "type": "oauth",
        "label": label,
        "client_id": SAAS_CLIENT_ID,
        "client_secret": SAAS_CLIENT_SECRET,
        "issuer": issuer,
        "scopes": CRM_SCOPES,
        "account_claim": "email",
        **extra,
    }


@contextlib.contextmanager
def connect_stack(tmp: Path, tickets_key: str) -> Iterator[ConnectStack]:
    """``tickets_key`` is the API key the tickets upstream accepts (as ``TICKETS_KEY_USER``)."""
    ports: list[int] = []
    while len(ports) < 3:  # the gateway's, a closed one, the late provider's: all different
        ports += [p for p in [free_port()] if p not in ports]
    port, closed, late = ports
    callback = f"http://127.0.0.1:{port}/connect/callback"
    with (
        run_saas_provider(tmp, redirect_uris=[callback]) as saas,
        saas_upstream_for(saas, tmp) as crm,
        run_saas_upstream(
            tmp, api_key_header="x-api-key", api_keys={tickets_key: TICKETS_KEY_USER}
        ) as tickets,
    ):
        connections = [
            _oauth("crm", "Acme CRM", saas.issuer),
            _oauth("crm-down", "Down CRM", saas.issuer, token_endpoint=f"http://127.0.0.1:{closed}/token"),
            _oauth("crm-refused", "Refusing CRM", saas.issuer, client_secret="not-the-secret"),
            _oauth("late", "Late CRM", f"http://127.0.0.1:{late}"),
            {"name": "tickets", "type": "api_key", "label": "Tickets", "instructions": TICKETS_INSTRUCTIONS},
        ]
        extra = {
            "auth": {"enabled": True, "scopes": ["mcp"], "required_scopes": ["mcp"]},
            "clients": CLIENTS,
            "connections": connections,
        }
        upstreams = [
            {"name": "crm", "http": {"url": crm.url}, "auth": {"type": "user_oauth", "connection": "crm"}},
            {
                "name": "tickets",
                "http": {"url": tickets.url},
                "auth": {"type": "user_api_key", "connection": "tickets"},
            },
        ]
        with run_gateway(tmp, upstreams, extra=extra, port=port) as gateway:
            yield ConnectStack(gateway, saas, crm, tickets, tmp, late)


# -- the vault, opened next to the running gateway -------------------------------------------------


async def vault_record(gateway: Gateway, user_id: str, connection: str) -> VaultRecord | None:
    async with gateway_store(gateway) as store:
        return await store.vault.get(user_id, connection)


def opened(gateway: Gateway, record: VaultRecord) -> dict[str, Any]:
    """The secret a record holds, opened with the gateway's own vault keys."""
    settings = load_config(gateway.config_path, os.environ)
    cipher = VaultCipher(load_vault_keys(settings, load_master_key(settings, create=False)))
    return cipher.open(record)


# -- the pages ------------------------------------------------------------------------------------


def states(stack: ConnectStack) -> int:
    """Provider flows started (and not yet finished) in the gateway."""
    return stored_grants(stack.gateway, "connect_state")


async def to_provider(http: httpx2.AsyncClient, base: str, connection: str, url: str = "") -> str:
    """Open the confirm page (``url``: default ``/connect/<connection>``) and Continue; where the
    gateway sends the browser (its 303)."""
    page = await http.get(url or f"{base}/connect/{connection}")
    assert page.status_code == 200, page.text[:800]
    continued = await http.post(
        f"{base}/connect/{connection}", data={**hidden_fields(page.text), "decision": "continue"}
    )
    assert continued.status_code == 303, continued.text[:800]
    return str(continued.headers["location"])


def section(listing: str, connection: str) -> str:
    """One connection's part of "My connections"."""
    return listing.split(f'data-connection="{connection}"', 1)[1].split("</section>", 1)[0]


# -- what every refusal must look like -------------------------------------------------------------


def assert_plain_page(response: httpx2.Response, status: int, *secrets: str) -> str:
    """A page of Bastion's own with ``status``: HTML, no redirect, no stack trace, and none of
    ``secrets`` in it. Its text."""
    assert response.status_code == status, (response.status_code, response.text[:800])
    assert response.headers["content-type"].startswith("text/html")
    assert "location" not in response.headers
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["referrer-policy"] == "no-referrer"
    text = response.text
    for marker in ("Traceback", "Exception", "Internal Server Error", 'File "'):
        assert marker not in text, text[:800]
    for secret in secrets:
        assert secret not in text
    return text


def assert_not_leaked(gateway: Gateway, secrets: Sequence[str]) -> list[dict[str, Any]]:
    """None of ``secrets`` (tokens, codes, states, keys) in the gateway's log or audit trail, and
    no stack trace in the log. The audit records."""
    log = gateway.log()
    records = audit_records(gateway, lines=2000)
    audit = json.dumps(records)
    assert "Traceback" not in log, gateway.tail()
    for secret in secrets:
        assert secret, "an empty secret proves nothing"
        assert secret not in log
        assert secret not in audit
    return records


def connection_events(records: Sequence[dict[str, Any]], subject: str | None) -> list[tuple[str, str]]:
    """``(event, detail)`` of the ``connection.*`` audit records about ``subject``, oldest first."""
    return [
        (r["event"], r["detail"] or "")
        for r in records
        if r["event"].startswith("connection.") and r["subject"] == subject
    ]


# -- an agent's connect link (a URL elicitation, as a client without URL mode gets it) -------------


async def connect_link(url: str, token: str, tool: str = "whoami") -> str:
    """Call ``tool`` at ``url`` as a 2025-11-25 client without URL elicitation: the tool error
    carries the link to connect; returns it."""
    async with (
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=60) as http,
        Client(streamable_http_client(url, http_client=http), mode="legacy") as client,
    ):
        result = await client.call_tool(tool, {})
    assert result.is_error, result
    text = "".join(getattr(c, "text", "") for c in result.content)
    return text.rsplit(" ", 1)[-1]
