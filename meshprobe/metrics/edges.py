"""Fast text exposition of the per-edge families, in slices.

With 10,000 targets the edge families are hundreds of thousands of samples. Building
prometheus_client Metric objects for them takes seconds and blocks the event loop for all of it,
which would inflate every probe timing taken meanwhile. Here each edge's label set is escaped once
and the text (format 0.0.4) is written straight from ProbeState, a hundred edges per slice, so
the server can yield to the loop between slices. Instance metrics stay with prometheus_client.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from itertools import accumulate

from meshprobe.metrics import names as m
from meshprobe.model import KIND_PHASES, Phase, Target, TLSReport
from meshprobe.probes.tcpinfo import SUPPORTED as TCP_INFO_SUPPORTED
from meshprobe.state.edges import EdgeStats, ProbeState

SLICE = 100  # edges between two yields to the event loop: p99 lateness under 10 ms at 10,000


def escape(value: str) -> str:
    """A label value as text format 0.0.4 wants it, always encodable: a lone surrogate (from a
    discovered name or any other outside text) becomes U+FFFD instead of failing every scrape."""
    if not value.isascii():
        value = value.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def fmt(value: float) -> str:
    """A float as Prometheus parses it: repr, with Go's spelling of the specials."""
    if math.isfinite(value):
        return repr(float(value))
    if math.isnan(value):
        return "NaN"
    return "+Inf" if value > 0 else "-Inf"


Emit = Callable[[str], None]


@functools.cache
def _bucket_le(bounds: tuple[float, ...]) -> tuple[str, ...]:
    """The `le` label text of each bucket, made once per layout (a few layouts per daemon)."""
    if not bounds:
        return ()
    return (*(f',le="{fmt(b)}"' for b in bounds), ',le="+Inf"')


@functools.cache
def _phase_labels(phases: tuple[Phase, ...]) -> tuple[tuple[Phase, str], ...]:
    return tuple((p, f',phase="{p.value}"') for p in phases)


@dataclass(slots=True)
class _EdgeText:
    """What an edge's lines share between scrapes: the escaped label set (it changes only with the
    target) and the values of its TLS lines (they change only with the presented chain). About
    300 bytes per edge (pre-rendered %-templates of every line were 20 % faster for 5 KB)."""

    target: Target
    source: str
    labels: str
    budget: str  # part of the target too
    # The TLS lines of the last report rendered, reused while the report says the same: the
    # verdict cache hands every probe of one server the same chain, so they rarely change.
    tls_key: tuple[object, ...] | None = None
    tls_expiry: tuple[tuple[str, int], ...] = ()
    tls_peer: str = ""  # the info series' labels after the edge's


def _text(source: str, stats: EdgeStats) -> _EdgeText:
    cached = stats.exposition
    if isinstance(cached, _EdgeText) and cached.target is stats.target and cached.source == source:
        return cached
    t = stats.target
    values = (source, t.cluster, t.name, t.scope.value, t.kind.value)
    lbl = ",".join(f'{k}="{escape(v)}"' for k, v in zip(m.EDGE_LABELS, values, strict=True))
    made = _EdgeText(t, source, lbl, fmt(t.budget))
    stats.exposition = made
    return made


Edge = tuple[EdgeStats, _EdgeText]

# Each family renders its own samples, a slice of edges per call (a loop per family, not a call
# per edge: at 10,000 edges the per-call overhead would show in the scrape time).


def _success(name: str, edges: Sequence[Edge], add: Emit) -> None:
    for s, text in edges:
        ok = s.last is not None and s.last.success
        add(f"{name}{{{text.labels}}} {'1' if ok else '0'}\n")


def _duration(name: str, edges: Sequence[Edge], add: Emit) -> None:
    """An edge with no bounds (its histogram switched off) exports `_count` and `_sum` only:
    still a valid histogram, and what the success ratio and the mean need. Durations are printed
    to the microsecond (the digits below are noise, and each printed digit costs 60 KB per scrape
    at 10,000 edges), by the f-string itself: round and repr in Python were a third of a scrape."""
    for s, text in edges:
        lbl = text.labels
        hist = s.histogram
        for le, n in zip(_bucket_le(hist.bounds), accumulate(hist.counts), strict=False):
            add(f"{name}_bucket{{{lbl}{le}}} {n}\n")
        add(f"{name}_count{{{lbl}}} {hist.count}\n{name}_sum{{{lbl}}} {hist.sum:.6f}\n")


