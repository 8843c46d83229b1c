"""The status documents: `GET /v1/status` (the matrix, every edge, the instance) and the lookup
of one edge's document (built by `statusedge`).

The page (`web/page/`) draws exactly these documents, so a script reads what a person sees
(goldpinger's `/check_all` is the precedent). Schema and state rules: docs/status.md.

What goes in is what `/metrics` reveals plus what the logs already say about an edge (its URL
without credentials, the detail of its last failure): never a request header, a URL's userinfo or
query, or anything a target's configuration holds for the target alone. Every string that comes
from outside (details, certificate names, a peer's error) is bounded, so a hostile server cannot
grow the page.

The edges are encoded in slices with a yield to the event loop between them, as `/metrics` is:
the loop times the probes, and a page open at 10,000 edges must not stall them.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from meshprobe import __version__
from meshprobe.config.settings import Settings
from meshprobe.model import Scope
from meshprobe.state.edges import EdgeStats, ProbeState
from meshprobe.state.instance import InstanceStatus, PeerStatus
from meshprobe.state.recent import RecentResults, nearest_rank
from meshprobe.web.statusedge import (
    STATUS_FORMAT,
    TEXT_LIMIT,
    EdgeFacts,
    EdgeState,
    EdgeText,
    bounded,
    edge_document,
    edge_id,
    encode,
    num,
    ratio,
)

__all__ = [
    "STATUS_FORMAT",
    "EdgeState",
    "StatusView",
    "edge_body",
    "edge_id",
    "status_body",
]

SLICE = 100  # edges encoded between two yields to the loop (as /metrics): ~5 ms each
ROOTS_SHOWN = 20  # roots of our bundle listed (an OS bundle has 150), the rest counted


# Sort order of the edges list (failing first) and which state a matrix cell shows.
_SEVERITY = {EdgeState.FAILING: 0, EdgeState.OVER_BUDGET: 1, EdgeState.NO_DATA: 2, EdgeState.OK: 3}
_CELL_ORDER = (EdgeState.FAILING, EdgeState.OVER_BUDGET, EdgeState.OK, EdgeState.NO_DATA)


@dataclass
class StatusView:
    """What the documents are read from: the daemon's live objects (never copies), and its
    current settings (a reload replaces them); plus each edge's encoded parts between builds."""

    state: ProbeState
    recent: RecentResults
    instance: InstanceStatus
    settings: Callable[[], Settings]
    texts: dict[tuple[str, str, str], EdgeText] = field(default_factory=dict, repr=False)


def refresh_seconds(settings: Settings) -> int:
    """How often the page fetches: the probe interval, kept within 1..5 s (faster shows nothing
    new; slower would leave a person staring at a stale table)."""
    return max(1, min(5, math.ceil(settings.defaults.interval)))


# -- the matrix -----------------------------------------------------------------------------------


@dataclass(slots=True)
class _Cell:
    """One target cluster: success over every result of its edges; the median edge's p50 and
    the worst edge's p99, each edge's read over its own window (pooling every duration of every
    edge would mix services and cost a sort of all of them at each build)."""

    cluster: str
    scope: str | None = None
    states: Counter[EdgeState] = field(default_factory=Counter)
    results: int = 0
    successes: int = 0
    p50s: list[float] = field(default_factory=list)
    p99: float | None = None
    budgets: set[float] = field(default_factory=set)

    def add(self, edge: EdgeFacts) -> None:
        self.scope = edge.stats.target.scope.value
        self.states[edge.state] += 1
        self.results += edge.results
        self.successes += edge.successes
        if edge.p50 is not None:
            self.p50s.append(edge.p50)
        if edge.p99 is not None and (self.p99 is None or edge.p99 > self.p99):
            self.p99 = edge.p99
        self.budgets.add(edge.stats.target.budget)

    def doc(self, peer: dict[str, Any] | None) -> dict[str, Any]:
        state = next((s for s in _CELL_ORDER if self.states[s]), EdgeState.NO_DATA)
        return {
            "cluster": self.cluster,
            "scope": self.scope,
            "edges": sum(self.states.values()),
            "state": state.value,
            "states": {s.value: self.states[s] for s in EdgeState},
            "results": self.results,
            "success_ratio": ratio(self.successes, self.results),
            "p50_seconds": num(nearest_rank(sorted(self.p50s), 0.5)),
            "p99_seconds": num(self.p99),
            "budget_seconds": (
                {"min": num(min(self.budgets)), "max": num(max(self.budgets))}
                if self.budgets
                else None
            ),
            "peer": peer,
        }


def _peer(status: PeerStatus, instance: InstanceStatus) -> dict[str, Any]:
    match = instance.peer_trust(status)
    if match is False:
        trust = "ca_mismatch"
    elif not status.up:
        trust = "unreachable"
    elif match:
        trust = "shares_root"
    else:
        trust = "unknown"
    return {"up": status.up, "trust": trust, "detail": bounded(status.detail, TEXT_LIMIT)}


