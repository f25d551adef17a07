"""Per-user credentials towards a stdio upstream (``auth: {type: user_api_key, env: CRM_KEY}``):
the credential is an environment variable, so each user gets their own process started with
their own key (never another user's), and the key never reaches the client or the log."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import httpx2
import pytest
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client

from tests.support.connect import paste_api_key
from tests.support.gateway import Gateway, run_gateway
from tests.support.oauth import REDIRECT_URI, add_users, user_token
from tests.support.procs import REPO_ROOT

pytestmark = pytest.mark.timeout(120)
PASSWORD = "stdio-user-password"
KEYS = {"alice": "alice-key-7f3a9c", "bob": "bob-key-2d81e0"}


async def whoami(gateway: Gateway, token: str) -> dict[str, object]:
    async with (
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=60) as http,
        Client(streamable_http_client(gateway.url("crm"), http_client=http), mode="legacy") as client,
    ):
        result = await client.call_tool("whoami", {})
    text = "".join(getattr(c, "text", "") for c in result.content)
    assert not result.is_error, text
    answer: dict[str, object] = json.loads(text)
    return answer


async def test_each_user_gets_a_process_with_their_own_key(flow_tmp: Path) -> None:
    server = REPO_ROOT / "tests" / "fixtures" / "env_whoami_server.py"
    upstreams = [
        {
            "name": "crm",
            "stdio": {"command": sys.executable, "args": [str(server), "--env", "CRM_KEY"]},
            "auth": {"type": "user_api_key", "connection": "crm-key", "env": "CRM_KEY"},
        }
    ]
    extra = {
        "auth": {"enabled": True, "scopes": ["mcp"]},
        "clients": [{"client_id": "claude", "redirect_uris": [REDIRECT_URI], "trusted": True}],
        "connections": [{"name": "crm-key", "type": "api_key", "label": "CRM key"}],
    }
    with run_gateway(flow_tmp, upstreams, extra=extra) as gateway:
        await add_users(gateway, dict.fromkeys(KEYS, PASSWORD))
        seen = {}
        for user, key in KEYS.items():
            saved = await paste_api_key(gateway.base, "crm-key", username=user, password=PASSWORD, key=key)
            assert saved.status_code == 200, saved.text[:800]
            assert key not in saved.text
            token = await user_token(
                gateway.base,
                client_id="claude",
                resource=gateway.url("crm"),
                username=user,
                password=PASSWORD,
            )
            seen[user] = await whoami(gateway, str(token["access_token"]))
        for user, key in KEYS.items():
            assert seen[user]["sha256"] == hashlib.sha256(key.encode()).hexdigest()
        assert seen["alice"]["pid"] != seen["bob"]["pid"]  # a process per user
        log = gateway.log()
        assert all(key not in log for key in KEYS.values())
