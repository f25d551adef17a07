"""The official conformance suite through Bastion: the same pass count as directly against
the same upstream, in both eras. Bastion is a transparent MCP endpoint for the suite."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.interop.conformance import run_conformance
from tests.interop.test_conformance_direct import BASELINES
from tests.support.gateway import Gateway, run_gateway

pytestmark = [pytest.mark.node, pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def bastion_in_front(tmp_path_factory: pytest.TempPathFactory, everything_upstream: str) -> Iterator[Gateway]:
    tmp: Path = tmp_path_factory.mktemp("conformance")
    with run_gateway(tmp, [{"name": "ev", "http": {"url": everything_upstream}}]) as gateway:
        yield gateway


@pytest.mark.parametrize("name", list(BASELINES))
def test_conformance_through_bastion(
    name: str, conformance_harness: object, bastion_in_front: Gateway
) -> None:
    kwargs, expected, expected_failures = BASELINES[name]
    result = run_conformance(bastion_in_front.url("ev"), timeout_s=480, **kwargs)
    assert not result.timed_out, result.summary()
    assert set(result.failed_scenarios) == expected_failures, (
        result.summary() + "\n" + bastion_in_front.tail()
    )
    assert result.counts == expected, result.summary()