def _phases(name: str, edges: Sequence[Edge], add: Emit) -> None:
    for s, text in edges:
        if s.last is None or not s.target.metrics.phases:
            continue
        lbl = text.labels
        phases = s.last.phases
        for phase, label in _phase_labels(KIND_PHASES[s.target.scheme]):
            add(f"{name}{{{lbl}{label}}} {phases.get(phase, 0.0):.6f}\n")


def _probes(name: str, edges: Sequence[Edge], add: Emit) -> None:
    for s, text in edges:
        add(f"{name}_total{{{text.labels}}} {s.probes_total}\n")


def _failures(name: str, edges: Sequence[Edge], add: Emit) -> None:
    for s, text in edges:
        for reason, n in s.failures.items():
            add(f'{name}_total{{{text.labels},reason="{reason.value}"}} {n}\n')


def _budget(name: str, edges: Sequence[Edge], add: Emit) -> None:
    for _, text in edges:
        add(f"{name}{{{text.labels}}} {text.budget}\n")


def _over_budget(name: str, edges: Sequence[Edge], add: Emit) -> None:
    for s, text in edges:
        add(f"{name}_total{{{text.labels}}} {s.over_budget_total}\n")


def _served(name: str, edges: Sequence[Edge], add: Emit) -> None:
    for s, text in edges:
        for cluster, n in s.served.items():
            add(f'{name}_total{{{text.labels},served_by_cluster="{escape(cluster)}"}} {n}\n')


def _tcp_rtt(name: str, edges: Sequence[Edge], add: Emit) -> None:
    for s, text in edges:
        if s.tcp_rtt is not None:
            add(f"{name}{{{text.labels}}} {fmt(s.tcp_rtt)}\n")


def _tcp_retransmits(name: str, edges: Sequence[Edge], add: Emit) -> None:
    for s, text in edges:
        add(f"{name}_total{{{text.labels}}} {s.tcp_retransmits_total}\n")


def _grpc_status(name: str, edges: Sequence[Edge], add: Emit) -> None:
    for s, text in edges:
        if s.last is not None and s.last.grpc_status is not None:
            add(f"{name}{{{text.labels}}} {s.last.grpc_status}\n")


def _grpc_serving(name: str, edges: Sequence[Edge], add: Emit) -> None:
    for s, text in edges:
        if s.last is not None and s.last.grpc_serving is not None:
            add(f"{name}{{{text.labels}}} {s.last.grpc_serving}\n")


def _with_tls(edges: Sequence[Edge]) -> Iterator[tuple[_EdgeText, TLSReport]]:
    """TLS series exist only while the edge's last attempt saw a chain; the edge's TLS values are
    brought up to date with that chain on the way."""
    for s, text in edges:
        tls = s.last_tls
        if tls is None:
            continue
        key = (tls.chain, tls.root, tls.identity, tls.version, tls.cipher)
        if text.tls_key != key:
            text.tls_key = key
            text.tls_expiry = tuple(
                (role.value, int(ts))  # X.509 times are whole seconds
                for role, ts in sorted(tls.earliest_expiry().items())
            )
            root = tls.root.fingerprint_sha256 if tls.root is not None else ""
            identity = escape(tls.identity or "")
            version, cipher = escape(tls.version or ""), escape(tls.cipher or "")
            text.tls_peer = (
                f'identity="{identity}",root_fingerprint_sha256="{root}",'
                f'version="{version}",cipher="{cipher}"'
            )
        yield text, tls


def _tls_verified(name: str, edges: Sequence[Edge], add: Emit) -> None:
    for text, tls in _with_tls(edges):
        add(f"{name}{{{text.labels}}} {'1' if tls.verified else '0'}\n")


