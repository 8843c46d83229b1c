"""Catalog bookkeeping, merging with static config, backoff, and the config sections."""

from __future__ import annotations

import random
from typing import Any

import pytest
from structlog.testing import capture_logs

from meshprobe.config.settings import ConfigError, load_settings_from_mapping
from meshprobe.config.targets import make_target
from meshprobe.discovery import services as ann
from meshprobe.discovery.catalog import ServiceCatalog
from meshprobe.discovery.merge import merge_peers, merge_targets
from meshprobe.discovery.pacing import Backoff
from meshprobe.model import Peer, Target
from tests.unit.test_discovery_services import DEFAULTS, svc


def target(name: str, url: str, discovery: str = "static", cluster: str = "c1") -> Target:
    return make_target(
        name=name,
        url=url,
        cluster=cluster,
        own_cluster="c1",
        interval=1.0,
        timeout=0.5,
        budget=0.05,
        local_budget=0.05,
        remote_budget=0.15,
        discovery=discovery,
    )


def versioned(obj: dict[str, Any], version: str) -> dict[str, Any]:
    obj["metadata"]["resourceVersion"] = version
    return obj


class Recorder:
    def __init__(self) -> None:
        self.changes = 0
        self.errors: list[str] = []

    def catalog(self) -> ServiceCatalog:
        return ServiceCatalog(
            defaults=DEFAULTS, on_change=self.changed, on_error=self.errors.append
        )

    def changed(self) -> None:
        self.changes += 1


def test_catalog_counts_a_malformed_version_once() -> None:
    rec = Recorder()
    catalog = rec.catalog()
    handler = catalog.handler(None)
    bad = versioned(svc("bad", annotations={ann.PROBE: "true", ann.PORT: "x"}), "1")
    good = versioned(svc("good", annotations={ann.PROBE: "true"}), "2")
    with capture_logs() as logs:
        handler.replace([bad, good])
        handler.replace([bad, good])  # a relist: same versions, nothing re-read
        handler.apply("MODIFIED", versioned(svc("other"), "3"))
    assert rec.errors == ["kubernetes"]
    assert [e["service"] for e in logs if "malformed" in e["event"]] == ["prod/bad"]
    assert [t.name for t in catalog.targets()] == ["prod/good"]
    assert rec.changes == 1
    handler.apply("MODIFIED", versioned(svc("bad", annotations={ann.PROBE: "true"}), "4"))
    assert [t.name for t in catalog.targets()] == ["prod/bad", "prod/good"]
    assert rec.changes == 2


def test_catalog_relist_removes_only_its_namespace() -> None:
    rec = Recorder()
    catalog = rec.catalog()
    a = versioned(svc("x", "a", annotations={ann.PROBE: "true"}), "1")
    b = versioned(svc("y", "b", annotations={ann.PROBE: "true"}), "2")
    catalog.handler("a").replace([a])
    catalog.handler("b").replace([b])
    catalog.handler("a").replace([])
    assert [t.name for t in catalog.targets()] == ["b/y"]
    catalog.handler("b").apply("DELETED", b)
    assert catalog.targets() == []


def test_catalog_new_defaults_rebuild_targets() -> None:
    from dataclasses import replace  # noqa: PLC0415

    rec = Recorder()
    catalog = rec.catalog()
    catalog.handler(None).replace([versioned(svc(annotations={ann.PROBE: "true"}), "1")])
    catalog.set_defaults(replace(DEFAULTS, interval=30.0))
    assert [t.interval for t in catalog.targets()] == [30.0]


def test_merge_static_wins_and_duplicates_collapse() -> None:
    static = [target("app/a", "http://a/")]
    discovered = [
        target("app/a", "http://a/", "kubernetes"),  # the same edge: dropped silently
        target("app/a", "http://other/", "kubernetes"),  # same labels, other URL: conflict
        target("app/b", "http://b/", "kubernetes"),
        target("app/a", "http://a2/", "linkerd", cluster="c2"),  # another cluster: its own edge
    ]
    merged, conflicts = merge_targets(static, discovered)
    assert [(t.name, t.cluster, t.url) for t in merged] == [
        ("app/a", "c1", "http://a/"),
        ("app/b", "c1", "http://b/"),
        ("app/a", "c2", "http://a2/"),
    ]
    assert len(conflicts) == 1 and "http://other/" in conflicts[0]


