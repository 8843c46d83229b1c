"""The custom collector: metric families rebuilt from ProbeState at every scrape.

Building fresh families (rather than keeping prometheus_client metric objects) is what makes a
removed target's series disappear at the next scrape, as client_python's docs recommend for
exporters that mirror external state.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from meshprobe import __version__
from meshprobe.metrics import names as m
from meshprobe.model import CertRole
from meshprobe.state.edges import ProbeState
from meshprobe.state.instance import InstanceStatus
from meshprobe.trust.names import summarize


class MeshprobeCollector(Collector):
    def __init__(
        self,
        *,
        source_cluster: str,
        state: ProbeState,
        status: InstanceStatus,
    ) -> None:
        self._source = source_cluster
        self._state = state
        self._status = status

    def describe(self) -> Iterable[Metric]:
        # Registration must not call collect(): state may not be ready yet.
        return ()

    def collect(self) -> Iterator[Metric]:
        # The per-edge families are rendered by meshprobe.metrics.edges (fast, in slices).
        yield from self._instance_families()
        yield from self._client_cert_families()
        yield from self._peer_families()

    def _gauge(self, name: str, documentation: str, value: float) -> GaugeMetricFamily:
        family = GaugeMetricFamily(name, documentation, labels=["source_cluster"])
        family.add_metric([self._source], value)
        return family

    def _discovery_families(self) -> Iterator[Metric]:
        health = self._status.discovery
        if not health.up:
            return
        up = GaugeMetricFamily(
            m.DISCOVERY_UP,
            "Whether the discovery source has listed and is watching its API objects.",
            labels=["source_cluster", "discovery"],
        )
        errors = CounterMetricFamily(
            m.DISCOVERY_ERRORS,
            "Failed API requests, dropped watches and malformed objects, per discovery source.",
            labels=["source_cluster", "discovery"],
        )
        for source in sorted(health.up):
            up.add_metric([self._source, source], 1.0 if health.up[source] else 0.0)
            errors.add_metric([self._source, source], health.errors.get(source, 0))
        yield up
        yield errors

    def _instance_families(self) -> Iterator[Metric]:
        """Instance metrics carry `source_cluster` too, so one `cluster` variable filters every
        panel of a dashboard that reads several clusters' meshprobes."""
        status = self._status
        src = self._source
        info = InfoMetricFamily(
            m.BUILD_INFO.removesuffix("_info"),  # the family adds the suffix
            "meshprobe build information.",
            labels=["source_cluster"],
        )
        info.add_metric([src], {"version": __version__})
        yield info
        yield self._gauge(
            m.CONFIG_RELOAD_SUCCESS,
            "Whether the last configuration reload succeeded.",
            1.0 if status.config_reload_success else 0.0,
        )
        yield self._gauge(
            m.CONFIG_RELOAD_TIMESTAMP,
            "When the configuration was last loaded successfully.",
            status.config_reload_timestamp,
        )
        lag = HistogramMetricFamily(
            m.EVENT_LOOP_LAG,
            "How late the event loop woke a timer: inflates probe timings.",
            labels=["source_cluster"],
        )
        lag.add_metric([src], status.loop_lag.cumulative(), status.loop_lag.sum)
        yield lag
        targets = GaugeMetricFamily(
            m.TARGETS, "Targets being probed.", labels=["source_cluster", "discovery"]
        )
        counts = Counter(stats.target.discovery for stats in self._state.edges())
        counts.setdefault("static", 0)
        for source in status.discovery.target_sources:
            counts.setdefault(source, 0)
        for discovery, n in sorted(counts.items()):
            targets.add_metric([src, discovery], n)
        yield targets
        yield from self._discovery_families()
        if status.bundle is not None:
            root_info = GaugeMetricFamily(
                m.TRUST_ROOT_INFO,
                "The roots of this instance's trust bundle.",
                labels=["source_cluster", "fingerprint_sha256", "subject"],
            )
            root_expiry = GaugeMetricFamily(
                m.TRUST_ROOT_EXPIRY,
                "NotAfter of each root of the trust bundle.",
                labels=["source_cluster", "fingerprint_sha256"],
            )
            for cert in status.bundle.roots:
                s = summarize(cert, CertRole.ROOT, from_bundle=True)
                root_info.add_metric([src, s.fingerprint_sha256, s.subject], 1.0)
                root_expiry.add_metric([src, s.fingerprint_sha256], s.not_after)
            yield root_info
            yield root_expiry
            yield self._gauge(
                m.TRUST_BUNDLE_RELOAD_SUCCESS,
                "0 while the trust bundle file holds content that does not parse.",
                1.0 if status.bundle_reload_success else 0.0,
            )
            yield self._gauge(
                m.TRUST_BUNDLE_RELOAD_TIMESTAMP,
                "When the trust bundle's current roots were loaded.",
                status.bundle_reload_timestamp,
            )
            yield self._gauge(
                m.TRUST_BUNDLE_SKIPPED_ROOTS,
                "Certificates of the trust bundle skipped as unusable roots (logged once a load).",
                float(status.bundle.skipped),
            )

    def _client_cert_families(self) -> Iterator[Metric]:
        """Our client certificates, by file: what presents our mesh identity to STRICT-mTLS
        servers. A pair never loaded has no expiry series, only a failing reload."""
        sources = list(self._status.client_certs)
        if not sources:
            return
        labels = ["source_cluster", "cert_file"]
        expiry = GaugeMetricFamily(
            m.CLIENT_CERT_EXPIRY, "NotAfter of the client certificate in use.", labels=labels
        )
        issued = GaugeMetricFamily(
            m.CLIENT_CERT_NOT_BEFORE,
            "NotBefore of the client certificate in use (with NotAfter: its lifetime).",
            labels=labels,
        )
        reload = GaugeMetricFamily(
            m.CLIENT_CERT_RELOAD_SUCCESS,
            "0 while the client certificate files hold a pair that cannot be used "
            "(half-written, mismatched, missing): the previous pair stays in use.",
            labels=labels,
        )
        for source in sources:
            key = [self._source, source.cert_file]
            if source.pair is not None:
                expiry.add_metric(key, source.pair.not_after)
                issued.add_metric(key, source.pair.not_before)
            reload.add_metric(key, 1.0 if source.reload_success else 0.0)
        yield expiry
        yield issued
        yield reload

    def _peer_families(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            m.PEER_UP,
            "Whether the peer's identity document was fetched and valid.",
            labels=["source_cluster", "peer_cluster"],
        )
        match = GaugeMetricFamily(
            m.PEER_TRUST_MATCH,
            "1 when the peer's trust roots and ours share a root, 0 when disjoint.",
            labels=["source_cluster", "peer_cluster"],
        )
        for cluster, status in sorted(self._status.peers.items()):
            up.add_metric([self._source, cluster], 1.0 if status.up else 0.0)
            verdict = self._status.peer_trust(status)
            if verdict is not None:
                match.add_metric([self._source, cluster], 1.0 if verdict else 0.0)
        yield up
        yield match
