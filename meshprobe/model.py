"""Plain frozen values passed between discovery, scheduling, probing and export.

Every layer talks in these types only, so a probe never needs to know about metrics and the
exporter never needs to know how a probe was made (the cloudprober/blackbox split).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from urllib.parse import urlsplit, urlunsplit

from meshprobe import __version__

# The responder names the cluster that answered in this header; probes read it (failover).
CLUSTER_HEADER = "X-Meshprobe-Cluster"
# Every request meshprobe makes says who it is (probes, peers, the Kubernetes API).
USER_AGENT = f"meshprobe/{__version__}"


def redact_url(url: str) -> str:
    """The URL as it may be shown (logs, errors, status pages): userinfo is a credential, so a
    password and a user name both become `***`. Anything unparseable is shown as a placeholder
    rather than risk echoing a secret in it."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
    except ValueError:
        return "(unparseable URL)"
    if "@" not in netloc:
        return url
    return urlunsplit(parts._replace(netloc="***@" + netloc.rpartition("@")[2]))


class Reason(StrEnum):
    """Why a probe failed: a closed enum, because it is a Prometheus label value."""

    TIMEOUT = "timeout"
    DNS = "dns"
    CONNECT_REFUSED = "connect_refused"
    CONNECT_ERROR = "connect_error"
    RESET = "reset"
    TLS_HANDSHAKE = "tls_handshake"
    TLS_UNTRUSTED = "tls_untrusted"
    TLS_EXPIRED = "tls_expired"
    TLS_IDENTITY = "tls_identity"
    HTTP_STATUS = "http_status"
    BODY_MISMATCH = "body_mismatch"
    BODY_TOO_LARGE = "body_too_large"
    PROTOCOL = "protocol"
    GRPC_STATUS = "grpc_status"  # answered, but not OK or not SERVING: the code name in the detail


class ProbeKind(StrEnum):
    """The `probe` label: https targets are `http` probes that also carry TLS results."""

    HTTP = "http"
    TCP = "tcp"
    TLS = "tls"
    GRPC = "grpc"  # grpc:// (h2c) and grpcs:// (TLS, ALPN h2): grpc.health.v1.Health/Check


class Scope(StrEnum):
    LOCAL = "local"
    REMOTE = "remote"


class Phase(StrEnum):
    """blackbox_exporter's phase names, so our users recognise them."""

    RESOLVE = "resolve"
    CONNECT = "connect"
    TLS = "tls"
    PROCESSING = "processing"
    TRANSFER = "transfer"


class CertRole(StrEnum):
    LEAF = "leaf"
    INTERMEDIATE = "intermediate"
    ROOT = "root"


# The schemes that speak TLS: their targets take `tls` options and carry TLS results.
TLS_SCHEMES = frozenset({"https", "tls", "grpcs"})

SCHEME_KIND: Mapping[str, ProbeKind] = {
    "http": ProbeKind.HTTP,
    "https": ProbeKind.HTTP,
    "tcp": ProbeKind.TCP,
    "tls": ProbeKind.TLS,
    "grpc": ProbeKind.GRPC,
    "grpcs": ProbeKind.GRPC,
}

KIND_PHASES: Mapping[str, tuple[Phase, ...]] = {
    "tcp": (Phase.RESOLVE, Phase.CONNECT),
    "tls": (Phase.RESOLVE, Phase.CONNECT, Phase.TLS),
    "http": (Phase.RESOLVE, Phase.CONNECT, Phase.PROCESSING, Phase.TRANSFER),
    "https": tuple(Phase),
    "grpc": (Phase.RESOLVE, Phase.CONNECT, Phase.PROCESSING),
    "grpcs": (Phase.RESOLVE, Phase.CONNECT, Phase.TLS, Phase.PROCESSING),
}


@dataclass(frozen=True, slots=True)
class TLSOptions:
    """Per-target TLS expectations."""

    ca_file: str | None = None  # overrides the trust bundle for this target
    identity: str | None = None  # expected SPIFFE URI SAN or DNS name of the leaf
    server_name: str | None = None  # SNI and name check; defaults to the URL host
    insecure_skip_verify: bool = False  # record the chain and verdict but never fail on it
    # Our client certificate (PEM chain, leaf first) and key, for servers that demand one (STRICT
    # mTLS): re-read when the files change, see trust/clientcert.py.
    cert_file: str | None = None
    key_file: str | None = None
    alpn: tuple[str, ...] | None = None  # None: the kind's own (http/1.1 for https, none for tls)

    @property
    def client_pair(self) -> tuple[str, str] | None:
        if self.cert_file is None or self.key_file is None:
            return None
        return (self.cert_file, self.key_file)


# Eleven bounds for mesh latencies: fine steps through the local budget (50 ms) and up to the
# remote budget (150 ms), then coarse up to the default timeout (2 s), beyond which no successful
# probe can land. Each edge's histogram costs len(buckets) + 3 series (+Inf, _count, _sum), and
# each bound about 150 bytes of every scrape per edge.
DURATION_BUCKETS: tuple[float, ...] = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.15,
    0.5,
    1.0,
    2.0,
)
MAX_BUCKETS = 40


@dataclass(frozen=True, slots=True)
class MetricOptions:
    """What an edge exports beyond its fixed series, chosen per target: the duration histogram's
    bucket bounds (empty: only `_sum` and `_count`) and the last probe's phase gauges."""

    buckets: tuple[float, ...] = DURATION_BUCKETS
    phases: bool = True


