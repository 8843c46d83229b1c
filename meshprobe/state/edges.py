"""Cumulative per-edge results: what the exporter reads at each scrape.

Everything here runs on the event loop thread, so a scrape sees a consistent snapshot without
locks. Stats are keyed by the edge's label identity (`Target.key`): a target whose URL or budget
changes keeps its counters; a removed target's stats are dropped, so its series vanish.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from meshprobe.model import ProbeResult, Reason, Target, TLSReport
from meshprobe.state.histogram import Histogram


@dataclass(slots=True)
class EdgeStats:
    target: Target
    histogram: Histogram = field(init=False)
    probes_total: int = 0
    over_budget_total: int = 0
    tcp_retransmits_total: int = 0
    tcp_rtt: float | None = None  # the kernel's smoothed RTT of the last fresh connection
    failures: dict[Reason, int] = field(default_factory=dict)
    served: dict[str, int] = field(default_factory=dict)
    last: ProbeResult | None = None
    last_tls: TLSReport | None = None
    # The exposition's text for this edge (metrics.edges owns it; state only keeps it alive
    # with the edge, so it goes when the edge goes).
    exposition: object = None

    def __post_init__(self) -> None:
        # Failure counters appear with the first failure of their reason, not before: pre-made
        # zeros for every reason a kind can produce were 5 to 13 series per edge. Rules and
        # dashboards count failures as probes minus successes (the histogram's _count), which
        # exist from the start, so no increase is lost; the reason breakdown is a diagnostic.
        self.histogram = Histogram(self.target.metrics.buckets)

    def retarget(self, target: Target) -> None:
        """The same edge with new settings; a new bucket layout starts the histogram over (the
        old bounds' series vanish and Prometheus sees a counter reset, as after a restart)."""
        if target.metrics.buckets != self.target.metrics.buckets:
            self.histogram = Histogram(target.metrics.buckets)
        self.target = target


@dataclass(frozen=True, slots=True)
class Transition:
    """A change of an edge's failure state: the only probe events worth a log line."""

    target: Target
    previous: Reason | None  # None: was healthy (or never probed, see `first`)
    current: Reason | None
    first: bool
    detail: str


# The `served_by_cluster` value for an answer naming a cluster we do not know.
OTHER_CLUSTER = "other"


class ProbeState:
    def __init__(self, *, own_cluster: str | None = None) -> None:
        self._edges: dict[tuple[str, str, str], EdgeStats] = {}
        # Clusters an answer may name as a label value: ours and those of our targets (peers
        # included, through their echo targets). Anything else a server sends is `other`, so a
        # server cannot grow our series with the header's value.
        self._own = frozenset({own_cluster} if own_cluster else ())
        self._known: frozenset[str] = self._own

    def set_targets(self, targets: Iterable[Target]) -> None:
        """Adopt a new target set: new edges start at zero, removed edges are forgotten."""
        wanted = {t.key: t for t in targets}
        self._known = self._own | {t.cluster for t in wanted.values()}
        for key in list(self._edges):
            if key not in wanted:
                del self._edges[key]
        for key, target in wanted.items():
            stats = self._edges.get(key)
            if stats is None:
                self._edges[key] = EdgeStats(target)
            else:
                stats.retarget(target)

    def record(self, target: Target, result: ProbeResult) -> Transition | None:
        """Fold one result in; returns the failure-state change it caused, if any."""
        stats = self._edges.get(target.key)
        if stats is None:  # a late result of a target removed meanwhile
            return None
        previous = stats.last
        stats.probes_total += 1
        # The latency SLI is about complete answers: an instant refusal must not pull the
        # quantiles down, nor a timeout push them up. Failures are counted by reason instead, and
        # the SLO's bad events are failures plus answers over budget (disjoint by construction).
        if result.success:
            stats.histogram.observe(result.duration)
            if result.duration > stats.target.budget:
                stats.over_budget_total += 1
        if result.tcp is not None:
            stats.tcp_retransmits_total += result.tcp.retransmits
            if result.tcp.rtt is not None:
                stats.tcp_rtt = result.tcp.rtt
        if result.reason is not None:
            stats.failures[result.reason] = stats.failures.get(result.reason, 0) + 1
        if result.served_by:
            served = result.served_by if result.served_by in self._known else OTHER_CLUSTER
            stats.served[served] = stats.served.get(served, 0) + 1
        # The TLS series describe the latest attempt: a probe that failed before any chain was
        # presented (refused, timeout) leaves no chain to describe, so they go absent rather than
        # keep vouching for the last chain seen.
        stats.last_tls = result.tls
        stats.last = result
        before = previous.reason if previous is not None else None
        if previous is None and result.success:
            return None
        if previous is not None and before == result.reason:
            return None
        return Transition(target, before, result.reason, previous is None, result.detail)

    def edges(self) -> Iterator[EdgeStats]:
        return iter(self._edges.values())

    def get(self, target: Target) -> EdgeStats | None:
        return self._edges.get(target.key)

    def __len__(self) -> int:
        return len(self._edges)
