"""What one Service object means to meshprobe: a target, a peer, or nothing.

Pure functions over the raw JSON object, so every rule is unit-tested without a server:
- a Service annotated `meshprobe.io/probe: "true"` is a local target named `<namespace>/<service>`;
- a Linkerd mirror (`mirror.linkerd.io/mirrored-service: "true"`) is a remote target in the cluster
  named by `mirror.linkerd.io/cluster-name`, named without the `-<cluster>` suffix Linkerd adds;
  mirrors are probed unless annotated `meshprobe.io/probe: "false"` (Linkerd copies the exported
  Service's annotations onto the mirror, so the same annotations tune both);
- a mirror of meshprobe's own Service (`app.kubernetes.io/name: meshprobe`) is a peer.
A malformed annotation raises `AnnotationError` naming it; the caller skips that one Service.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any

from meshprobe.config.durations import parse_duration
from meshprobe.config.targets import TimeoutOverInterval, make_target
from meshprobe.model import (
    SCHEME_KIND,
    TLS_SCHEMES,
    MetricOptions,
    Peer,
    ProbeKind,
    Target,
    TLSOptions,
)

PREFIX = "meshprobe.io/"
PROBE = PREFIX + "probe"
PORT = PREFIX + "port"
PATH = PREFIX + "path"
SCHEME = PREFIX + "scheme"
INTERVAL = PREFIX + "interval"
TIMEOUT = PREFIX + "timeout"
BUDGET = PREFIX + "latency-budget"
IDENTITY = PREFIX + "identity"
GRPC_SERVICE = PREFIX + "grpc-service"
MIRRORED = "mirror.linkerd.io/mirrored-service"
MIRROR_CLUSTER = "mirror.linkerd.io/cluster-name"
APP_NAME = "app.kubernetes.io/name"
MESHPROBE_APP = "meshprobe"

SOURCE_SERVICES = "kubernetes"  # the `discovery` label of annotated Services
SOURCE_LINKERD = "linkerd"  # the `discovery` label of Linkerd mirrors (and peers found there)

_PATH = re.compile(r"/[!-~]*")  # printable ASCII, no spaces
# Service port appProtocol values that mean gRPC (Kubernetes' own h2c, and what Istio and Linkerd
# read to pick their HTTP/2 handling).
_GRPC_APP_PROTOCOLS = frozenset({"grpc", "kubernetes.io/h2c"})


class AnnotationError(ValueError):
    def __init__(self, annotation: str, reason: str) -> None:
        super().__init__(f"{annotation}: {reason}")
        self.annotation = annotation
        self.reason = reason


@dataclass(frozen=True, slots=True)
class TargetDefaults:
    """What an unannotated Service gets: this cluster's name and the config's defaults."""

    cluster: str
    cluster_domain: str
    interval: float
    timeout: float
    budget_local: float
    budget_remote: float
    body_limit: int
    address: str = "dns"  # or "cluster-ip"
    metrics: MetricOptions = field(default_factory=MetricOptions)
    client_cert: tuple[str, str] | None = None  # defaults.tls: for https and tls Services


@dataclass(frozen=True, slots=True)
class Found:
    source: str
    target: Target | None = None
    peer: Peer | None = None


def object_name(obj: dict[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


def _strings(value: Any) -> dict[str, str]:
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


def source_of(obj: dict[str, Any]) -> str:
    labels = _strings((obj.get("metadata") or {}).get("labels"))
    return SOURCE_LINKERD if labels.get(MIRRORED) == "true" else SOURCE_SERVICES


def classify(obj: dict[str, Any], defaults: TargetDefaults) -> Found | None:
    """The target or peer a Service stands for; None when it is not for us."""
    meta = obj.get("metadata") or {}
    labels = _strings(meta.get("labels"))
    annotations = _strings(meta.get("annotations"))
    namespace, name = object_name(obj)
    probe = annotations.get(PROBE)
    if probe not in (None, "true", "false"):
        raise AnnotationError(PROBE, f'expected "true" or "false", got {probe!r}')
    if labels.get(MIRRORED) != "true":
        if probe != "true":
            return None
        target = build_target(obj, annotations, defaults, name=f"{namespace}/{name}")
        return Found(SOURCE_SERVICES, target=target)
    if probe == "false":
        return None
    cluster = labels.get(MIRROR_CLUSTER)
    if not cluster:
        raise AnnotationError(MIRROR_CLUSTER, "mirrored Service without a cluster-name label")
    if labels.get(APP_NAME) == MESHPROBE_APP:
        return Found(SOURCE_LINKERD, peer=build_peer(obj, annotations, defaults, cluster))
    suffix = f"-{cluster}"
    base = name[: -len(suffix)] if name.endswith(suffix) and len(name) > len(suffix) else name
    target = build_target(obj, annotations, defaults, name=f"{namespace}/{base}", cluster=cluster)
    return Found(SOURCE_LINKERD, target=target)


def service_host(obj: dict[str, Any], defaults: TargetDefaults) -> str:
    """The Service's DNS name, or its cluster IP when configured so."""
    namespace, name = object_name(obj)
    if defaults.address != "cluster-ip":
        return f"{name}.{namespace}.svc.{defaults.cluster_domain}"
    ip = (obj.get("spec") or {}).get("clusterIP")
    if not isinstance(ip, str) or not ip or ip == "None":
        raise AnnotationError("spec.clusterIP", "no cluster IP (headless?) to probe by address")
    try:
        ipaddress.ip_address(ip)
    except ValueError:
        raise AnnotationError("spec.clusterIP", f"{ip!r} is not an IP address") from None
    return ip


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _ports(obj: dict[str, Any]) -> list[dict[str, Any]]:
    ports = (obj.get("spec") or {}).get("ports")
    return [p for p in ports if isinstance(p, dict)] if isinstance(ports, list) else []


