"""Bastion as an Enterprise-Managed Authorization client (role 3), judged by the official
conformance suite: the harness plays the enterprise IdP, the upstream's authorization server and
the MCP server; Bastion (started by tests/interop/ema_client_under_test.py) must exchange the
user's ID token for an ID-JAG, redeem it with the jwt-bearer grant and call the server."""

from __future__ import annotations

import sys

import pytest

from tests.interop.conformance import Harness, run_conformance
from tests.support.procs import REPO_ROOT

pytestmark = [pytest.mark.node, pytest.mark.slow, pytest.mark.timeout(300)]
COMMAND = f"{sys.executable} {REPO_ROOT / 'tests' / 'interop' / 'ema_client_under_test.py'}"


@pytest.mark.parametrize(
    ("harness", "scenario"),
    [
        ("alpha", "auth/enterprise-managed-authorization"),
        ("stable", "auth/cross-app-access-complete-flow"),
    ],
)
def test_bastion_passes_the_ema_client_scenario(harness: Harness, scenario: str) -> None:
    result = run_conformance(
        "bastion-as-client",
        harness=harness,
        scenario=scenario,
        client_command=COMMAND,
        scenario_timeout_ms=90_000,
        timeout_s=240,
    )
    summary = result.summary()
    assert result.scenarios, f"no results\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    assert result.failed == 0, f"{summary}\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    checks = {c.id: c.status for r in result.scenarios.values() for c in r.checks}
    assert checks.get("complete-flow-token-exchange") == "SUCCESS", summary
    assert checks.get("complete-flow-jwt-bearer") == "SUCCESS", summary
