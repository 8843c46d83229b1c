from dataclasses import replace

from meshprobe.config.targets import make_target
from meshprobe.model import DURATION_BUCKETS, MetricOptions, ProbeResult, Reason, Target
from meshprobe.state.edges import ProbeState


def target(name: str = "ns/svc", scheme: str = "http", **kw: object) -> Target:
    """A remote edge (c1 probing c2) from the one Target factory. An interval or timeout given
    here is set afterwards, unchecked: scheduler tests need timings the factory would refuse."""
    url = str(kw.pop("url", f"{scheme}://127.0.0.1:1/"))
    timing = {k: kw.pop(k) for k in ("interval", "timeout") if k in kw}
    options: dict[str, object] = {
        "cluster": "c2",
        "own_cluster": "c1",
        "interval": 1.0,
        "timeout": 0.5,
        "budget": 0.1,
        "local_budget": 0.05,
        "remote_budget": 0.1,
        **kw,
    }
    made = make_target(name=name, url=url, **options)  # type: ignore[arg-type]
    return replace(made, **timing)  # type: ignore[arg-type]


def test_new_edge_starts_at_zero_with_no_failure_reasons_and_its_own_buckets() -> None:
    state = ProbeState()
    narrow = MetricOptions(buckets=(0.1, 1.0), phases=False)
    state.set_targets([target(scheme="tcp"), target(name="n", scheme="tcp", metrics=narrow)])
    edge, other = state.edges()
    assert edge.probes_total == 0
    assert edge.failures == {}  # a reason's counter is born with its first failure
    assert edge.histogram.bounds == DURATION_BUCKETS
    assert other.histogram.bounds == (0.1, 1.0)


def test_a_new_bucket_layout_starts_the_histogram_over_and_keeps_the_counters() -> None:
    state = ProbeState()
    t = target()
    state.set_targets([t])
    state.record(t, ProbeResult(success=True, duration=0.05))
    state.record(t, ProbeResult(success=False, duration=0.5, reason=Reason.TIMEOUT))
    state.set_targets([replace(t, budget=0.3)])  # same layout: the histogram carries on
    (edge,) = state.edges()
    assert edge.histogram.count == 1
    state.set_targets([replace(t, metrics=MetricOptions(buckets=(0.5,)))])
    (edge,) = state.edges()
    assert edge.histogram.bounds == (0.5,) and edge.histogram.count == 0
    assert edge.probes_total == 2 and edge.failures == {Reason.TIMEOUT: 1}


def test_record_counts_failures_budget_and_who_answered() -> None:
    state = ProbeState(own_cluster="c1")
    t = target()
    state.set_targets([t])
    state.record(t, ProbeResult(success=True, duration=0.05, served_by="c2"))
    state.record(t, ProbeResult(success=True, duration=0.2, served_by="c1"))
    state.record(t, ProbeResult(success=False, duration=0.5, reason=Reason.TIMEOUT))
    edge = state.get(t)
    assert edge is not None
    assert edge.probes_total == 3
    # Only the answer slower than the budget; the timeout is a failure, not also over budget.
    assert edge.over_budget_total == 1
    assert edge.histogram.count == 2
    assert edge.failures[Reason.TIMEOUT] == 1
    assert edge.served == {"c2": 1, "c1": 1}


def test_transitions_only_on_failure_state_change() -> None:
    state = ProbeState()
    t = target()
    state.set_targets([t])
    ok = ProbeResult(success=True, duration=0.01)
    bad = ProbeResult(success=False, duration=0.01, reason=Reason.RESET)
    assert state.record(t, ok) is None  # healthy from the start: nothing to say
    first = state.record(t, bad)
    assert first is not None and first.previous is None and first.current is Reason.RESET
    assert state.record(t, bad) is None  # still failing the same way: no new line
    back = state.record(t, ok)
    assert back is not None and back.current is None and back.previous is Reason.RESET


def test_removed_edge_is_forgotten_and_changed_edge_keeps_counters() -> None:
    state = ProbeState()
    a, b = target("a"), target("b")
    state.set_targets([a, b])
    state.record(a, ProbeResult(success=True, duration=0.01))
    a2 = replace(a, budget=0.3, url="http://127.0.0.1:2/")
    state.set_targets([a2])
    assert [e.target for e in state.edges()] == [a2]
    edge = state.get(a2)
    assert edge is not None and edge.probes_total == 1
    assert state.record(b, ProbeResult(success=True, duration=0.01)) is None
    assert state.get(b) is None


def test_who_answered_is_bounded_to_clusters_we_know() -> None:
    """A server picks the header's value; only our own cluster and our targets' clusters become
    label values, anything else is counted as `other`."""
    state = ProbeState(own_cluster="c1")
    t = target()
    state.set_targets([t, target("ns/peer", cluster="c3")])
    for value in ["c1", "c2", "c3", *(f"random-{i}" for i in range(100)), "evil\udcff"]:
        state.record(t, ProbeResult(success=True, duration=0.01, served_by=value))
    edge = state.get(t)
    assert edge is not None
    assert edge.served == {"c1": 1, "c2": 1, "c3": 1, "other": 101}
