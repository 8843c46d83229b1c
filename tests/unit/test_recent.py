"""The ring of recent results: what the status page's percentiles and chart are computed from."""

from meshprobe.model import ProbeResult, Reason
from meshprobe.state.recent import (
    FAILURE_DETAIL_LIMIT,
    FAILURES_KEPT,
    RecentResults,
    Ring,
    nearest_rank,
)
from tests.unit.test_state import target


def ok(duration: float) -> ProbeResult:
    return ProbeResult(success=True, duration=duration)


def failed(reason: Reason, detail: str = "") -> ProbeResult:
    return ProbeResult(success=False, duration=0.5, reason=reason, detail=detail or reason.value)


def test_the_ring_keeps_the_newest_results_oldest_first() -> None:
    ring = Ring(3)
    assert ring.window().results == 0 and ring.last_at() is None
    for i in range(5):
        ring.add(100.0 + i, ok(0.001 * (i + 1)))
    assert [at for at, _, _ in ring.entries()] == [102.0, 103.0, 104.0]
    assert [round(d, 6) for _, d, _ in ring.entries()] == [0.003, 0.004, 0.005]
    assert ring.last_at() == 104.0
    window = ring.window()
    assert (window.results, window.successes, window.since) == (3, 3, 102.0)


def test_failures_are_windowed_but_not_timed_and_named_in_the_entries() -> None:
    ring = Ring(4)
    ring.add(1.0, ok(0.010))
    ring.add(2.0, failed(Reason.TIMEOUT))
    ring.add(3.0, ok(0.030))
    window = ring.window()
    assert (window.results, window.successes) == (3, 2)
    assert [round(d, 6) for d in window.durations] == [0.01, 0.03]  # the timeout is no latency
    assert [r for _, _, r in ring.entries()] == [None, Reason.TIMEOUT, None]


def test_nearest_rank_quantiles_are_observed_values() -> None:
    values = [float(i) for i in range(1, 61)]
    assert nearest_rank(values, 0.5) == 30.0
    assert nearest_rank(values, 0.99) == 60.0  # of 60 results, p99 is the slowest
    assert nearest_rank(values[:1], 0.99) == 1.0
    assert nearest_rank([], 0.5) is None


def test_over_budget_counts_answers_strictly_slower_than_the_budget() -> None:
    ring = Ring(10)
    for d in (0.05, 0.1, 0.2, 0.3):
        ring.add(0.0, ok(d))
    assert ring.window().over(0.1) == 2
    assert ring.window().over(1.0) == 0


def test_repeated_failures_are_one_entry_with_a_count_and_details_are_bounded() -> None:
    ring = Ring(100)
    for at in range(10):
        ring.add(float(at), failed(Reason.CONNECT_REFUSED, "refused"))
    (only,) = ring.failures
    assert (only.count, only.first_at, only.last_at) == (10, 0.0, 9.0)
    ring.add(20.0, failed(Reason.HTTP_STATUS, "x" * 5000))
    assert len(ring.failures[-1].detail) == FAILURE_DETAIL_LIMIT
    for i in range(10):
        ring.add(30.0 + i, failed(Reason.TIMEOUT, f"timeout {i}"))
    assert len(ring.failures) == FAILURES_KEPT
    assert ring.failures[-1].detail == "timeout 9"


def test_rings_follow_the_target_set_and_ignore_late_results() -> None:
    a, b = target("a"), target("b")
    recent = RecentResults(5)
    recent.set_targets([a, b])
    recent.record(a, ok(0.01), 1.0)
    recent.set_targets([a])
    recent.record(b, ok(0.01), 2.0)  # a late result of a removed target
    assert recent.get(b) is None and len(recent) == 1
    ring = recent.get(a)
    assert ring is not None and len(ring) == 1


def test_resize_keeps_the_newest_results_and_the_failures() -> None:
    a = target("a")
    recent = RecentResults(10)
    recent.set_targets([a])
    for i in range(8):
        recent.record(a, failed(Reason.DNS) if i == 0 else ok(0.001 * i), float(i))
    recent.resize(3)
    ring = recent.get(a)
    assert ring is not None and ring.size == 3 and recent.size == 3
    assert [at for at, _, _ in ring.entries()] == [5.0, 6.0, 7.0]
    assert [f.reason for f in ring.failures] == [Reason.DNS]
    recent.resize(6)  # growing keeps what there is
    ring = recent.get(a)
    assert ring is not None and [at for at, _, _ in ring.entries()] == [5.0, 6.0, 7.0]
    ring.add(8.0, ok(0.001))
    assert ring.last_at() == 8.0 and len(ring) == 4
