"""Bastion as the client under test of the conformance suite's Enterprise-Managed Authorization
scenario (``auth/enterprise-managed-authorization``; ``auth/cross-app-access-complete-flow`` in
0.1.16). The harness runs ``<this script> <serverUrl>`` with the scenario's context in
``MCP_CONFORMANCE_CONTEXT``: a mock enterprise IdP (token exchange → ID-JAG), a mock
authorization server (jwt-bearer) and an MCP server that wants the AS's token.

What this script does is what a deployment does (shared/interop/README.md §3):
1. starts Bastion with the MCP server as upstream ``conf`` declared ``auth: {type: ema}``, the
   mock IdP as identity provider ``corp`` (Bastion's client there: ``idp_client_id``), and
   Bastion's client at the AS (``client_id``/``client_secret``);
2. plays the user: alice signed in to Bastion through ``corp`` earlier — her IdP session (with
   the scenario's ID token, sealed as a sign-in seals it) is put in Bastion's store — and her MCP
   client holds a Bastion token for /mcp/conf (authorization code flow, password sign-in);
3. lists and calls the tools through Bastion with the official Python SDK client: Bastion
   exchanges the ID token for an ID-JAG at the IdP, redeems it at the AS and calls the server;
4. stops Bastion and exits 0 (1 when a step failed).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))

import httpx2  # noqa: E402
from mcp import ClientSession  # noqa: E402
from mcp.client.streamable_http import streamable_http_client  # noqa: E402

from bastion.config.loader import load_config  # noqa: E402
from bastion.core.crypto import derive_key, seal_text  # noqa: E402
from bastion.core.records import IdpSession  # noqa: E402
from bastion.oauth.keystore import load_master_key  # noqa: E402
from tests.support.gateway import Gateway, run_gateway  # noqa: E402
from tests.support.oauth import REDIRECT_URI, gateway_store, user_token  # noqa: E402

PASSWORD = "correct horse battery staple"


async def _signed_in_at_idp(gateway: Gateway, id_token: str) -> None:
    """alice's earlier sign-in through ``corp``, as the federation callback records it."""
    settings = load_config(gateway.config_path, os.environ)
    key = derive_key(load_master_key(settings), "idp-session")
    async with gateway_store(gateway) as store:
        user = await store.users.get_by_username("alice")
        assert user is not None
        now = time.time()
        session_id = "is_" + secrets.token_urlsafe(18)
        await store.idp_sessions.put(
            IdpSession(
                session_id=session_id,
                user_id=user.user_id,
                provider="corp",
                sealed_refresh_token=None,
                auth_time=now,
                expires_at=now + 3600,
                checked_at=now,
                sealed_id_token=seal_text(key, id_token, session_id),
                id_token_expires_at=now + 3000,
            )
        )


async def _use_tools(url: str, token: str) -> None:
    async with (
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30) as http,
        streamable_http_client(url, http_client=http) as (read, write, *_),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        tools = await session.list_tools()
        print("tools:", [t.name for t in tools.tools])
        for tool in tools.tools[:1]:
            result = await session.call_tool(tool.name, {})
            print("call:", tool.name, "error" if result.isError else "ok")


async def main(server_url: str) -> int:
    context = json.loads(os.environ["MCP_CONFORMANCE_CONTEXT"])
    with tempfile.TemporaryDirectory(prefix="bastion-ema-client-") as tmp:
        upstream = {
            "name": "conf",
            "http": {"url": server_url},
            "auth": {
                "type": "ema",
                "id_jag_issuer": "corp",
                "client_id": context["client_id"],
                "client_secret": context["client_secret"],
            },
        }
        extra = {
            "auth": {"enabled": True},
            "identity_providers": [
                {
                    "name": "corp",
                    "preset": "oidc",
                    "issuer": context["idp_issuer"],
                    "client_id": context["idp_client_id"],
                    "client_secret": "not-checked-by-the-mock",
                    "refresh": False,
                }
            ],
            "clients": [
                {"client_id": "agent", "name": "Agent", "redirect_uris": [REDIRECT_URI], "trusted": True}
            ],
        }
        with run_gateway(Path(tmp), [upstream], extra=extra, users={"alice": PASSWORD}) as gateway:
            try:
                await _signed_in_at_idp(gateway, context["idp_id_token"])
                tokens = await user_token(
                    gateway.base,
                    client_id="agent",
                    resource=gateway.url("conf"),
                    username="alice",
                    password=PASSWORD,
                )
                await _use_tools(gateway.url("conf"), str(tokens["access_token"]))
            except Exception as exc:  # the harness shows our output: say what failed, then Bastion's log
                print(f"FAILED: {type(exc).__name__}: {exc}", file=sys.stderr)
                print(gateway.tail(80), file=sys.stderr)
                return 1
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[-1])))
