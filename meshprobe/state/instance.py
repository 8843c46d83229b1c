"""Facts about this meshprobe process that are not per edge: reloads, discovery sources, peers.

Written by the daemon, discovery and the peer exchange; read by the instance collector, the demo
and the status endpoints. Plain data: nothing here does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from meshprobe.state.histogram import LOOP_LAG_BUCKETS, Histogram
from meshprobe.trust.anchors import TrustAnchors
from meshprobe.trust.clientcert import ClientCertificates


@dataclass(frozen=True, slots=True)
class PeerStatus:
    up: bool
    roots: frozenset[str]  # the peer's root fingerprints (empty when down)
    detail: str
    tls_untrusted: bool = False  # an https peer whose chain our bundle rejects
    partial: bool = False  # the peer's document lists only some of its roots (truncated)


def trust_match(status: PeerStatus, ours: frozenset[str] | None) -> bool | None:
    """True while the peer and we share a root (a rotation holds old and new side by side), False
    when disjoint or when the peer's chain fails our bundle, None when it cannot be known."""
    if status.tls_untrusted:
        return False  # the peer's chain does not lead to any of our roots
    if ours is None or not status.up:
        return None
    if ours & status.roots:
        return True
    return None if status.partial else False  # an unlisted root may be one we share


@dataclass(slots=True)
class DiscoveryHealth:
    """Per discovery source (`kubernetes`, `linkerd`, `trust-configmap`): up, and errors so far.

    Only sources that are configured appear, so a meshprobe without Kubernetes exports none."""

    up: dict[str, bool] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    target_sources: set[str] = field(default_factory=set)  # exported as meshprobe_targets 0 too

    def register(self, source: str, *, yields_targets: bool) -> None:
        self.up.setdefault(source, False)
        self.errors.setdefault(source, 0)
        if yields_targets:
            self.target_sources.add(source)

    def count_error(self, source: str) -> None:
        self.errors[source] = self.errors.get(source, 0) + 1


@dataclass(slots=True)
class InstanceStatus:
    """Facts about this meshprobe process that are not per edge."""

    config_reload_success: bool = True
    config_reload_timestamp: float = 0.0
    loop_lag: Histogram = field(default_factory=lambda: Histogram(LOOP_LAG_BUCKETS))
    bundle: TrustAnchors | None = None  # the configured trust bundle; None when not configured
    bundle_reload_success: bool = True  # False while a changed bundle file fails to parse
    bundle_reload_timestamp: float = 0.0
    discovery: DiscoveryHealth = field(default_factory=DiscoveryHealth)
    peers: dict[str, PeerStatus] = field(default_factory=dict)  # by peer cluster
    # The client certificates the targets present (owned by the probe environment).
    client_certs: ClientCertificates = field(default_factory=ClientCertificates)

    def our_roots(self) -> frozenset[str] | None:
        """Fingerprints of our roots; None without a configured bundle (system roots)."""
        return self.bundle.fingerprints() if self.bundle is not None else None

    def peer_trust(self, status: PeerStatus) -> bool | None:
        return trust_match(status, self.our_roots())