def _choose_port(
    ports: list[dict[str, Any]], annotations: dict[str, str], preferred: tuple[str, ...]
) -> dict[str, Any]:
    wanted = annotations.get(PORT)
    if wanted is not None:
        wanted = wanted.strip()
        if wanted.isdigit():
            number = int(wanted)
            if not 1 <= number <= 65535:
                raise AnnotationError(PORT, f"port {number} is out of range 1..65535")
            for port in ports:
                if port.get("port") == number:
                    return port
            if not ports:  # e.g. an ExternalName Service: the number is all we have
                return {"port": number}
            raise AnnotationError(
                PORT, f"port {number} is not a port of the Service ({_list(ports)})"
            )
        for port in ports:
            if port.get("name") == wanted:
                return port
        raise AnnotationError(PORT, f"no port named {wanted!r} ({_list(ports)})")
    if len(ports) == 1:
        return ports[0]
    for name in preferred:
        for port in ports:
            if port.get("name") == name:
                return port
    if not ports:
        raise AnnotationError(PORT, "the Service has no ports: set one")
    raise AnnotationError(PORT, f"the Service has {len(ports)} ports ({_list(ports)}): choose one")


def _list(ports: list[dict[str, Any]]) -> str:
    return ", ".join(f"{p.get('name') or '-'}={p.get('port')}" for p in ports) or "none"


def _port_number(port: dict[str, Any]) -> int:
    number = port.get("port")
    if not isinstance(number, int) or not 1 <= number <= 65535:
        raise AnnotationError(PORT, f"the Service port {number!r} is not a port number")
    return number


def _duration(annotations: dict[str, str], key: str) -> float | None:
    text = annotations.get(key)
    if text is None:
        return None
    try:
        value = parse_duration(text.strip())
    except ValueError as exc:
        raise AnnotationError(key, str(exc)) from None
    if value <= 0:
        raise AnnotationError(key, f"{text!r} must be greater than zero")
    return value