def _matrix(own: str, cells: dict[str, _Cell], instance: InstanceStatus) -> dict[str, Any]:
    peers = dict(instance.peers)
    for cluster in peers:
        cells.setdefault(cluster, _Cell(cluster, Scope.REMOTE.value))
    order = sorted(cells, key=lambda c: (c != own, c))
    columns = [cells[c].doc(_peer(peers[c], instance) if c in peers else None) for c in order]
    return {"source": own, "columns": columns}


# -- the instance ---------------------------------------------------------------------------------


def _lag(instance: InstanceStatus) -> dict[str, Any]:
    """The loop-lag histogram as `/metrics` has it, since start: quantiles are bucket bounds."""
    hist = instance.loop_lag
    count = hist.count

    def bound(q: float) -> float | None:
        if not count:
            return None
        running, goal = 0, q * count
        for le, n in zip(hist.bounds, hist.counts, strict=False):
            running += n
            if running >= goal:
                return le
        return None  # beyond the last bound (+Inf)

    return {
        "observations": count,
        "mean_seconds": num(hist.sum / count) if count else None,
        "p50_le_seconds": bound(0.5),
        "p99_le_seconds": bound(0.99),
    }


def _instance(
    settings: Settings, instance: InstanceStatus, edges: Iterable[EdgeFacts]
) -> dict[str, Any]:
    bundle = instance.bundle
    roots: list[dict[str, Any]] = []
    if bundle is not None:
        for cert in sorted((bundle.summary_of(r) for r in bundle.roots), key=lambda s: s.not_after)[
            :ROOTS_SHOWN
        ]:
            roots.append(
                {
                    "subject": bounded(cert.subject, TEXT_LIMIT),
                    "fingerprint_sha256": cert.fingerprint_sha256,
                    "not_after": cert.not_after,
                }
            )
    discovery = instance.discovery
    return {
        "cluster": settings.cluster,
        "version": __version__,
        "trust_domain": settings.trust.trust_domain,
        "trust_bundle": {
            "source": "system" if bundle is None else "configured",
            "roots": roots,
            "root_count": len(bundle.roots) if bundle is not None else None,
            "skipped_roots": bundle.skipped if bundle is not None else 0,
            "reload_success": instance.bundle_reload_success,
            "reload_at": instance.bundle_reload_timestamp or None,
        },
        "discovery": [
            {"source": s, "up": discovery.up[s], "errors": discovery.errors.get(s, 0)}
            for s in sorted(discovery.up)
        ],
        "targets": dict(sorted(Counter(e.stats.target.discovery for e in edges).items())),
        "config_reload": {
            "success": instance.config_reload_success,
            "at": instance.config_reload_timestamp or None,
        },
        "loop_lag": _lag(instance),
    }


# -- the documents --------------------------------------------------------------------------------


async def status_body(view: StatusView) -> bytes:
    """`/v1/status`: every edge (failing first), the matrix over them, the instance."""
    settings = view.settings()
    own = settings.cluster
    cells: dict[str, _Cell] = {}
    rows: list[tuple[tuple[int, str, str, str], str]] = []
    edges: list[EdgeFacts] = []
    texts: dict[tuple[str, str, str], EdgeText] = {}  # this build's edges only: removed go
    for n, stats in enumerate(view.state.edges(), start=1):
        edge = EdgeFacts.of(stats, view.recent)
        edges.append(edge)
        target = stats.target
        text = view.texts.get(target.key)
        if text is None or text.target is not target:
            text = EdgeText.of(target)
        texts[target.key] = text
        cells.setdefault(target.cluster, _Cell(target.cluster)).add(edge)
        sort_key = (_SEVERITY[edge.state], target.cluster, target.name, target.kind.value)
        rows.append((sort_key, text.encoded(edge)))
        if n % SLICE == 0:
            await asyncio.sleep(0)
    view.texts = texts
    rows.sort(key=lambda row: row[0])
    head = {
        "format": STATUS_FORMAT,
        "generated_at": time.time(),
        "cluster": own,
        "refresh_seconds": refresh_seconds(settings),
        "window_results": view.recent.size,
        "matrix": _matrix(own, cells, view.instance),
        "instance": _instance(settings, view.instance, edges),
    }
    edges_text = ",".join(text for _, text in rows)
    return b"".join((encode(head)[:-1], b',"edges":[', edges_text.encode("ascii"), b"]}"))


def _find(view: StatusView, wanted: str) -> EdgeStats | None:
    return next((s for s in view.state.edges() if edge_id(s.target.key) == wanted), None)


def edge_body(view: StatusView, wanted: str) -> bytes | None:
    """`/v1/status/edges/<id>`; None when no edge has that id (removed, or never was)."""
    stats = _find(view, wanted)
    if stats is None:
        return None
    return edge_document(
        EdgeFacts.of(stats, view.recent),
        cluster=view.settings().cluster,
        window_results=view.recent.size,
        now=time.time(),
    )
