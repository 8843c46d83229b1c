"""The sections of the configuration file below the top level: defaults, trust, targets, peers.

Each is a frozen pydantic model that rejects unknown keys; checks that need more than one
section (a target's timeout against the default interval, duplicate targets) are `Settings`'.
"""

from __future__ import annotations

import itertools
import re
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    field_validator,
    model_validator,
)

from meshprobe.config.discovery import TrustConfigMap
from meshprobe.config.errors import (
    Loc,
    raise_cross_field,
    shown_value,
)
from meshprobe.config.targets import too_long
from meshprobe.config.types import (
    ByteSize,
    ClusterName,
    Duration,
    HttpStatus,
    LabelText,
    NonEmpty,
    TrustDomain,
    split_url,
)
from meshprobe.model import (
    DURATION_BUCKETS,
    MAX_BUCKETS,
    SCHEME_KIND,
    TLS_SCHEMES,
    MetricOptions,
    ProbeKind,
)

__all__ = [
    "Budget",
    "ClientCertSpec",
    "Defaults",
    "GrpcSpec",
    "HistogramSpec",
    "PeerSpec",
    "TLSSpec",
    "TargetSpec",
    "Trust",
]

_METHOD = re.compile(r"[A-Z]+")


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Budget(_Frozen):
    local: Duration = 0.050
    remote: Duration = 0.150


class HistogramSpec(_Frozen):
    """The duration histogram of an edge: `buckets` (seconds or durations, ascending, at most
    40; each costs one series per edge) or `enabled: false` for `_sum` and `_count` only."""

    buckets: list[Duration] = list(DURATION_BUCKETS)
    enabled: bool = True

    @field_validator("buckets")
    @classmethod
    def _ascending(cls, value: list[float]) -> list[float]:
        if not value:
            raise ValueError("needs at least one bound; to export no buckets set enabled: false")
        if len(value) > MAX_BUCKETS:
            raise ValueError(
                f"{len(value)} bounds: at most {MAX_BUCKETS} (each is one series per edge)"
            )
        for low, high in itertools.pairwise(value):
            if high <= low:
                raise ValueError(f"bounds must ascend: {high:g} follows {low:g}")
        return value

    def bounds(self) -> tuple[float, ...]:
        return tuple(self.buckets) if self.enabled else ()


class ClientCertSpec(_Frozen):
    """Our client certificate: a PEM chain (leaf first, intermediates may follow) and its
    unencrypted key. Only the shape is checked here; the files are read by the prober, and re-read
    when they change (mesh certificates rotate every few hours)."""

    cert_file: NonEmpty | None = None
    key_file: NonEmpty | None = None

    @model_validator(mode="after")
    def _both_or_neither(self) -> ClientCertSpec:
        if (self.cert_file is None) != (self.key_file is None):
            missing = "key_file" if self.key_file is None else "cert_file"
            raise_cross_field([((missing,), "cert_file and key_file go together: set both")])
        return self

    def pair(self) -> tuple[str, str] | None:
        if self.cert_file is None or self.key_file is None:
            return None
        return (self.cert_file, self.key_file)


class Defaults(_Frozen):
    interval: Duration = 10.0
    timeout: Duration = 2.0
    budget: Budget = Budget()
    body_limit: ByteSize = 1024 * 1024
    histogram: HistogramSpec = HistogramSpec()
    phases: bool = True  # the last probe's phase gauges: 2 to 5 series per edge
    # The client certificate of every https and tls target that names none of its own.
    tls: ClientCertSpec = ClientCertSpec()

    def metrics(self, histogram: HistogramSpec | None, phases: bool | None) -> MetricOptions:
        """A target's export options: its own where it sets them, else these defaults."""
        return MetricOptions(
            buckets=(histogram or self.histogram).bounds(),
            phases=self.phases if phases is None else phases,
        )

    @model_validator(mode="after")
    def _timeout_fits(self) -> Defaults:
        if self.timeout > self.interval:
            raise_cross_field([(("timeout",), too_long(self.timeout, self.interval, ""))])
        return self


class Trust(_Frozen):
    # Only shape is checked: whether the bundle parses is the trust loader's job, and it reports
    # that with the PEM's own errors.
    bundle_file: NonEmpty | None = None
    configmap: TrustConfigMap | None = None  # watched through the Kubernetes API instead
    trust_domain: TrustDomain = "cluster.local"
    # More trust domains whose SPIFFE IDs are ours: Istio trust-domain aliases, or a mesh in the
    # middle of a migration from one trust domain (or root) to another.
    trust_domain_aliases: list[TrustDomain] = []

    @model_validator(mode="after")
    def _one_source(self) -> Trust:
        if self.bundle_file is not None and self.configmap is not None:
            reason = "bundle_file and configmap are two sources for one bundle: choose one"
            raise_cross_field([(("configmap",), reason)])
        return self

    @model_validator(mode="after")
    def _distinct_domains(self) -> Trust:
        seen = {self.trust_domain.lower(): "trust_domain"}
        issues: list[tuple[Loc, str]] = []
        for index, alias in enumerate(self.trust_domain_aliases):
            first = seen.setdefault(alias.lower(), f"trust_domain_aliases.{index}")
            if first != f"trust_domain_aliases.{index}":
                issues.append((("trust_domain_aliases", index), f"{alias!r} repeats {first}"))
        if issues:
            raise_cross_field(issues)
        return self

    def accepted_aliases(self) -> frozenset[str]:
        """The aliases as `assess_chain(trust_domain_aliases=...)` takes them."""
        return frozenset(a.lower() for a in self.trust_domain_aliases)


