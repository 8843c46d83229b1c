"""Fast text exposition of the per-edge families, in slices.

With 10,000 targets the edge families are over half a million samples. Building
prometheus_client Metric objects for them takes seconds and blocks the event loop for all of it,
which would inflate every probe timing taken meanwhile. Here each edge's label set is escaped once
and the text (format 0.0.4) is written straight from ProbeState, a few hundred edges per slice, so
the server can yield to the loop between slices. Instance metrics stay with prometheus_client.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from meshprobe.metrics import names as m
from meshprobe.model import KIND_PHASES
from meshprobe.probes.tcpinfo import SUPPORTED as TCP_INFO_SUPPORTED
from meshprobe.state.edges import EdgeStats, ProbeState

SLICE = 500  # edges rendered between two yields to the event loop


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


@dataclass(frozen=True, slots=True)
class Family:
    name: str  # the family name as in # TYPE (counters without _total)
    kind: str  # gauge|counter|histogram
    help: str


FAMILIES: Sequence[Family] = (
    Family(m.PROBE_SUCCESS, "gauge", "Whether the last probe of the edge succeeded."),
    Family(
        m.PROBE_DURATION,
        "histogram",
        "Wall-clock duration of successful probes, from start to complete answer.",
    ),
    Family(m.PROBE_PHASE_DURATION, "gauge", "Duration of each phase of the last probe."),
    Family(m.PROBES, "counter", "Probes run."),
    Family(m.PROBE_FAILURES, "counter", "Failed probes by reason."),
    Family(m.LATENCY_BUDGET, "gauge", "Latency budget of the edge."),
    Family(
        m.PROBE_OVER_BUDGET,
        "counter",
        "Successful probes slower than the edge's latency budget.",
    ),
    Family(m.SERVED, "counter", "Answers by the cluster named in X-Meshprobe-Cluster."),
    *(
        (
            Family(m.TCP_RTT, "gauge", "Kernel smoothed RTT of the last fresh connection."),
            Family(
                m.TCP_RETRANSMITS,
                "counter",
                "TCP segments retransmitted on fresh probe connections, SYNs included.",
            ),
        )
        if TCP_INFO_SUPPORTED
        else ()
    ),
    Family(m.TLS_VERIFIED, "gauge", "Whether the last presented chain verified."),
    Family(m.TLS_CERT_EXPIRY, "gauge", "Earliest NotAfter per certificate role in the last chain."),
    Family(m.TLS_PEER_INFO, "gauge", "Identity and anchoring root of the last presented chain."),
    Family(m.TLS_VERSION_INFO, "gauge", "TLS version and cipher negotiated by the last handshake."),
)

_BUCKET_LE = (*(f',le="{b!r}"' for b in m.DURATION_BUCKETS), ',le="+Inf"')


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


def _render(family: Family, source: str, edges: Sequence[EdgeStats]) -> str:
    name = family.name
    out: list[str] = []
    add = out.append
    if name == m.PROBE_SUCCESS:
        for s in edges:
            ok = s.last is not None and s.last.success
            add(f"{name}{{{_labels(source, s)}}} {'1.0' if ok else '0.0'}\n")
    elif name == m.PROBE_DURATION:
        for s in edges:
            lbl = _labels(source, s)
            running = 0
            for le, n in zip(_BUCKET_LE, s.histogram.counts, strict=True):
                running += n
                add(f"{name}_bucket{{{lbl}{le}}} {running}.0\n")
            add(f"{name}_count{{{lbl}}} {running}.0\n{name}_sum{{{lbl}}} {fmt(s.histogram.sum)}\n")
    elif name == m.PROBE_PHASE_DURATION:
        for s in edges:
            if s.last is None:
                continue
            lbl = _labels(source, s)
            phases = s.last.phases
            for phase in KIND_PHASES[s.target.scheme]:
                add(f'{name}{{{lbl},phase="{phase.value}"}} {fmt(phases.get(phase, 0.0))}\n')
    elif name == m.PROBES:
        for s in edges:
            add(f"{name}_total{{{_labels(source, s)}}} {s.probes_total}.0\n")
    elif name == m.PROBE_FAILURES:
        for s in edges:
            lbl = _labels(source, s)
            for reason, n in s.failures.items():
                add(f'{name}_total{{{lbl},reason="{reason.value}"}} {n}.0\n')
    elif name == m.LATENCY_BUDGET:
        for s in edges:
            add(f"{name}{{{_labels(source, s)}}} {fmt(s.target.budget)}\n")
    elif name == m.PROBE_OVER_BUDGET:
        for s in edges:
            add(f"{name}_total{{{_labels(source, s)}}} {s.over_budget_total}.0\n")
    elif name == m.TCP_RTT:
        for s in edges:
            if s.tcp_rtt is not None:
                add(f"{name}{{{_labels(source, s)}}} {fmt(s.tcp_rtt)}\n")
    elif name == m.TCP_RETRANSMITS:
        for s in edges:
            add(f"{name}_total{{{_labels(source, s)}}} {s.tcp_retransmits_total}.0\n")
    elif name == m.SERVED:
        for s in edges:
            lbl = _labels(source, s)
            for cluster, n in s.served.items():
                add(f'{name}_total{{{lbl},served_by_cluster="{escape(cluster)}"}} {n}.0\n')
    else:
        _render_tls(family, source, edges, add)
    return "".join(out)


def _render_tls(
    family: Family, source: str, edges: Sequence[EdgeStats], emit: Callable[[str], None]
) -> None:
    name = family.name
    for s in edges:
        tls = s.last_tls
        if tls is None:
            continue
        lbl = _labels(source, s)
        if name == m.TLS_VERIFIED:
            emit(f"{name}{{{lbl}}} {'1.0' if tls.verified else '0.0'}\n")
        elif name == m.TLS_CERT_EXPIRY:
            for role, ts in sorted(tls.earliest_expiry().items()):
                emit(f'{name}{{{lbl},role="{role.value}"}} {fmt(ts)}\n')
        elif name == m.TLS_VERSION_INFO:
            if tls.version is not None:
                version, cipher = escape(tls.version), escape(tls.cipher or "")
                emit(f'{name}{{{lbl},version="{version}",cipher="{cipher}"}} 1.0\n')
        elif name == m.TLS_PEER_INFO:
            root = tls.root.fingerprint_sha256 if tls.root is not None else ""
            identity = escape(tls.identity or "")
            emit(f'{name}{{{lbl},identity="{identity}",root_fingerprint_sha256="{root}"}} 1.0\n')


def edge_exposition(state: ProbeState, source: str) -> Iterator[str]:
    """Chunks of exposition text: each family's header, then its samples a slice at a time."""
    edges = list(state.edges())
    for family in FAMILIES:
        # Text format 0.0.4 names counters by their sample name, _total included.
        head = f"{family.name}_total" if family.kind == "counter" else family.name
        yield f"# HELP {head} {family.help}\n# TYPE {head} {family.kind}\n"
        for start in range(0, len(edges), SLICE):
            chunk = _render(family, source, edges[start : start + SLICE])
            if chunk:
                yield chunk