def _tls_expiry(name: str, edges: Sequence[Edge], add: Emit) -> None:
    for text, _ in _with_tls(edges):
        for role, ts in text.tls_expiry:
            add(f'{name}{{{text.labels},role="{role}"}} {ts}\n')


def _tls_peer(name: str, edges: Sequence[Edge], add: Emit) -> None:
    """Who answered, under which root, over which TLS version and cipher: one info series (the
    version and cipher had a family of their own, 1 series and about 190 bytes per edge)."""
    for text, _ in _with_tls(edges):
        add(f"{name}{{{text.labels},{text.tls_peer}}} 1\n")


Render = Callable[[str, Sequence[Edge], Emit], None]


@dataclass(frozen=True, slots=True)
class Family:
    name: str  # the family name as in # TYPE (counters without _total)
    kind: str  # gauge|counter|histogram
    help: str
    render: Render


FAMILIES: Sequence[Family] = (
    Family(m.PROBE_SUCCESS, "gauge", "Whether the last probe of the edge succeeded.", _success),
    Family(
        m.PROBE_DURATION,
        "histogram",
        "Wall-clock duration of successful probes, from start to complete answer.",
        _duration,
    ),
    Family(m.PROBE_PHASE_DURATION, "gauge", "Duration of each phase of the last probe.", _phases),
    Family(m.PROBES, "counter", "Probes run.", _probes),
    Family(m.PROBE_FAILURES, "counter", "Failed probes by reason.", _failures),
    Family(m.LATENCY_BUDGET, "gauge", "Latency budget of the edge.", _budget),
    Family(
        m.PROBE_OVER_BUDGET,
        "counter",
        "Successful probes slower than the edge's latency budget.",
        _over_budget,
    ),
    Family(m.SERVED, "counter", "Answers by the cluster named in X-Meshprobe-Cluster.", _served),
    *(
        (
            Family(
                m.TCP_RTT, "gauge", "Kernel smoothed RTT of the last fresh connection.", _tcp_rtt
            ),
            Family(
                m.TCP_RETRANSMITS,
                "counter",
                "TCP segments retransmitted on fresh probe connections, SYNs included.",
                _tcp_retransmits,
            ),
        )
        if TCP_INFO_SUPPORTED
        else ()
    ),
    Family(
        m.GRPC_STATUS_CODE,
        "gauge",
        "gRPC status code of the last health check that got one (0 OK, 5 NOT_FOUND, 14 ...).",
        _grpc_status,
    ),
    Family(
        m.GRPC_SERVING_STATUS,
        "gauge",
        "Serving status of the last health answer: 0 UNKNOWN, 1 SERVING, 2 NOT_SERVING, "
        "3 SERVICE_UNKNOWN.",
        _grpc_serving,
    ),
    Family(m.TLS_VERIFIED, "gauge", "Whether the last presented chain verified.", _tls_verified),
    Family(
        m.TLS_CERT_EXPIRY,
        "gauge",
        "Earliest NotAfter per certificate role in the last chain.",
        _tls_expiry,
    ),
    Family(
        m.TLS_PEER_INFO,
        "gauge",
        "Identity, anchoring root, TLS version and cipher of the last handshake.",
        _tls_peer,
    ),
)


def edge_exposition(state: ProbeState, source: str) -> Iterator[str]:
    """Chunks of exposition text: each family's header, then its samples a slice at a time.

    Each edge's fixed text is looked up once per scrape, a slice at a time too: after a restart
    or a discovery burst, making it for thousands of edges would otherwise block the loop."""
    edges: list[Edge] = []
    stats = list(state.edges())
    for start in range(0, len(stats), SLICE):
        edges.extend((s, _text(source, s)) for s in stats[start : start + SLICE])
        yield ""
    for family in FAMILIES:
        # Text format 0.0.4 names counters by their sample name, _total included.
        head = f"{family.name}_total" if family.kind == "counter" else family.name
        yield f"# HELP {head} {family.help}\n# TYPE {head} {family.kind}\n"
        for start in range(0, len(edges), SLICE):
            out: list[str] = []
            family.render(family.name, edges[start : start + SLICE], out.append)
            if out:
                yield "".join(out)
