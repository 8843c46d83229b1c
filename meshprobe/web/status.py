"""The status documents: `GET /v1/status` (matrix, edges, instance) and one edge's detail.

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
import functools
import hashlib
import json
import math
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from json.encoder import encode_basestring_ascii as _string
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from meshprobe import __version__
from meshprobe.config.settings import Settings
from meshprobe.model import CertSummary, Scope, Target, TLSReport, redact_url
from meshprobe.state.edges import EdgeStats, ProbeState
from meshprobe.state.instance import InstanceStatus, PeerStatus
from meshprobe.state.recent import RecentResults, Ring, Window, nearest_rank

__all__ = [
    "STATUS_FORMAT",
    "EdgeState",
    "StatusView",
    "edge_body",
    "edge_id",
    "status_body",
]

STATUS_FORMAT = 1  # `format` in both documents: bumped when a field changes meaning or goes
SLICE = 100  # edges encoded between two yields to the loop (as /metrics): ~5 ms each
SUMMARY_DETAIL = 200  # characters of the last detail in the edges list (the edge's page: all)
TEXT_LIMIT = 256  # certificate names, a peer's detail: outside text, bounded
NAMES_SHOWN = 5  # SANs listed per certificate, the rest counted (as the TLS details do)
CHAIN_SHOWN = 10  # certificates listed per chain, the rest counted
ROOTS_SHOWN = 20  # roots of our bundle listed (an OS bundle has 150), the rest counted


class EdgeState(StrEnum):
    """One edge's state over the window; the matrix cell takes its edges' worst."""

    FAILING = "failing"  # the last probe failed
    OVER_BUDGET = "over_budget"  # answering, but the window's p99 is over budget (`_over_budget`)
    NO_DATA = "no_data"  # not probed yet
    OK = "ok"


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
    texts: dict[tuple[str, str, str], _EdgeText] = field(default_factory=dict, repr=False)


@functools.lru_cache(maxsize=16384)
def edge_id(key: tuple[str, str, str]) -> str:
    """A stable, URL-safe id for an edge (`#/edge/<id>`, `/v1/status/edges/<id>`): 64 bits of
    a hash of its label identity, so it survives restarts and needs no escaping."""
    return hashlib.sha256("\0".join(key).encode("utf-8", "surrogatepass")).hexdigest()[:16]


def refresh_seconds(settings: Settings) -> int:
    """How often the page fetches: the probe interval, kept within 1..5 s (faster shows nothing
    new; slower would leave a person staring at a stale table)."""
    return max(1, min(5, math.ceil(settings.defaults.interval)))


def shown_url(url: str) -> str:
    """The URL as the logs show it (userinfo as `***`), and its query masked too: a query may
    carry a token that is the target's business alone."""
    if not any(c in url for c in "@?#"):  # no userinfo, query or fragment: nothing to hide
        return url
    shown = redact_url(url)
    try:
        parts = urlsplit(shown)
    except ValueError:
        return "(unparseable URL)"
    if parts.query:
        parts = parts._replace(query="***")
    return urlunsplit(parts._replace(fragment=""))


_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False)


def encode(doc: Any) -> bytes:
    """Compact, ASCII-only JSON: a lone surrogate in outside text is escaped, never an error."""
    return _ENCODER.encode(doc).encode("ascii")


