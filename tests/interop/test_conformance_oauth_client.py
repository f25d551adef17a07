"""Bastion as the OAuth client of an OAuth-protected upstream (``auth: {type: upstream_oauth}``),
judged by the official conformance suite's client authorization scenarios: the harness plays the
MCP server and its authorization server; Bastion (started by
tests/interop/upstream_oauth_client_under_test.py) must discover both, register, run the
authorization code flow with PKCE and ``resource`` for its user, pick scopes as MCP says, step up
on a 403 ``insufficient_scope`` and not loop when stepping up cannot help."""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.interop.conformance import ConformanceResult, run_conformance
from tests.support.procs import REPO_ROOT

pytestmark = [pytest.mark.node, pytest.mark.slow, pytest.mark.timeout(400)]
COMMAND = f"{sys.executable} {REPO_ROOT / 'tests' / 'interop' / 'upstream_oauth_client_under_test.py'}"
# the 14 tier-1 scenarios of the ``auth`` suite, each with the checks that prove the point
AUTH_SUITE = {
    "auth/metadata-default": ("prm-pathbased-requested", "token-request"),
    "auth/metadata-var1": ("token-request",),
    "auth/metadata-var2": ("token-request",),
    "auth/metadata-var3": ("token-request",),
    "auth/basic-cimd": ("token-request",),
    "auth/scope-from-www-authenticate": ("scope-from-www-authenticate",),
    "auth/scope-from-scopes-supported": ("scope-from-scopes-supported",),
    "auth/scope-omitted-when-undefined": ("scope-omitted-when-undefined",),
    "auth/scope-step-up": ("scope-step-up-initial", "scope-step-up-escalation"),
    "auth/scope-retry-limit": ("scope-retry-limit",),
    "auth/token-endpoint-auth-basic": ("token-request",),
    "auth/token-endpoint-auth-post": ("token-request",),
    "auth/token-endpoint-auth-none": ("token-request",),
    "auth/pre-registration": ("token-request",),
}


# draft scenarios (not in the ``auth`` suite): refuse a PRM document about another resource; ask
# for offline_access only when the authorization server lists it (SEP-2207)
DRAFT = {
    "auth/resource-mismatch": "resource-mismatch-rejected",
    "auth/offline-access-scope": "sep-2207-offline-access-requested",
    "auth/offline-access-not-supported": "sep-2207-offline-access-not-requested",
}


def _statuses(result: ConformanceResult, scenario: str) -> dict[str, str]:
    found = result.scenarios.get(scenario)
    return {c.id: c.status for c in found.checks} if found is not None else {}


def _run(scenario: str) -> ConformanceResult:
    return run_conformance(
        "bastion-as-oauth-client",
        harness="stable",
        scenario=scenario,
        client_command=COMMAND,
        scenario_timeout_ms=120_000,
        timeout_s=240,
    )


@pytest.fixture(scope="module")
def results() -> dict[str, ConformanceResult]:
    """Every scenario, two at a time: the harness's own ``--suite`` runs them all at once, which on
    a small machine means a dozen Bastions starting together and timing out."""
    scenarios = [*AUTH_SUITE, *DRAFT]
    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip(scenarios, pool.map(_run, scenarios), strict=True))


@pytest.mark.parametrize("scenario", sorted(AUTH_SUITE))
def test_bastion_passes_the_client_authorization_scenario(
    results: dict[str, ConformanceResult], scenario: str
) -> None:
    result = results[scenario]
    found = result.scenarios.get(scenario)
    assert found is not None, f"no result for {scenario}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    failures = "\n".join(f"{c.id}: {c.message}" for c in found.failures)
    assert found.failed == 0, f"{scenario}:\n{failures}\n{result.summary()}\n{result.stdout[-3000:]}"
    statuses = _statuses(result, scenario)
    for check in AUTH_SUITE[scenario]:
        assert statuses.get(check) == "SUCCESS", f"{scenario}: {check} is {statuses.get(check)}\n{statuses}"


@pytest.mark.parametrize("scenario", sorted(DRAFT))
def test_bastion_passes_the_draft_scenario(results: dict[str, ConformanceResult], scenario: str) -> None:
    result = results[scenario]
    assert result.scenarios, f"no results\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    assert result.failed == 0, f"{result.summary()}\n{result.stdout[-4000:]}"
    assert _statuses(result, scenario).get(DRAFT[scenario]) == "SUCCESS", result.summary()
