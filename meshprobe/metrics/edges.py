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

from meshprobe.metrics import names as m
from meshprobe.model import KIND_PHASES, TLSReport
from meshprobe.probes.tcpinfo import SUPPORTED as TCP_INFO_SUPPORTED
from meshprobe.state.edges import EdgeStats, ProbeState

SLICE = 100  # edges between two yields to the event loop: p99 lateness under 10 ms at 10,000


def escape(value: str) -> str:
    """A label value as text format 0.0.4 wants it, always encodable: a lone surrogate (from a
    discovered name or any other outside text) becomes U+FFFD instead of failing every scrape."""
    if not value.isascii():
        value = value.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def seconds(value: float) -> str:
    """A measured duration to the microsecond: the digits below are noise, and at 10,000 edges
    each printed digit of the phase gauges and sums costs about 60 KB per scrape."""
    return fmt(round(value, 6))


def fmt(value: float) -> str:
    """A float as Prometheus parses it: repr, with Go's spelling of the specials."""
    if math.isfinite(value):
        return repr(float(value))
    if math.isnan(value):
        return "NaN"
    return "+Inf" if value > 0 else "-Inf"


Emit = Callable[[str], None]


def _labels(source: str, stats: EdgeStats) -> str:
    """The escaped edge label set, cached on the edge: it changes only with the target."""
    t = stats.target
    cached = stats.label_cache
    if cached is not None and cached[0] is t:
        return cached[1]
    values = (source, t.cluster, t.name, t.scope.value, t.kind.value)
    text = ",".join(f'{k}="{escape(v)}"' for k, v in zip(m.EDGE_LABELS, values, strict=True))
    stats.label_cache = (t, text)
    return text


# Each family renders its own samples, a slice of edges per call (a loop per family, not a call
# per edge: at 10,000 edges the per-call overhead would show in the scrape time).


def _success(name: str, src: str, edges: Sequence[EdgeStats], add: Emit) -> None:
    for s in edges:
        ok = s.last is not None and s.last.success
        add(f"{name}{{{_labels(src, s)}}} {'1' if ok else '0'}\n")


@functools.cache
def _bucket_le(bounds: tuple[float, ...]) -> tuple[str, ...]:
    """The `le` label text of each bucket, made once per layout (a few layouts per daemon)."""
    if not bounds:
        return ()
    return (*(f',le="{fmt(b)}"' for b in bounds), ',le="+Inf"')


def _duration(name: str, src: str, edges: Sequence[EdgeStats], add: Emit) -> None:
    """An edge with no bounds (its histogram switched off) exports `_count` and `_sum` only:
    still a valid histogram, and what the success ratio and the mean need."""
    for s in edges:
        lbl = _labels(src, s)
        hist = s.histogram
        running = 0
        for le, n in zip(_bucket_le(hist.bounds), hist.counts, strict=False):
            running += n
            add(f"{name}_bucket{{{lbl}{le}}} {running}\n")
        add(f"{name}_count{{{lbl}}} {hist.count}\n{name}_sum{{{lbl}}} {seconds(hist.sum)}\n")


def _phases(name: str, src: str, edges: Sequence[EdgeStats], add: Emit) -> None:
    for s in edges:
        if s.last is None or not s.target.metrics.phases:
            continue
        lbl = _labels(src, s)
        phases = s.last.phases
        for phase in KIND_PHASES[s.target.scheme]:
            add(f'{name}{{{lbl},phase="{phase.value}"}} {seconds(phases.get(phase, 0.0))}\n')


def _probes(name: str, src: str, edges: Sequence[EdgeStats], add: Emit) -> None:
    for s in edges:
        add(f"{name}_total{{{_labels(src, s)}}} {s.probes_total}\n")


def _failures(name: str, src: str, edges: Sequence[EdgeStats], add: Emit) -> None:
    for s in edges:
        lbl = _labels(src, s)
        for reason, n in s.failures.items():
            add(f'{name}_total{{{lbl},reason="{reason.value}"}} {n}\n')


def _budget(name: str, src: str, edges: Sequence[EdgeStats], add: Emit) -> None:
    for s in edges:
        add(f"{name}{{{_labels(src, s)}}} {fmt(s.target.budget)}\n")


def _over_budget(name: str, src: str, edges: Sequence[EdgeStats], add: Emit) -> None:
    for s in edges:
        add(f"{name}_total{{{_labels(src, s)}}} {s.over_budget_total}\n")


def _served(name: str, src: str, edges: Sequence[EdgeStats], add: Emit) -> None:
    for s in edges:
        lbl = _labels(src, s)
        for cluster, n in s.served.items():
            add(f'{name}_total{{{lbl},served_by_cluster="{escape(cluster)}"}} {n}\n')


def _tcp_rtt(name: str, src: str, edges: Sequence[EdgeStats], add: Emit) -> None:
    for s in edges:
        if s.tcp_rtt is not None:
            add(f"{name}{{{_labels(src, s)}}} {fmt(s.tcp_rtt)}\n")


def _tcp_retransmits(name: str, src: str, edges: Sequence[EdgeStats], add: Emit) -> None:
    for s in edges:
        add(f"{name}_total{{{_labels(src, s)}}} {s.tcp_retransmits_total}\n")


def _with_tls(edges: Sequence[EdgeStats]) -> Iterator[tuple[EdgeStats, TLSReport]]:
    """TLS series exist only while the edge's last attempt saw a chain."""
    for s in edges:
        if s.last_tls is not None:
            yield s, s.last_tls


def _tls_verified(name: str, src: str, edges: Sequence[EdgeStats], add: Emit) -> None:
    for s, tls in _with_tls(edges):
        add(f"{name}{{{_labels(src, s)}}} {'1' if tls.verified else '0'}\n")


def _tls_expiry(name: str, src: str, edges: Sequence[EdgeStats], add: Emit) -> None:
    for s, tls in _with_tls(edges):
        lbl = _labels(src, s)
        for role, ts in sorted(tls.earliest_expiry().items()):
            add(f'{name}{{{lbl},role="{role.value}"}} {int(ts)}\n')  # X.509: whole seconds


def _tls_peer(name: str, src: str, edges: Sequence[EdgeStats], add: Emit) -> None:
    """Who answered, under which root, over which TLS version and cipher: one info series (the
    version and cipher had a family of their own, 1 series and about 190 bytes per edge)."""
    for s, tls in _with_tls(edges):
        root = tls.root.fingerprint_sha256 if tls.root is not None else ""
        identity = escape(tls.identity or "")
        version, cipher = escape(tls.version or ""), escape(tls.cipher or "")
        add(
            f'{name}{{{_labels(src, s)},identity="{identity}",root_fingerprint_sha256="{root}",'
            f'version="{version}",cipher="{cipher}"}} 1\n'
        )


Render = Callable[[str, str, Sequence[EdgeStats], Emit], None]


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
    """Chunks of exposition text: each family's header, then its samples a slice at a time."""
    edges = list(state.edges())
    for family in FAMILIES:
        # Text format 0.0.4 names counters by their sample name, _total included.
        head = f"{family.name}_total" if family.kind == "counter" else family.name
        yield f"# HELP {head} {family.help}\n# TYPE {head} {family.kind}\n"
        for start in range(0, len(edges), SLICE):
            out: list[str] = []
            family.render(family.name, source, edges[start : start + SLICE], out.append)
            if out:
                yield "".join(out)
