"""One edge in the status documents: its state, its row in `/v1/status` and its own document
(`/v1/status/edges/<id>`), from `ProbeState` and the ring of recent results.

The state rules are here (docs/status.md): `failing` when the last probe failed, `over_budget`
when more than 1 % (and at least two) of the window's answers were over budget, `no_data` before
the first probe, `ok` otherwise. Outside text (details, certificate names) is bounded here, and
the URL shown with its userinfo and query masked.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
from dataclasses import dataclass
from enum import StrEnum
from json.encoder import encode_basestring_ascii as _string
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from meshprobe.model import CertSummary, Target, TLSReport, redact_url
from meshprobe.state.edges import EdgeStats
from meshprobe.state.recent import RecentResults, Ring, Window, nearest_rank

__all__ = [
    "STATUS_FORMAT",
    "SUMMARY_DETAIL",
    "TEXT_LIMIT",
    "EdgeFacts",
    "EdgeState",
    "EdgeText",
    "bounded",
    "edge_document",
    "edge_id",
    "encode",
    "num",
    "ratio",
    "shown_url",
    "summary",
]

STATUS_FORMAT = 1  # `format` in both documents: bumped when a field changes meaning or goes
SUMMARY_DETAIL = 200  # characters of the last detail in the edges list (the edge's page: all)
TEXT_LIMIT = 256  # certificate names, a peer's detail: outside text, bounded
NAMES_SHOWN = 5  # SANs listed per certificate, the rest counted (as the TLS details do)
CHAIN_SHOWN = 10  # certificates listed per chain, the rest counted


class EdgeState(StrEnum):
    """One edge's state over the window; the matrix cell takes its edges' worst."""

    FAILING = "failing"  # the last probe failed
    OVER_BUDGET = "over_budget"  # answering, but the window's p99 is over budget (`_over_budget`)
    NO_DATA = "no_data"  # not probed yet
    OK = "ok"


@functools.lru_cache(maxsize=16384)
def edge_id(key: tuple[str, str, str]) -> str:
    """A stable, URL-safe id for an edge (`#/edge/<id>`, `/v1/status/edges/<id>`): 64 bits of
    a hash of its label identity, so it survives restarts and needs no escaping."""
    return hashlib.sha256("\0".join(key).encode("utf-8", "surrogatepass")).hexdigest()[:16]


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


def bounded(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def num(value: float | None) -> float | None:
    """Seconds to the microsecond (the digits below are noise, and bytes at 1,000 edges)."""
    if value is None or not math.isfinite(value):
        return None
    return round(value, 6)


def ratio(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


# -- one edge -------------------------------------------------------------------------------------


@dataclass(slots=True)
class EdgeFacts:
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
    def of(cls, stats: EdgeStats, recent: RecentResults) -> EdgeFacts:
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
    """What changes only with the target (encoded once per target by `EdgeText`)."""
    return {
        "id": edge_id(target.key),
        "target": target.name,
        "cluster": target.cluster,
        "scope": target.scope.value,
        "kind": target.kind.value,
        "scheme": target.scheme,
        "url": shown_url(target.url),
        "discovery": target.discovery,
        "budget_seconds": num(target.budget),
        "interval_seconds": num(target.interval),
    }


def _last(edge: EdgeFacts, detail_limit: int) -> dict[str, Any] | None:
    last = edge.stats.last
    if last is None:
        return None
    return {
        "at": edge.ring.last_at() if edge.ring is not None else None,
        "success": last.success,
        "reason": last.reason.value if last.reason is not None else None,
        "detail": bounded(last.detail, detail_limit),
        "duration_seconds": num(last.duration),
        "status_code": last.status_code,
        "served_by": bounded(last.served_by, TEXT_LIMIT) if last.served_by else None,
    }


def summary(edge: EdgeFacts, *, detail_limit: int) -> dict[str, Any]:
    """One edge as the edges list has it (`detail_limit` SUMMARY_DETAIL there, all of it on the
    edge's own document). `EdgeText.encoded` writes the same JSON faster, for the list."""
    return {
        **_static(edge.stats.target),
        "state": edge.state.value,
        "probes_total": edge.stats.probes_total,
        "last": _last(edge, detail_limit),
        "window": {
            "results": edge.results,
            "successes": edge.successes,
            "success_ratio": ratio(edge.successes, edge.results),
            "p50_seconds": num(edge.p50),
            "p99_seconds": num(edge.p99),
            "over_budget": edge.over,
            "since": edge.since,
        },
        "tls": _tls_summary(edge.stats.last_tls),
    }


def _j(value: float | None) -> str:
    """A number as `encode(num(value))` writes it."""
    return "null" if value is None or not math.isfinite(value) else repr(round(value, 6))


@dataclass(slots=True)
class EdgeText:
    """The edges list's JSON of one edge, written as text (as `/metrics` is): the target's
    fields encoded once per target, the TLS summary once per report (the verdict cache hands
    every probe of one server the same report), the rest formatted per build. Equal, byte for
    byte, to `encode(summary(edge, detail_limit=SUMMARY_DETAIL))` (a unit test holds it to
    that); dicts built and encoded per edge were two thirds of a build at 1,000 edges."""

    target: Target
    head: str  # `{"id":...,"interval_seconds":...,` : the static fields, open
    report: TLSReport | None = None
    tls: str = "null"

    @classmethod
    def of(cls, target: Target) -> EdgeText:
        return cls(target, _ENCODER.encode(_static(target))[:-1] + ",")

    def encoded(self, edge: EdgeFacts) -> str:
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
            served = _string(bounded(last.served_by, TEXT_LIMIT)) if last.served_by else "null"
            last_text = (
                f'{{"at":{"null" if at is None else repr(at)},'
                f'"success":{"true" if last.success else "false"},"reason":{reason},'
                f'"detail":{_string(bounded(last.detail, SUMMARY_DETAIL))},'
                f'"duration_seconds":{_j(last.duration)},'
                f'"status_code":{"null" if last.status_code is None else last.status_code},'
                f'"served_by":{served}}}'
            )
        share = ratio(edge.successes, edge.results)
        share_text = "null" if share is None else repr(share)
        since = "null" if edge.since is None else repr(edge.since)
        return (
            f'{self.head}"state":"{edge.state.value}","probes_total":{stats.probes_total},'
            f'"last":{last_text},"window":{{"results":{edge.results},'
            f'"successes":{edge.successes},"success_ratio":{share_text},'
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
        "identity": bounded(report.identity, TEXT_LIMIT) if report.identity else None,
        "version": report.version,
        "earliest_expiry": earliest[1] if earliest else None,
        "earliest_expiry_role": earliest[0].value if earliest else None,
    }


def _names(values: tuple[str, ...]) -> dict[str, Any]:
    return {
        "shown": [bounded(v, TEXT_LIMIT) for v in values[:NAMES_SHOWN]],
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
        "subject": bounded(cert.subject, TEXT_LIMIT),
        "issuer": bounded(cert.issuer, TEXT_LIMIT),
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


def edge_document(edge: EdgeFacts, *, cluster: str, window_results: int, now: float) -> bytes:
    """`/v1/status/edges/<id>`: the edge with its recent results, phases, chain and failures."""
    stats = edge.stats
    last = stats.last
    recent = edge.ring.entries() if edge.ring is not None else []
    failures = edge.ring.failures if edge.ring is not None else []
    doc = {
        "format": STATUS_FORMAT,
        "generated_at": now,
        "cluster": cluster,
        "window_results": window_results,
        "edge": summary(edge, detail_limit=len(last.detail) if last is not None else 0),
        "recent": [
            {"at": at, "duration_seconds": num(d), "reason": r.value if r else None}
            for at, d, r in recent
        ],
        "phases": (
            {phase.value: num(seconds) for phase, seconds in last.phases.items()}
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
