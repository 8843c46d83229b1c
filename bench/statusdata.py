"""Synthetic edges for the status page's measurements: N https edges over three clusters, each
ring filled, a share of them failing with details of realistic length. Shared by
bench/status_memory.py and the size and CPU bound of tests/unit/test_status.py."""

from __future__ import annotations

import time

from meshprobe.config.settings import load_settings_from_mapping
from meshprobe.config.targets import make_target
from meshprobe.model import CertRole, CertSummary, Phase, ProbeResult, Reason, Target, TLSReport
from meshprobe.state.edges import ProbeState
from meshprobe.state.instance import InstanceStatus
from meshprobe.state.recent import RecentResults
from meshprobe.web.status import StatusView

CLUSTERS = ("cluster1", "cluster2", "cluster3")
PHASES = {
    Phase.RESOLVE: 0.000123,
    Phase.CONNECT: 0.000457,
    Phase.TLS: 0.003457,
    Phase.PROCESSING: 0.001235,
    Phase.TRANSFER: 0.000046,
}
REFUSED = (
    "Cannot connect to host api-server.team-{i}.svc.cluster.local:8443 ssl:default "
    "[Connect call failed ('10.96.{i}.17', 8443)]"
)
UNTRUSTED = (
    "no path from the leaf 'spiffe://cluster.local/ns/team-{i}/sa/api-server' to a root of "
    "the bundle: its issuer 'CN=cluster2 intermediate CA,O=mesh' is in the chain, but that "
    "intermediate's issuer 'CN=rogue root CA' is not one of our 1 roots (fingerprints 9beb…)"
)


def _tls(now: float, i: int) -> TLSReport:
    def cert(role: CertRole, subject: str, issuer: str, fp: str, days: int) -> CertSummary:
        return CertSummary(
            subject=subject,
            issuer=issuer,
            not_before=now - 3600,
            not_after=float(int(now) + 86400 * days),
            fingerprint_sha256=fp * 64,
            role=role,
            uris=(f"spiffe://cluster.local/ns/team-{i}/sa/api-server",),
        )

    root = cert(CertRole.ROOT, "CN=mesh root CA", "CN=mesh root CA", "b", 3650)
    inter = cert(CertRole.INTERMEDIATE, "CN=cluster2 intermediate CA", "CN=mesh root CA", "c", 365)
    leaf = cert(CertRole.LEAF, "", "CN=cluster2 intermediate CA", "a", 1)
    return TLSReport(
        verified=True,
        reason=None,
        detail="verified",
        chain=(leaf, inter),
        root=root,
        identity=f"spiffe://cluster.local/ns/team-{i}/sa/api-server",
        version="TLSv1.3",
        cipher="TLS_AES_256_GCM_SHA384",
    )


def targets(n: int) -> list[Target]:
    return [
        make_target(
            name=f"team-{i // 3}/api-server-{i}",
            url=f"https://api-server-{i}.team-{i // 3}.svc.cluster.local:8443/healthz",
            cluster=CLUSTERS[i % 3],
            own_cluster=CLUSTERS[0],
            interval=10,
            timeout=2,
            budget=None,
            local_budget=0.05,
            remote_budget=0.15,
        )
        for i in range(n)
    ]


def _result(i: int, k: int, tls: TLSReport, failing_every: int) -> ProbeResult:
    """Every `failing_every`-th edge fails now (alternating refused and untrusted) and has
    failed now and then before; the others answer within budget."""
    if failing_every and i % failing_every == 0 and k % 3 == 0:
        if i % (2 * failing_every) == 0:
            return ProbeResult(False, 0.0009, Reason.CONNECT_REFUSED, REFUSED.format(i=i % 250))
        return ProbeResult(False, 0.004, Reason.TLS_UNTRUSTED, UNTRUSTED.format(i=i), tls=tls)
    duration = 0.002 + (k % 7) * 0.0011 + (0.04 if i % 3 else 0.0)
    return ProbeResult(True, duration, None, "ok", PHASES, 200, CLUSTERS[i % 3], tls)


def synthetic_view(n: int, *, results: int = 60, failing_every: int = 10) -> StatusView:
    """A StatusView of `n` https edges whose rings are full (`results` each)."""
    now = time.time()
    settings = load_settings_from_mapping(
        {"cluster": CLUSTERS[0], "status": {"recent_results": results}}
    )
    made = targets(n)
    state = ProbeState(own_cluster=CLUSTERS[0])
    recent = RecentResults(results)
    state.set_targets(made)
    recent.set_targets(made)
    for i, target in enumerate(made):
        tls = _tls(now, i)
        for k in range(results):
            result = _result(i, k, tls, failing_every)
            state.record(target, result)
            recent.record(target, result, now - (results - k) * 10)
    return StatusView(state, recent, InstanceStatus(config_reload_timestamp=now), lambda: settings)


def fill(recent: RecentResults, made: list[Target], results: int) -> None:
    """Only the rings (the memory measurement keeps ProbeState out of its figure)."""
    now = time.time()
    for i, target in enumerate(made):
        tls = _tls(now, i)
        for k in range(results):
            recent.record(target, _result(i, k, tls, 10), now - (results - k) * 10)


__all__ = ["fill", "synthetic_view", "targets"]
