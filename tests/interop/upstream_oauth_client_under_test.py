"""Bastion as the OAuth client under test of the conformance suite's client authorization
scenarios (``auth/metadata-*``, ``auth/scope-*``, ``auth/token-endpoint-auth-*``,
``auth/pre-registration``, ``auth/resource-mismatch``, ``auth/offline-access-*``). The harness
runs ``<this script> <serverUrl>``: an MCP server protected by a mock authorization server that
approves every authorization request at once (302 straight back to the redirect URI).

What this script does is what a deployment and its user do (shared/interop/README.md §3):
1. starts Bastion with the server as upstream ``conf`` declared ``auth: {type: upstream_oauth}``
   (for ``auth/pre-registration`` with the context's client as a static registration);
2. plays alice: her MCP client holds a Bastion token for /mcp/conf (authorization code flow,
   password sign-in), and her browser is signed in to Bastion's pages;
3. she connects the upstream from Bastion's connect page (Bastion discovers the server's
   metadata, registers, and sends her browser to the mock authorization server, which comes
   back to Bastion's callback at once); then lists the tools and calls one with the official
   Python SDK client (2025-11-25, no URL elicitation: a connect request arrives as a tool error
   with the link, which her browser opens — at most three times, then she gives up);
4. stops Bastion and exits 0 when a tool call succeeded (1 otherwise).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))

import httpx2  # noqa: E402
from mcp.client.client import Client  # noqa: E402
from mcp.client.streamable_http import streamable_http_client  # noqa: E402

from tests.support.connect import sign_in, start_connect  # noqa: E402
from tests.support.gateway import Gateway, run_gateway  # noqa: E402
from tests.support.oauth import REDIRECT_URI, user_token  # noqa: E402

PASSWORD = "correct horse battery staple"
MAX_CONNECTS = 3
_LINK = re.compile(r"https?://\S+/connect/conf\?intent=[\w-]+")


def upstream_auth(context: dict[str, Any]) -> dict[str, Any]:
    auth: dict[str, Any] = {"type": "upstream_oauth", "label": "Conformance server"}
    if "client_id" in context:  # auth/pre-registration: the client an administrator registered
        auth.update(
            registration="static",
            client_id=context["client_id"],
            client_secret=context.get("client_secret"),
            token_endpoint_auth_method="client_secret_basic" if context.get("client_secret") else "none",
        )
    return auth


async def connect(browser: httpx2.AsyncClient, gateway: Gateway, query: str = "") -> None:
    """Continue on Bastion's connect page; the mock server approves at once; land on the callback."""
    at_server = await start_connect(browser, gateway.base, "conf", query)
    answer = await browser.get(at_server)
    if not answer.is_redirect:
        raise RuntimeError(f"the authorization server answered {answer.status_code}: {answer.text[:300]}")
    back = urljoin(at_server, answer.headers["location"])
    if not back.startswith(f"{gateway.base}/connect/callback"):
        raise RuntimeError(f"the authorization server sent the browser elsewhere: {back[:200]}")
    done = await browser.get(back)
    print("callback:", done.status_code)
    if done.status_code != 200:
        raise RuntimeError(f"Bastion's callback answered {done.status_code}: {done.text[:500]}")


async def use_tools(url: str, token: str) -> tuple[bool, str]:
    """List the tools and call the first: (succeeded, what the call said)."""
    async with (
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30) as http,
        Client(streamable_http_client(url, http_client=http), mode="legacy") as client,
    ):
        tools = (await client.list_tools()).tools
        print("tools:", [t.name for t in tools])
        if not tools:
            return False, ""
        result = await client.call_tool(tools[0].name, {})
    text = "".join(getattr(c, "text", "") for c in result.content)
    print("call:", tools[0].name, "error" if result.is_error else "ok", text[:200])
    return not result.is_error, text


async def main(server_url: str) -> int:
    context = json.loads(os.environ.get("MCP_CONFORMANCE_CONTEXT") or "{}")
    upstream = {"name": "conf", "http": {"url": server_url}, "auth": upstream_auth(context)}
    extra = {
        "auth": {"enabled": True},
        "clients": [
            {"client_id": "agent", "name": "Agent", "redirect_uris": [REDIRECT_URI], "trusted": True}
        ],
    }
    with (
        tempfile.TemporaryDirectory(prefix="bastion-oauth-client-") as tmp,
        run_gateway(Path(tmp), [upstream], extra=extra, users={"alice": PASSWORD}) as gateway,
    ):
        try:
            url = gateway.url("conf")
            tokens = await user_token(
                gateway.base, client_id="agent", resource=url, username="alice", password=PASSWORD
            )
            async with httpx2.AsyncClient(follow_redirects=False, timeout=30) as browser:
                await sign_in(browser, gateway.base, "alice", PASSWORD)
                await connect(browser, gateway)
                for _ in range(MAX_CONNECTS):
                    ok, text = await use_tools(gateway.url("conf"), str(tokens["access_token"]))
                    if ok:
                        return 0
                    link = _LINK.search(text)
                    if link is None:
                        break
                    await connect(browser, gateway, "?" + urlsplit(link.group(0)).query)
            print("FAILED: no tool call succeeded", file=sys.stderr)
        except Exception as exc:  # the harness shows our output: say what failed, then Bastion's log
            print(f"FAILED: {type(exc).__name__}: {exc}", file=sys.stderr)
        print(gateway.tail(60), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[-1])))