def _bounded(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _num(value: float | None) -> float | None:
    """Seconds to the microsecond (the digits below are noise, and bytes at 1,000 edges)."""
    if value is None or not math.isfinite(value):
        return None
    return round(value, 6)


def _ratio(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


# -- one edge -------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Edge:
    """One edge's facts for this build, its window reduced once and shared by its row, its
    state and its matrix cell."""

    stats: EdgeStats
    ring: Ring | None
    results: int
    successes: int
    p50: float | None
    p99: float | None
    over: int  # successful probes over budget in the window
    since: float | None
    state: EdgeState

    @classmethod
    def of(cls, stats: EdgeStats, recent: RecentResults) -> _Edge:
        ring = recent.get(stats.target)
        window = ring.window() if ring is not None else Window(0, 0, (), None)
        durations = window.durations
        over = window.over(stats.target.budget)
        return cls(
            stats,
            ring,
            window.results,
            window.successes,
            nearest_rank(durations, 0.5),
            nearest_rank(durations, 0.99),
            over,
            window.since,
            _state(stats, over, window.successes),
        )


def _state(stats: EdgeStats, over: int, answers: int) -> EdgeState:
    last = stats.last
    if last is None:
        return EdgeState.NO_DATA
    if not last.success:
        return EdgeState.FAILING
    if _over_budget(over, answers):
        return EdgeState.OVER_BUDGET
    return EdgeState.OK


def _over_budget(over: int, answers: int) -> bool:
    """More than 1 % of the window's answers over budget (the latency SLO's line: its p99 is
    over), and at least two of them: one slow probe alone (a cold start, a retransmitted SYN)
    shows in the p99 and the chart but does not colour the edge for the whole window."""
    return over >= 2 and over > 0.01 * answers


def _static(target: Target) -> dict[str, Any]:
    """What changes only with the target (encoded once per target by `_EdgeText`)."""
    return {
        "id": edge_id(target.key),
        "target": target.name,
        "cluster": target.cluster,
        "scope": target.scope.value,
        "kind": target.kind.value,
        "scheme": target.scheme,
        "url": shown_url(target.url),
        "discovery": target.discovery,
        "budget_seconds": _num(target.budget),
        "interval_seconds": _num(target.interval),
    }


def _last(edge: _Edge, detail_limit: int) -> dict[str, Any] | None:
    last = edge.stats.last
    if last is None:
        return None
    return {
        "at": edge.ring.last_at() if edge.ring is not None else None,
        "success": last.success,
        "reason": last.reason.value if last.reason is not None else None,
        "detail": _bounded(last.detail, detail_limit),
        "duration_seconds": _num(last.duration),
        "status_code": last.status_code,
        "served_by": _bounded(last.served_by, TEXT_LIMIT) if last.served_by else None,
    }


def _summary(edge: _Edge, *, detail_limit: int) -> dict[str, Any]:
    """One edge as the edges list has it (`detail_limit` SUMMARY_DETAIL there, all of it on the
    edge's own document). `_EdgeText.encoded` writes the same JSON faster, for the list."""
    return {
        **_static(edge.stats.target),
        "state": edge.state.value,
        "probes_total": edge.stats.probes_total,
        "last": _last(edge, detail_limit),
        "window": {
            "results": edge.results,
            "successes": edge.successes,
            "success_ratio": _ratio(edge.successes, edge.results),
            "p50_seconds": _num(edge.p50),
            "p99_seconds": _num(edge.p99),
            "over_budget": edge.over,
            "since": edge.since,
        },
        "tls": _tls_summary(edge.stats.last_tls),
    }


def _j(value: float | None) -> str:
    """A number as `encode(_num(value))` writes it."""
    return "null" if value is None or not math.isfinite(value) else repr(round(value, 6))


@dataclass(slots=True)
class _EdgeText:
    """The edges list's JSON of one edge, written as text (as `/metrics` is): the target's
    fields encoded once per target, the TLS summary once per report (the verdict cache hands
    every probe of one server the same report), the rest formatted per build. Equal, byte for
    byte, to `encode(_summary(edge, detail_limit=SUMMARY_DETAIL))` (a unit test holds it to
    that); dicts built and encoded per edge were two thirds of a build at 1,000 edges."""

    target: Target
    head: str  # `{"id":...,"interval_seconds":...,` : the static fields, open
    report: TLSReport | None = None
    tls: str = "null"

    @classmethod
    def of(cls, target: Target) -> _EdgeText:
        return cls(target, _ENCODER.encode(_static(target))[:-1] + ",")

    def encoded(self, edge: _Edge) -> str:
        stats = edge.stats
        if stats.last_tls is not self.report:
            self.report = stats.last_tls
            self.tls = _ENCODER.encode(_tls_summary(stats.last_tls))
        last = stats.last
        if last is None:
            last_text = "null"
        else:
            at = edge.ring.last_at() if edge.ring is not None else None
            reason = f'"{last.reason.value}"' if last.reason is not None else "null"
            served = _string(_bounded(last.served_by, TEXT_LIMIT)) if last.served_by else "null"
            last_text = (
                f'{{"at":{"null" if at is None else repr(at)},'
                f'"success":{"true" if last.success else "false"},"reason":{reason},'
                f'"detail":{_string(_bounded(last.detail, SUMMARY_DETAIL))},'
                f'"duration_seconds":{_j(last.duration)},'
                f'"status_code":{"null" if last.status_code is None else last.status_code},'
                f'"served_by":{served}}}'
            )
        ratio = _ratio(edge.successes, edge.results)
        ratio_text = "null" if ratio is None else repr(ratio)
        since = "null" if edge.since is None else repr(edge.since)
        return (
            f'{self.head}"state":"{edge.state.value}","probes_total":{stats.probes_total},'
            f'"last":{last_text},"window":{{"results":{edge.results},'
            f'"successes":{edge.successes},"success_ratio":{ratio_text},'
            f'"p50_seconds":{_j(edge.p50)},"p99_seconds":{_j(edge.p99)},'
            f'"over_budget":{edge.over},"since":{since}}},"tls":{self.tls}}}'
        )


def _tls_summary(report: TLSReport | None) -> dict[str, Any] | None:
    if report is None:
        return None
    expiry = report.earliest_expiry()
    earliest = min(expiry.items(), key=lambda item: item[1]) if expiry else None
    return {
        "verified": report.verified,
        "reason": report.reason.value if report.reason is not None else None,
        "identity": _bounded(report.identity, TEXT_LIMIT) if report.identity else None,
        "version": report.version,
        "earliest_expiry": earliest[1] if earliest else None,
        "earliest_expiry_role": earliest[0].value if earliest else None,
    }


def _names(values: tuple[str, ...]) -> dict[str, Any]:
    return {
        "shown": [_bounded(v, TEXT_LIMIT) for v in values[:NAMES_SHOWN]],
        "more": max(0, len(values) - NAMES_SHOWN),
    }


def _cert(cert: CertSummary, report: TLSReport, now: float) -> dict[str, Any]:
    """A certificate's public facts and its own part of the verdict: off the verified path,
    outside its validity window, or on a chain that verified (the chain's reason says the rest)."""
    if cert.extra:
        verdict = "not_on_path"
    elif now > cert.not_after:
        verdict = "expired"
    elif now < cert.not_before:
        verdict = "not_yet_valid"
    else:
        verdict = "verified" if report.verified else "unverified"
    return {
        "subject": _bounded(cert.subject, TEXT_LIMIT),
        "issuer": _bounded(cert.issuer, TEXT_LIMIT),
        "role": cert.role.value,
        "not_before": cert.not_before,
        "not_after": cert.not_after,
        "fingerprint_sha256": cert.fingerprint_sha256,
        "from_bundle": cert.from_bundle,
        "verdict": verdict,
        "dns_names": _names(cert.dns_names),
        "uris": _names(cert.uris),
        "ip_addresses": _names(cert.ip_addresses),
    }


def _tls_detail(report: TLSReport | None, now: float) -> dict[str, Any] | None:
    if report is None:
        return None
    doc = _tls_summary(report)
    assert doc is not None
    chain = list(report.chain)
    root = report.root
    if root is not None and all(c.fingerprint_sha256 != root.fingerprint_sha256 for c in chain):
        chain.append(root)  # the anchor from our bundle, shown where the chain ends
    doc |= {
        "detail": report.detail,
        "cipher": report.cipher,
        "chain": [_cert(c, report, now) for c in chain[:CHAIN_SHOWN]],
        "chain_more": max(0, len(chain) - CHAIN_SHOWN),
    }
    return doc


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

    def add(self, edge: _Edge) -> None:
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
            "success_ratio": _ratio(self.successes, self.results),
            "p50_seconds": _num(nearest_rank(sorted(self.p50s), 0.5)),
            "p99_seconds": _num(self.p99),
            "budget_seconds": (
                {"min": _num(min(self.budgets)), "max": _num(max(self.budgets))}
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
    return {"up": status.up, "trust": trust, "detail": _bounded(status.detail, TEXT_LIMIT)}


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
        "mean_seconds": _num(hist.sum / count) if count else None,
        "p50_le_seconds": bound(0.5),
        "p99_le_seconds": bound(0.99),
    }


def _instance(
    settings: Settings, instance: InstanceStatus, edges: Iterable[_Edge]
) -> dict[str, Any]:
    bundle = instance.bundle
    roots: list[dict[str, Any]] = []
    if bundle is not None:
        for cert in sorted((bundle.summary_of(r) for r in bundle.roots), key=lambda s: s.not_after)[
            :ROOTS_SHOWN
        ]:
            roots.append(
                {
                    "subject": _bounded(cert.subject, TEXT_LIMIT),
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
    edges: list[_Edge] = []
    texts: dict[tuple[str, str, str], _EdgeText] = {}  # this build's edges only: removed go
    for n, stats in enumerate(view.state.edges(), start=1):
        edge = _Edge.of(stats, view.recent)
        edges.append(edge)
        target = stats.target
        text = view.texts.get(target.key)
        if text is None or text.target is not target:
            text = _EdgeText.of(target)
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
    """`/v1/status/edges/<id>`: one edge with its recent results, phases, chain and failures;
    None when no edge has that id (removed, or never was)."""
    stats = _find(view, wanted)
    if stats is None:
        return None
    edge = _Edge.of(stats, view.recent)
    now = time.time()
    last = stats.last
    recent = edge.ring.entries() if edge.ring is not None else []
    failures = edge.ring.failures if edge.ring is not None else []
    doc = {
        "format": STATUS_FORMAT,
        "generated_at": now,
        "cluster": view.settings().cluster,
        "window_results": view.recent.size,
        "edge": _summary(edge, detail_limit=len(last.detail) if last is not None else 0),
        "recent": [
            {"at": at, "duration_seconds": _num(d), "reason": r.value if r else None}
            for at, d, r in recent
        ],
        "phases": (
            {phase.value: _num(seconds) for phase, seconds in last.phases.items()}
            if last is not None
            else {}
        ),
        "tls": _tls_detail(stats.last_tls, now),
        "failures": [
            {
                "first_at": f.first_at,
                "last_at": f.last_at,
                "count": f.count,
                "reason": f.reason.value,
                "detail": f.detail,
            }
            for f in reversed(failures)
        ],
        "failures_total": {r.value: n for r, n in sorted(stats.failures.items())},
        "over_budget_total": stats.over_budget_total,
        "served_total": dict(sorted(stats.served.items())),
    }
    return encode(doc)