class TLSSpec(ClientCertSpec):
    ca_file: NonEmpty | None = None
    identity: NonEmpty | None = None
    server_name: NonEmpty | None = None
    insecure_skip_verify: bool = False
    # ALPN protocols to offer, e.g. [h2] for a gateway that routes on it; default: http/1.1 for
    # https, none for tls.
    alpn: list[str] | None = None

    @field_validator("alpn")
    @classmethod
    def _alpn(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        if not value:
            raise ValueError("offer at least one protocol, or leave alpn out")
        for name in value:
            if not name or len(name.encode()) > 255 or not name.isascii() or not name.isprintable():
                raise ValueError(f"{name!r} is not an ALPN protocol name (1-255 printable bytes)")
        return value


_METADATA_KEY = re.compile(r"[0-9a-z_.-]+")


class GrpcSpec(_Frozen):
    """A grpc target's health check: the service asked about ("" = the server as a whole, as
    grpc_health_probe and Kubernetes' grpc probes do) and the call's metadata."""

    service: str = ""
    metadata: dict[str, str] = {}

    @field_validator("service")
    @classmethod
    def _service(cls, value: str) -> str:
        if len(value) > 1024 or not value.isprintable():
            raise ValueError("a service name is printable text of at most 1024 characters")
        return value

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, value: dict[str, str]) -> dict[str, str]:
        for key, val in value.items():
            if not _METADATA_KEY.fullmatch(key):
                raise ValueError(f"metadata key {key!r}: lowercase letters, digits, '-', '_', '.'")
            if key.startswith("grpc-") or key in ("te", "content-type", "user-agent"):
                raise ValueError(f"metadata key {key!r} is reserved by gRPC")
            if key.endswith("-bin"):
                raise ValueError(f"metadata key {key!r}: binary metadata is not supported")
            if not val.isascii() or not val.isprintable():
                raise ValueError(f"metadata {key!r}: the value must be printable ASCII")
        return value


class TargetSpec(_Frozen):
    name: LabelText
    url: str
    cluster: ClusterName | None = None  # None: the cluster this instance runs in
    interval: Duration | None = None
    timeout: Duration | None = None
    budget: Duration | None = None
    expected_status: list[HttpStatus] = []
    body_regex: str | None = None
    body_limit: ByteSize | None = None
    keepalive: bool = False
    follow_redirects: bool = False
    method: str = "GET"
    headers: dict[str, str] = {}
    tls: TLSSpec | None = None
    grpc: GrpcSpec | None = None
    histogram: HistogramSpec | None = None  # replaces defaults.histogram for this target
    phases: bool | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        parts = split_url(value, tuple(SCHEME_KIND))
        if parts.scheme in ("tcp", "tls", "grpc", "grpcs"):
            if parts.port is None:
                raise ValueError(f"{parts.scheme} URLs need an explicit port, e.g. host:443")
            if parts.path not in ("", "/") or parts.query:
                raise ValueError(f"{parts.scheme} URLs take no path or query")
        return value.strip()

    @field_validator("body_regex")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except (re.error, OverflowError, RecursionError) as exc:  # a{99999999999}, ((((…
                reason = exc if isinstance(exc, re.error | OverflowError) else "nested too deeply"
                shown = shown_value(value)
                raise ValueError(f"invalid regular expression {shown}: {reason}") from None
        return value

    @field_validator("method")
    @classmethod
    def _method(cls, value: str) -> str:
        if not _METHOD.fullmatch(value.upper()):
            raise ValueError(f"invalid HTTP method {value!r}")
        return value.upper()

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, str]) -> dict[str, str]:
        for key, val in value.items():
            if not key or any(c in key + val for c in "\r\n") or ":" in key:
                raise ValueError(f"invalid header {key!r}: empty name, ':' or a line break")
        return value

    @model_validator(mode="after")
    def _tls_needs_tls_scheme(self) -> TargetSpec:
        scheme = urlsplit(self.url).scheme
        if self.tls is not None and scheme not in TLS_SCHEMES:
            reason = f"tls options need an https://, tls:// or grpcs:// url, not {scheme}://"
            raise_cross_field([(("tls",), reason)])
        if self.grpc is not None and SCHEME_KIND.get(scheme) is not ProbeKind.GRPC:
            reason = f"grpc options need a grpc:// or grpcs:// url, not {scheme}://"
            raise_cross_field([(("grpc",), reason)])
        if "@" in urlsplit(self.url).netloc and any(
            name.lower() == "authorization" for name in self.headers
        ):
            # aiohttp refuses the pair on every request; say so once, at load time.
            reason = "an Authorization header cannot be combined with user:password@ in the url"
            raise_cross_field([(("headers",), reason)])
        return self

    @property
    def scheme(self) -> str:
        return urlsplit(self.url).scheme


class PeerSpec(_Frozen):
    cluster: ClusterName
    url: str
    # The peer's gRPC health echo (its `grpc_listen`), probed as the edge meshprobe/echo with
    # probe="grpc" beside the HTTP one.
    grpc_url: str | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        split_url(value, ("http", "https"))
        return value.strip()

    @field_validator("grpc_url")
    @classmethod
    def _grpc_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = split_url(value, ("grpc", "grpcs"))
        if parts.port is None or parts.path not in ("", "/") or parts.query:
            raise ValueError("a gRPC echo is grpc://host:port or grpcs://host:port")
        return value.strip().rstrip("/")
