"""Reuse TLS verdicts for chains we have already judged, within a fixed memory budget.

A mesh server presents the same chain on every handshake, and verifying it (parsing, path
building, signature checks) costs more CPU than the handshake's own cryptography. A verdict
depends only on the presented bytes, our expectations, the anchors and the clock, so it is reused
for a short while: until `ttl` passes or the earliest NotAfter in the chain, whichever comes first.
A new bundle is a new `TrustAnchors` object, so a trust reload never reuses an old verdict.

Only future validity boundaries of the certificates that decide the verdict (the presented chain
less the extras off the verified path, plus the anchoring root) end a reuse early: an expired
extra certificate, or a chain that is already expired, must not turn every probe into a miss.

Entries are keyed by the chain (a SHA-256 digest of its DER, so a hostile 90 KB chain costs 32
bytes of key) and the anchors, not by the expectations: the name and SPIFFE checks are cheap and
are applied to the cached chain verdict on every call, so all the targets served by one workload
share one entry. The working set is then the number of distinct chains, not of targets.

The cache is bounded three ways, because a server may present a fresh chain on every handshake
(a rotating or hostile server filled 4,096 entries of ~0.9 MiB each before this): by entry count,
by an estimate of the bytes each entry keeps alive (`sys.getsizeof` of every string and tuple in
the report, plus a fixed overhead), and by time (expired entries leave, they do not wait to be
pushed out). A report larger than the whole byte budget is returned but never cached.
"""

from __future__ import annotations

import hashlib
import heapq
import sys
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from meshprobe.model import CertSummary, Reason, TLSReport
from meshprobe.trust.anchors import TrustAnchors
from meshprobe.trust.names import identity_problem
from meshprobe.trust.policy import cert_label
from meshprobe.trust.verdict import assess_chain

__all__ = ["DEFAULT_MAX_BYTES", "DEFAULT_MAX_ENTRIES", "DEFAULT_TTL", "VerdictCache"]

DEFAULT_TTL = 30.0
# Distinct chains, not targets (see the module docstring): a mesh chain (SPIFFE leaf and
# intermediate under a bundle root) is estimated at 2.3 KiB (1.6 KiB measured with tracemalloc),
# so 16 MiB holds ~7,000 of them; the entry bound keeps a flood of tiny chains from making the
# bookkeeping itself the cost. 16 MiB is also what a hostile server can make us hold.
DEFAULT_MAX_ENTRIES = 8192
DEFAULT_MAX_BYTES = 16 * 2**20
# The key tuple, its digest, the OrderedDict node, the _Entry and its expiry-heap item.
_ENTRY_OVERHEAD = 512

_Key = tuple[bytes, int]


def _boundaries(report: TLSReport, now: float) -> list[float]:
    """The moments after `now` at which a certificate deciding the verdict starts or stops being
    valid."""
    certs = [c for c in report.chain if not c.extra]
    if report.root is not None:
        certs.append(report.root)
    return [t for c in certs for t in (c.not_before, c.not_after) if t > now]


def _digest(chain_der: Sequence[bytes]) -> bytes:
    """One fixed-size key for the whole chain; lengths are hashed too, so two chains that
    concatenate to the same bytes stay apart."""
    h = hashlib.sha256()
    for der in chain_der:
        h.update(len(der).to_bytes(4, "big"))
        h.update(der)
    return h.digest()


def _summary_bytes(cert: CertSummary) -> int:
    size = sys.getsizeof(cert)
    for text in (cert.subject, cert.issuer, cert.fingerprint_sha256):
        size += sys.getsizeof(text)
    for names in (cert.dns_names, cert.uris, cert.ip_addresses):
        size += sys.getsizeof(names) + sum(sys.getsizeof(n) for n in names)
    return size


def footprint(report: TLSReport) -> int:
    """An estimate, from above, of the bytes a cached report keeps alive (shared strings are
    counted as if they were not)."""
    size = _ENTRY_OVERHEAD + sys.getsizeof(report) + sys.getsizeof(report.detail)
    size += sys.getsizeof(report.chain) + sum(_summary_bytes(c) for c in report.chain)
    if report.root is not None:
        size += _summary_bytes(report.root)
    if report.identity is not None:
        size += sys.getsizeof(report.identity)
    return size


@dataclass(frozen=True, slots=True)
class _Entry:
    anchors: TrustAnchors
    report: TLSReport  # the verdict on the chain alone, with no name expectations
    until: float
    size: int
    seq: int  # tells this entry's expiry-heap item from those of entries it replaced


