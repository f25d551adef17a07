"""The official conformance suite against Bastion with authentication ON: every scenario's
requests carry a Bastion access token (client credentials, audience = the endpoint), added by a
token-injecting proxy because the harness cannot send one. The results must equal the direct
baselines: authorization changes nothing about the protocol."""

from __future__ import annotations

import hashlib
import secrets
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

from tests.interop.conformance import run_conformance
from tests.interop.test_conformance_direct import BASELINES
from tests.support.gateway import run_gateway, venv_env
from tests.support.procs import REPO_ROOT, free_port, http_process

pytestmark = [pytest.mark.node, pytest.mark.slow, pytest.mark.timeout(600)]
SUITES = ["legacy-alpha12-2025-11-25", "modern-alpha12-2026-07-28"]


@pytest.fixture(scope="module")
def authenticated_endpoint(
    tmp_path_factory: pytest.TempPathFactory, everything_upstream: str
) -> Iterator[str]:
    tmp: Path = tmp_path_factory.mktemp("conformance-auth")
    secret = secrets.token_urlsafe(32)
    proxy_port = free_port()
    extra = {
        "auth": {"enabled": True},
        "clients": [
            {
                "client_id": "conformance",
                "secret_sha256": hashlib.sha256(secret.encode()).hexdigest(),
                "grant_types": ["client_credentials"],
            }
        ],
        # the proxy keeps the harness's Host and Origin headers (its own address)
        "edge": {
            "allowed_hosts": [f"127.0.0.1:{proxy_port}", f"localhost:{proxy_port}"],
            "allowed_origins": [f"http://127.0.0.1:{proxy_port}", f"http://localhost:{proxy_port}"],
        },
    }
    with run_gateway(tmp, [{"name": "ev", "http": {"url": everything_upstream}}], extra=extra) as gateway:
        response = httpx2.post(
            f"{gateway.base}/token",
            data={"grant_type": "client_credentials", "resource": gateway.url("ev")},
            auth=("conformance", secret),
            timeout=30,
        )
        assert response.status_code == 200, response.text
        token_file = tmp / "token"
        token_file.write_text(response.json()["access_token"])
        proxy = [sys.executable, "-m", "tests.support.bearer_proxy", "--upstream", gateway.base]
        proxy += ["--port", str(proxy_port), "--token-file", str(token_file)]
        with http_process(
            proxy, f"http://127.0.0.1:{proxy_port}/healthz", tmp / "proxy.log", env=venv_env(), cwd=REPO_ROOT
        ):
            yield f"http://127.0.0.1:{proxy_port}/mcp/ev"


@pytest.mark.parametrize("name", SUITES)
def test_conformance_with_authentication_on(
    name: str, conformance_harness: object, authenticated_endpoint: str
) -> None:
    kwargs, expected, expected_failures = BASELINES[name]
    result = run_conformance(authenticated_endpoint, timeout_s=480, **kwargs)
    assert not result.timed_out, result.summary()
    assert set(result.failed_scenarios) == expected_failures, result.summary()
    assert result.counts == expected, result.summary()
