"""The backoff at the edges: hours of failures must neither overflow nor pass the cap."""

from __future__ import annotations

import random

import pytest

from meshprobe.discovery.pacing import Backoff


@pytest.mark.parametrize("failures", [1, 7, 1025, 10**6])
def test_delay_stays_within_the_cap_after_any_number_of_failures(failures: int) -> None:
    backoff = Backoff(initial=0.5, cap=30.0, factor=2.0, jitter=0.5)
    rng = random.Random(3)
    delays = [backoff.delay(failures, rng) for _ in range(20)]
    base = min(30.0, 0.5 * 2.0 ** min(failures - 1, 10))
    assert all(base * 0.5 <= d <= base for d in delays), delays


def test_steps_reach_the_cap_exactly() -> None:
    backoff = Backoff(initial=0.05, cap=0.4, factor=2.0, jitter=0.0)
    rng = random.Random(0)
    assert [backoff.delay(n, rng) for n in range(1, 7)] == [0.05, 0.1, 0.2, 0.4, 0.4, 0.4]


def test_degenerate_settings_do_not_raise() -> None:
    rng = random.Random(0)
    assert Backoff(initial=1.0, cap=0.5, jitter=0.0).delay(5000, rng) == 0.5
    assert Backoff(initial=1.0, cap=9.0, factor=1.0, jitter=0.0).delay(5000, rng) == 1.0