def test_merge_peers() -> None:
    static = [Peer("c2", "http://static")]
    found = [Peer("c2", "http://found"), Peer("c3", "http://c3"), Peer("c1", "http://me")]
    assert merge_peers(static, found, own_cluster="c1") == [
        Peer("c2", "http://static"),
        Peer("c3", "http://c3"),
    ]


def test_backoff_is_capped_exponential_with_jitter() -> None:
    backoff = Backoff(initial=0.5, cap=4.0, jitter=0.5)
    rng = random.Random(1)
    for failures, base in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (10, 4.0)]:
        delays = [backoff.delay(failures, rng) for _ in range(50)]
        assert all(base * 0.5 <= d <= base for d in delays)
        assert len(set(delays)) > 1


def test_config_sections() -> None:
    settings = load_settings_from_mapping(
        {
            "cluster": "c1",
            "discovery": {
                "kubernetes": {"enabled": True, "namespaces": ["a"], "resync_period": "2m"}
            },
            "trust": {"configmap": {"preset": "istio", "namespace": "meshprobe"}},
        }
    )
    kube = settings.discovery.kubernetes
    assert (kube.enabled, kube.namespaces, kube.resync_period) == (True, ["a"], 120.0)
    assert settings.trust.configmap is not None
    assert settings.trust.configmap.ref == ("meshprobe", "istio-ca-root-cert", "root-cert.pem")
    linkerd = load_settings_from_mapping({"cluster": "c1", "trust": {"configmap": "linkerd"}})
    assert linkerd.trust.configmap is not None
    assert linkerd.trust.configmap.ref == (
        "linkerd",
        "linkerd-identity-trust-roots",
        "ca-bundle.crt",
    )


@pytest.mark.parametrize(
    ("data", "path", "reason"),
    [
        ({"trust": {"configmap": "vault"}}, "trust.configmap", "unknown preset"),
        ({"trust": {"configmap": {"name": "x"}}}, "trust.configmap.namespace", "required"),
        ({"trust": {"configmap": "istio", "bundle_file": "/b"}}, "trust.configmap", "choose one"),
        (
            {"discovery": {"kubernetes": {"namespaces": ["A"]}}},
            "discovery.kubernetes.namespaces.0",
            "invalid namespace",
        ),
        (
            {"discovery": {"kubernetes": {"namespaces": ["a", "a"]}}},
            "discovery.kubernetes.namespaces",
            "more than once",
        ),
        (
            {"discovery": {"kubernetes": {"resync_period": "100ms"}}},
            "discovery.kubernetes.resync_period",
            "at least 1s",
        ),
        (
            {"discovery": {"kubernetes": {"enabeld": True}}},
            "discovery.kubernetes.enabeld",
            "unknown key",
        ),
    ],
)
def test_config_errors(data: dict[str, Any], path: str, reason: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings_from_mapping({"cluster": "c1", **data})
    assert any(i.path == path and reason in i.reason for i in err.value.errors), err.value.errors


def test_cli_kube_flags_override_the_file() -> None:
    from meshprobe.cli.main import _with_kube_flags, build_parser  # noqa: PLC0415

    args = build_parser().parse_args(["run", "--kubeconfig", "/k", "--context", "east"])
    settings = load_settings_from_mapping(
        {"cluster": "c1", "discovery": {"kubernetes": {"enabled": True, "kubeconfig": "/file"}}}
    )
    kube = _with_kube_flags(settings, args.kubeconfig, args.context).discovery.kubernetes
    assert (kube.enabled, kube.kubeconfig, kube.context) == (True, "/k", "east")
    assert _with_kube_flags(settings, None, None) is settings


def test_check_summary_names_the_kubernetes_sources() -> None:
    from meshprobe.config.settings import summarize  # noqa: PLC0415

    settings = load_settings_from_mapping(
        {
            "cluster": "c1",
            "trust": {"configmap": "linkerd"},
            "discovery": {"kubernetes": {"enabled": True}},
        }
    )
    line = summarize(settings)
    assert (
        "trust bundle from ConfigMap linkerd/linkerd-identity-trust-roots key ca-bundle.crt" in line
    )
    assert "Kubernetes discovery in all namespaces" in line
