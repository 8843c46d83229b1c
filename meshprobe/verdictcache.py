"""Reuse TLS verdicts for chains we have already judged.

A mesh server presents the same chain on every handshake, and verifying it (parsing, path
building, signature checks) costs more CPU than the handshake's own cryptography. A verdict
depends only on the presented bytes, our expectations, the anchors and the clock, so it is reused
for a short while: until `ttl` passes or the earliest NotAfter in the chain, whichever comes first.
A new bundle is a new `TrustAnchors` object, so a trust reload never reuses an old verdict.

Only future validity boundaries of the certificates that decide the verdict (the presented chain
less the extras off the verified path, plus the anchoring root) end a reuse early: an expired
extra certificate, or a chain that is already expired, must not turn every probe into a miss.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from meshprobe.model import TLSReport
from meshprobe.tlscheck import TrustAnchors, assess_chain

_Key = tuple[
    tuple[bytes, ...], str | None, str | None, str | None, frozenset[str], str | None, str | None
]


def _boundaries(report: TLSReport, now: float) -> list[float]:
    """The moments after `now` at which a certificate deciding the verdict starts or stops being
    valid."""
    certs = [c for c in report.chain if not c.extra]
    if report.root is not None:
        certs.append(report.root)
    return [t for c in certs for t in (c.not_before, c.not_after) if t > now]


@dataclass(frozen=True, slots=True)
class _Entry:
    anchors: TrustAnchors
    report: TLSReport
    until: float


class VerdictCache:
    def __init__(self, *, ttl: float = 30.0, max_entries: int = 4096) -> None:
        self._ttl = ttl
        self._max = max_entries
        self._entries: OrderedDict[_Key, _Entry] = OrderedDict()
        self.hits = 0
        self.misses = 0

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
        key: _Key = (
            tuple(chain_der),
            server_name,
            expected_identity,
            trust_domain,
            trust_domain_aliases,
            version,
            cipher,
        )
        now = time.time()
        entry = self._entries.get(key)
        if entry is not None and entry.anchors is anchors and now < entry.until:
            self._entries.move_to_end(key)
            self.hits += 1
            return entry.report
        self.misses += 1
        report = assess_chain(
            chain_der,
            anchors=anchors,
            server_name=server_name,
            expected_identity=expected_identity,
            trust_domain=trust_domain,
            trust_domain_aliases=trust_domain_aliases,
            version=version,
            cipher=cipher,
        )
        until = min([now + self._ttl, *_boundaries(report, now)])
        self._entries[key] = _Entry(anchors, report, until)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)
        return report