def _scheme(annotations: dict[str, str], port: dict[str, Any]) -> str:
    scheme = annotations.get(SCHEME)
    if scheme is not None:
        scheme = scheme.strip().lower()
        if scheme not in SCHEME_KIND:
            expected = ", ".join(SCHEME_KIND)
            raise AnnotationError(SCHEME, f"expected one of {expected}, got {scheme!r}")
        return scheme
    name, app = str(port.get("name") or ""), str(port.get("appProtocol") or "")
    if app in _GRPC_APP_PROTOCOLS or name == "grpc" or name.startswith("grpc-"):
        return "grpc"  # plaintext: through the sidecar, which adds the mesh's mTLS
    return "https" if "https" in (name, app) else "http"


def build_target(
    obj: dict[str, Any],
    annotations: dict[str, str],
    defaults: TargetDefaults,
    *,
    name: str,
    cluster: str | None = None,
) -> Target:
    ports = _ports(obj)
    scheme_hint = annotations.get(SCHEME, "").strip().lower()
    preferred = (scheme_hint, "http", "https", "grpc")
    port = _choose_port(ports, annotations, tuple(p for p in preferred if p))
    number = _port_number(port)
    scheme = _scheme(annotations, port)
    host = service_host(obj, defaults)
    path = "/"
    if scheme in ("http", "https"):
        path = annotations.get(PATH, "/").strip()
        if not _PATH.fullmatch(path):
            raise AnnotationError(PATH, f"{path!r} must start with '/' and contain no spaces")
        url = f"{scheme}://{_url_host(host)}:{number}{path}"
    else:
        if PATH in annotations:
            raise AnnotationError(PATH, f"{scheme} probes take no path")
        url = f"{scheme}://{_url_host(host)}:{number}"
    client = defaults.client_cert if scheme in TLS_SCHEMES else None
    identity = annotations.get(IDENTITY)
    if identity is not None:
        identity = identity.strip()
        if scheme not in TLS_SCHEMES:
            raise AnnotationError(
                IDENTITY, f"an identity needs scheme https, tls or grpcs, not {scheme}"
            )
        if not identity:
            raise AnnotationError(IDENTITY, "must not be empty")
    grpc_service = annotations.get(GRPC_SERVICE)
    if grpc_service is not None and SCHEME_KIND[scheme] is not ProbeKind.GRPC:
        raise AnnotationError(
            GRPC_SERVICE, f"a health service needs scheme grpc or grpcs, not {scheme}"
        )
    try:
        return make_target(
            name=name,
            url=url,
            cluster=cluster or defaults.cluster,
            own_cluster=defaults.cluster,
            interval=_duration(annotations, INTERVAL) or defaults.interval,
            timeout=_duration(annotations, TIMEOUT) or defaults.timeout,
            budget=_duration(annotations, BUDGET),
            local_budget=defaults.budget_local,
            remote_budget=defaults.budget_remote,
            body_limit=defaults.body_limit,
            metrics=defaults.metrics,
            grpc_service=(grpc_service or "").strip(),
            tls=TLSOptions(
                identity=identity,
                cert_file=client[0] if client is not None else None,
                key_file=client[1] if client is not None else None,
            ),
            discovery=SOURCE_LINKERD if cluster is not None else SOURCE_SERVICES,
        )
    except TimeoutOverInterval as exc:
        raise AnnotationError(TIMEOUT if TIMEOUT in annotations else INTERVAL, str(exc)) from None


def build_peer(
    obj: dict[str, Any], annotations: dict[str, str], defaults: TargetDefaults, cluster: str
) -> Peer:
    port = _port_number(_choose_port(_ports(obj), annotations, ("http", "https", "metrics")))
    scheme = annotations.get(SCHEME, "http").strip().lower()
    if scheme not in ("http", "https"):
        raise AnnotationError(SCHEME, f"a meshprobe peer is http or https, not {scheme!r}")
    return Peer(cluster, f"{scheme}://{_url_host(service_host(obj, defaults))}:{port}")