@dataclass(frozen=True, slots=True)
class Target:
    """One edge to probe. Equal targets keep their scheduler loop across reloads."""

    name: str  # the `target` label, e.g. production/api-server
    url: str
    scheme: str  # http|https|tcp|tls
    host: str
    port: int
    path: str  # path plus query, "/" for tcp/tls
    cluster: str  # the `target_cluster` label
    scope: Scope
    interval: float
    timeout: float
    budget: float
    expected_status: frozenset[int] = frozenset()  # empty means any 2xx
    body_regex: str | None = None
    body_limit: int = 1024 * 1024
    keepalive: bool = False
    follow_redirects: bool = False
    method: str = "GET"
    headers: tuple[tuple[str, str], ...] = ()  # request headers; for grpc, the call's metadata
    grpc_service: str = ""  # the health service a grpc probe asks about; "" is the whole server
    tls: TLSOptions = field(default_factory=TLSOptions)
    discovery: str = "static"
    metrics: MetricOptions = field(default_factory=MetricOptions)

    @property
    def kind(self) -> ProbeKind:
        return SCHEME_KIND[self.scheme]

    @property
    def shown_url(self) -> str:
        """`url` without its userinfo: the only form logs and pages may carry."""
        return redact_url(self.url)

    @property
    def uses_tls(self) -> bool:
        return self.scheme in TLS_SCHEMES

    @property
    def key(self) -> tuple[str, str, str]:
        """The label identity of the edge; two targets with the same key would collide."""
        return (self.name, self.cluster, self.kind.value)


@dataclass(frozen=True, slots=True)
class CertSummary:
    """What we report about one certificate: public data only."""

    subject: str
    issuer: str
    not_before: float  # unix seconds
    not_after: float
    fingerprint_sha256: str  # lowercase hex of the DER
    role: CertRole
    dns_names: tuple[str, ...] = ()
    uris: tuple[str, ...] = ()
    ip_addresses: tuple[str, ...] = ()
    from_bundle: bool = False  # the root came from our bundle, not from the server
    # Presented by the server but not on the path that verified (e.g. an old cross-certificate
    # during a root migration): reported, never judged, and left out of expiry metrics.
    extra: bool = False


@dataclass(frozen=True, slots=True)
class TLSReport:
    """The verdict on one presented chain, shared by the tls and https probes."""

    verified: bool
    reason: Reason | None  # tls_untrusted | tls_expired | tls_identity when not verified
    detail: str
    chain: tuple[CertSummary, ...]  # as presented by the server, leaf first
    root: CertSummary | None  # the anchor from our bundle, or a self-signed cert the server sent
    identity: str | None  # the leaf's SPIFFE ID, else its first DNS name, else its subject
    version: str | None = None  # e.g. TLSv1.3
    cipher: str | None = None

    def earliest_expiry(self) -> dict[CertRole, float]:
        """Earliest not_after per role over the presented chain plus the anchoring root; extra
        certificates off the verified path do not count (their expiry breaks nothing)."""
        out: dict[CertRole, float] = {}
        certs = [c for c in self.chain if not c.extra]
        if self.root is not None and all(
            c.fingerprint_sha256 != self.root.fingerprint_sha256 for c in certs
        ):
            certs.append(self.root)
        for cert in certs:
            prev = out.get(cert.role)
            if prev is None or cert.not_after < prev:
                out[cert.role] = cert.not_after
        return out


@dataclass(frozen=True, slots=True)
class TCPStats:
    """The kernel's view of the probe's fresh connections (Linux TCP_INFO): a diagnostic that is
    exported beside the duration and never replaces any part of it."""

    rtt: float | None  # seconds: the smoothed RTT of the last fresh connection, None without one
    retransmits: int  # retransmitted segments (SYNs included), summed over the fresh connections

    def plus(self, other: TCPStats) -> TCPStats:
        """Two connections of one probe (a followed redirect): the later RTT, the summed count."""
        return TCPStats(
            other.rtt if other.rtt is not None else self.rtt,
            self.retransmits + other.retransmits,
        )


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """The outcome of one probe run; the only thing a probe hands back."""

    success: bool
    # Seconds of wall clock from the start of the probe to its complete answer or its failure:
    # what a client lived through, DNS, connect retries, TLS and every redirect hop included.
    duration: float
    reason: Reason | None = None
    detail: str = ""  # human text for logs and `meshprobe probe`, never a label
    phases: Mapping[Phase, float] = field(default_factory=dict)
    status_code: int | None = None
    served_by: str | None = None  # X-Meshprobe-Cluster of the answer
    tls: TLSReport | None = None
    body_bytes: int = 0
    tcp: TCPStats | None = None  # None when no fresh connection was read (or not on Linux)
    # grpc probes: the call's grpc-status code and the HealthCheckResponse's serving status
    # (0 UNKNOWN, 1 SERVING, 2 NOT_SERVING, 3 SERVICE_UNKNOWN), when the answer carried them.
    grpc_status: int | None = None
    grpc_serving: int | None = None


@dataclass(frozen=True, slots=True)
class Peer:
    """Another cluster's meshprobe, as configured or discovered."""

    cluster: str
    url: str  # base URL of the peer's listener
    grpc_url: str | None = None  # grpc(s)://host:port of its gRPC health echo, when it has one
