"""Fixtures for the probe integration tests: certificates, a probe environment, targets."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping

import pytest

from meshprobe.probes import ProbeEnv
from tests.integration.faults import TestPki, make_test_pki

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is an optional extra
    uvloop = None  # type: ignore[assignment]


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    """Run every async test here on the default loop and, when installed, on uvloop: the TLS
    recording trick depends on how each loop drives the handshake."""
    factories: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
        "asyncio": asyncio.new_event_loop
    }
    if uvloop is not None:
        factories["uvloop"] = uvloop.new_event_loop
    return factories


@pytest.fixture(scope="session")
def test_pki() -> TestPki:
    return make_test_pki()


@pytest.fixture
async def env(test_pki: TestPki) -> AsyncIterator[ProbeEnv]:
    probe_env = await ProbeEnv.create(
        source_cluster="cluster1", anchors=test_pki.anchors, trust_domain="cluster.local"
    )
    try:
        yield probe_env
    finally:
        await probe_env.aclose()
