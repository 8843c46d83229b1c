"""What a Service means: annotation rules, Linkerd mirrors, peers, and malformed annotations."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from meshprobe.discovery import services as ann
from meshprobe.discovery.services import AnnotationError, TargetDefaults, classify
from meshprobe.model import Peer, Scope

DEFAULTS = TargetDefaults(
    cluster="cluster1",
    cluster_domain="cluster.local",
    interval=10.0,
    timeout=2.0,
    budget_local=0.05,
    budget_remote=0.15,
    body_limit=1024,
)
MIRROR = {ann.MIRRORED: "true", ann.MIRROR_CLUSTER: "cluster2"}


def svc(
    name: str = "api",
    namespace: str = "prod",
    *,
    annotations: dict[str, str] | None = None,
    labels: dict[str, str] | None = None,
    ports: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "namespace": namespace,
            "annotations": annotations,
            "labels": labels,
            "resourceVersion": "7",
        },
        "spec": {"ports": [{"name": "http", "port": 80}] if ports is None else ports},
    }


def probed(**extra: str) -> dict[str, str]:
    return {ann.PROBE: "true", **{ann.PREFIX + k.replace("_", "-"): v for k, v in extra.items()}}


def test_unannotated_service_is_ignored() -> None:
    assert classify(svc(), DEFAULTS) is None
    assert classify(svc(annotations={ann.PROBE: "false"}), DEFAULTS) is None


def test_annotated_service_with_defaults() -> None:
    found = classify(svc(annotations=probed()), DEFAULTS)
    assert found is not None and found.target is not None and found.peer is None
    t = found.target
    assert (t.name, t.cluster, t.scope, t.discovery) == (
        "prod/api",
        "cluster1",
        Scope.LOCAL,
        "kubernetes",
    )
    assert (t.url, t.interval, t.timeout, t.budget, t.body_limit) == (
        "http://api.prod.svc.cluster.local:80/",
        10.0,
        2.0,
        0.05,
        1024,
    )


def test_every_annotation() -> None:
    ports = [{"name": "http", "port": 80}, {"name": "admin", "port": 8443}]
    annotations = probed(
        port="admin",
        path="/ready?full=1",
        scheme="https",
        interval="5s",
        timeout="1s",
        latency_budget="30ms",
        identity="spiffe://cluster.local/ns/prod/sa/api",
    )
    found = classify(svc(annotations=annotations, ports=ports), DEFAULTS)
    assert found is not None and found.target is not None
    t = found.target
    assert t.url == "https://api.prod.svc.cluster.local:8443/ready?full=1"
    assert (t.scheme, t.port, t.path, t.interval, t.timeout, t.budget) == (
        "https",
        8443,
        "/ready?full=1",
        5.0,
        1.0,
        0.03,
    )
    assert t.tls.identity == "spiffe://cluster.local/ns/prod/sa/api"


def test_port_by_number_and_https_hint() -> None:
    ports = [{"name": "https", "port": 443}, {"name": "grpc", "port": 9000}]
    found = classify(svc(annotations=probed(port="443"), ports=ports), DEFAULTS)
    assert found is not None and found.target is not None
    assert found.target.url == "https://api.prod.svc.cluster.local:443/"
    tcp = classify(svc(annotations=probed(port="9000", scheme="tcp"), ports=ports), DEFAULTS)
    assert tcp is not None and tcp.target is not None
    assert (tcp.target.url, tcp.target.path) == ("tcp://api.prod.svc.cluster.local:9000", "/")


@pytest.mark.parametrize(
    ("port", "scheme"),
    [
        ({"name": "api", "port": 9000, "appProtocol": "grpc"}, "grpc"),
        ({"name": "api", "port": 9000, "appProtocol": "kubernetes.io/h2c"}, "grpc"),
        ({"name": "grpc", "port": 9000}, "grpc"),
        ({"name": "grpc-web", "port": 9000}, "grpc"),
        ({"name": "grpcish", "port": 9000}, "http"),
    ],
)
def test_grpc_ports_become_grpc_targets(port: dict[str, Any], scheme: str) -> None:
    found = classify(
        svc(
            annotations=probed(grpc_service="mesh.Echo") if scheme == "grpc" else probed(),
            ports=[port],
        ),
        DEFAULTS,
    )
    assert found is not None and found.target is not None
    assert found.target.scheme == scheme
    if scheme == "grpc":
        assert found.target.url == "grpc://api.prod.svc.cluster.local:9000"
        assert found.target.grpc_service == "mesh.Echo"


def test_grpcs_by_annotation_with_identity() -> None:
    annotations = probed(scheme="grpcs", identity="spiffe://cluster.local/ns/prod/sa/api")
    ports = [{"name": "http", "port": 80}, {"name": "grpcs", "port": 8443}]
    found = classify(svc(annotations=annotations, ports=ports), DEFAULTS)
    assert found is not None and found.target is not None
    assert found.target.url == "grpcs://api.prod.svc.cluster.local:8443"
    assert found.target.tls.identity == "spiffe://cluster.local/ns/prod/sa/api"


@pytest.mark.parametrize(
    ("annotations", "ports", "annotation", "reason"),
    [
        ({ann.PROBE: "yes"}, None, ann.PROBE, 'expected "true" or "false"'),
        (probed(port="nope"), None, ann.PORT, "no port named 'nope'"),
        (probed(port="8080"), None, ann.PORT, "not a port of the Service"),
        (probed(port="70000"), None, ann.PORT, "out of range"),
        (probed(), [{"name": "a", "port": 1}, {"name": "b", "port": 2}], ann.PORT, "choose one"),
        (probed(), [], ann.PORT, "no ports"),
        (probed(scheme="ftp"), None, ann.SCHEME, "expected one of"),
        (probed(path="healthz"), None, ann.PATH, "must start with '/'"),
        (probed(scheme="tcp", path="/x"), None, ann.PATH, "take no path"),
        (probed(interval="soon"), None, ann.INTERVAL, "invalid duration"),
        (probed(timeout="0s"), None, ann.TIMEOUT, "greater than zero"),
        (probed(timeout="20s"), None, ann.TIMEOUT, "longer than the interval"),
        (probed(interval="1s"), None, ann.INTERVAL, "longer than the interval"),
        (probed(latency_budget="-1ms"), None, ann.BUDGET, "invalid duration"),
        (probed(identity="spiffe://x"), None, ann.IDENTITY, "needs scheme https, tls or grpcs"),
        (probed(grpc_service="x"), None, ann.GRPC_SERVICE, "needs scheme grpc or grpcs"),
    ],
)
def test_malformed(
    annotations: dict[str, str], ports: list[dict[str, Any]] | None, annotation: str, reason: str
) -> None:
    with pytest.raises(AnnotationError) as err:
        classify(svc(annotations=annotations, ports=ports), DEFAULTS)
    assert err.value.annotation == annotation
    assert reason in err.value.reason


def test_linkerd_mirror_is_remote_without_suffix() -> None:
    found = classify(svc("api-cluster2", labels=MIRROR), DEFAULTS)
    assert found is not None and found.target is not None
    t = found.target
    assert (t.name, t.cluster, t.scope, t.budget, t.discovery) == (
        "prod/api",
        "cluster2",
        Scope.REMOTE,
        0.15,
        "linkerd",
    )
    assert t.url == "http://api-cluster2.prod.svc.cluster.local:80/"


def test_mirror_annotations_apply_and_opt_out() -> None:
    tuned = classify(
        svc("api-cluster2", labels=MIRROR, annotations=probed(latency_budget="80ms")), DEFAULTS
    )
    assert tuned is not None and tuned.target is not None and tuned.target.budget == 0.08
    assert (
        classify(svc("api-cluster2", labels=MIRROR, annotations={ann.PROBE: "false"}), DEFAULTS)
        is None
    )


def test_mirror_without_cluster_label_is_malformed() -> None:
    with pytest.raises(AnnotationError) as err:
        classify(svc(labels={ann.MIRRORED: "true"}), DEFAULTS)
    assert err.value.annotation == ann.MIRROR_CLUSTER


def test_mirrored_meshprobe_is_a_peer() -> None:
    labels = {**MIRROR, ann.APP_NAME: "meshprobe"}
    ports = [{"name": "http", "port": 9942}]
    found = classify(svc("meshprobe-cluster2", "meshprobe", labels=labels, ports=ports), DEFAULTS)
    assert found is not None and found.target is None
    assert found.peer == Peer(
        "cluster2", "http://meshprobe-cluster2.meshprobe.svc.cluster.local:9942"
    )
    # Our own, unmirrored Service is not a peer (nor a target unless annotated).
    assert (
        classify(svc("meshprobe", "meshprobe", labels={ann.APP_NAME: "meshprobe"}), DEFAULTS)
        is None
    )


def test_cluster_domain() -> None:
    found = classify(svc(annotations=probed()), replace(DEFAULTS, cluster_domain="corp.example"))
    assert found is not None and found.target is not None
    assert found.target.host == "api.prod.svc.corp.example"


def test_cluster_ip_address_mode() -> None:
    by_ip = replace(DEFAULTS, address="cluster-ip")
    obj = svc(annotations=probed())
    obj["spec"]["clusterIP"] = "10.96.3.4"
    found = classify(obj, by_ip)
    assert found is not None and found.target is not None
    assert (found.target.host, found.target.url) == ("10.96.3.4", "http://10.96.3.4:80/")
    obj["spec"]["clusterIP"] = "fd00::10"
    found = classify(obj, by_ip)
    assert found is not None and found.target is not None
    assert found.target.url == "http://[fd00::10]:80/"
    obj["spec"]["clusterIP"] = "None"  # headless
    with pytest.raises(AnnotationError) as err:
        classify(obj, by_ip)
    assert err.value.annotation == "spec.clusterIP"