def _expect(
    base: TLSReport,
    *,
    server_name: str | None,
    expected_identity: str | None,
    trust_domain: str | None,
    trust_domain_aliases: frozenset[str],
    version: str | None,
    cipher: str | None,
) -> TLSReport:
    """The verdict with our expectations applied: what `tlscheck.assess_chain` would answer. It
    checks names last, on a chain that is otherwise verified, so a failed chain verdict stands
    as it is and a verified one fails only on `identity_problem`."""
    if base.verified and base.chain:
        leaf = base.chain[0]
        problem = identity_problem(
            leaf,
            cert_label(leaf),
            server_name=server_name,
            expected_identity=expected_identity,
            trust_domain=trust_domain,
            trust_domain_aliases=trust_domain_aliases,
        )
        if problem is not None:
            return TLSReport(
                False,
                Reason.TLS_IDENTITY,
                problem,
                base.chain,
                base.root,
                base.identity,
                version,
                cipher,
            )
    if (base.version, base.cipher) == (version, cipher):
        return base
    return replace(base, version=version, cipher=cipher)


class VerdictCache:
    """Chain verdicts shared by the probes of one `ProbeEnv`; see the module docstring.

    `clock` is the wall clock (certificate validity is wall time); tests inject their own.
    """

    def __init__(
        self,
        *,
        ttl: float = DEFAULT_TTL,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        max_bytes: int = DEFAULT_MAX_BYTES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        for name, value in (("ttl", ttl), ("max_entries", max_entries), ("max_bytes", max_bytes)):
            if value < 0:
                raise ValueError(f"VerdictCache {name} must not be negative, got {value}")
        self._ttl = ttl
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._clock = clock
        self._entries: OrderedDict[_Key, _Entry] = OrderedDict()  # least recently used first
        self._expiry: list[tuple[float, int, _Key]] = []  # a heap; stale items are skipped
        self._seq = 0
        self.size_bytes = 0  # the sum of the cached entries' footprints
        self.hits = 0
        self.misses = 0
        self.uncacheable = 0  # reports larger than the whole byte budget

    def __len__(self) -> int:
        return len(self._entries)

    def assess(
        self,
        chain_der: Sequence[bytes],
        *,
        anchors: TrustAnchors,
        server_name: str | None,
        expected_identity: str | None,
        trust_domain: str | None,
        version: str | None,
        cipher: str | None,
        trust_domain_aliases: frozenset[str] = frozenset(),
    ) -> TLSReport:
        """`tlscheck.assess_chain`, reusing the chain's verdict while it is fresh."""
        now = self._clock()
        self._expire(now)
        key: _Key = (_digest(chain_der), id(anchors))
        entry = self._entries.get(key)
        if entry is not None and entry.anchors is anchors and now < entry.until:
            self._entries.move_to_end(key)
            self.hits += 1
            base = entry.report
        else:
            self.misses += 1
            base = assess_chain(
                chain_der,
                anchors=anchors,
                server_name=None,
                now=datetime.fromtimestamp(now, UTC),
                version=version,
                cipher=cipher,
            )
            self._store(key, anchors, base, now)
        return _expect(
            base,
            server_name=server_name,
            expected_identity=expected_identity,
            trust_domain=trust_domain,
            trust_domain_aliases=trust_domain_aliases,
            version=version,
            cipher=cipher,
        )

    def _store(self, key: _Key, anchors: TrustAnchors, report: TLSReport, now: float) -> None:
        self._drop(key)  # a stale entry, or one made under other anchors that shared the id
        until = min([now + self._ttl, *_boundaries(report, now)])
        size = footprint(report)
        if until <= now or self.max_entries == 0:
            return
        if size > self.max_bytes:
            self.uncacheable += 1
            return
        self._seq += 1
        self._entries[key] = _Entry(anchors, report, until, size, self._seq)
        self.size_bytes += size
        heapq.heappush(self._expiry, (until, self._seq, key))
        while len(self._entries) > self.max_entries or self.size_bytes > self.max_bytes:
            _, evicted = self._entries.popitem(last=False)
            self.size_bytes -= evicted.size
        if len(self._expiry) > 2 * len(self._entries) + 64:
            # Items of evicted or replaced entries wait in the heap until their time; rebuild
            # it now and then so that a churn of evictions cannot grow it without bound.
            self._expiry = [(e.until, e.seq, k) for k, e in self._entries.items()]
            heapq.heapify(self._expiry)

    def _drop(self, key: _Key) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self.size_bytes -= entry.size

    def _expire(self, now: float) -> None:
        """Remove every entry whose time has come: O(1) when none has."""
        heap = self._expiry
        while heap and heap[0][0] <= now:
            _, seq, key = heapq.heappop(heap)
            entry = self._entries.get(key)
            if entry is not None and entry.seq == seq:
                self._drop(key)
