"""The trust bundle from a watched ConfigMap, client set-up (in-cluster, kubeconfig context),
namespaces and selectors, resync, and the RBAC rules against the calls the code really makes."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes

from meshprobe.daemon.lifecycle import Daemon
from meshprobe.demo import pki
from meshprobe.demo.pki import Issued
from meshprobe.discovery import rbac
from meshprobe.discovery import services as ann
from meshprobe.discovery.client import Collection, connect
from meshprobe.discovery.pacing import Backoff, WatchSettings
from meshprobe.discovery.watch import WatchLoop
from tests.integration.daemonkit import Rounds, responder, samples, scrape_daemon, signals
from tests.integration.faults import TestPki
from tests.integration.kubefake import FakeKube, configmap, service
from tests.integration.kubekit import (
    daemon_config,
    eventually,
    kube_daemon,
    targets_of,
    until_discovered,
)

ISTIO_NS, ISTIO_CM, ISTIO_KEY = "istio-system", "istio-ca-root-cert", "root-cert.pem"


def fp(issued: Issued) -> str:
    return issued.cert.fingerprint(hashes.SHA256()).hex()


def pem(*roots: Issued) -> str:
    return "".join(r.cert_pem().decode() for r in roots)


def roots_exported(text: str) -> set[str]:
    return {lbl["fingerprint_sha256"] for lbl, _ in samples(text, "meshprobe_trust_root_info")}


async def promtool_findings(text: str) -> str:
    """What `promtool check metrics` says about an exposition (scripts/test.sh installs it)."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed")
    proc = await asyncio.create_subprocess_exec(
        promtool,
        "check",
        "metrics",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate(text.encode())
    return out.decode().strip()


def bundle_is(daemon: Daemon, *roots: Issued) -> bool:
    bundle = daemon.status.bundle
    return bundle is not None and bundle.fingerprints() == {fp(r) for r in roots}


class _Collect:
    def __init__(self) -> None:
        self.names: list[str] = []

    def replace(self, objects: list[dict[str, object]]) -> None:
        self.names = sorted(str(o["metadata"]["name"]) for o in objects)  # type: ignore[index]

    def apply(self, event: str, obj: dict[str, object]) -> None:
        pass


async def test_configmap_trust_rotation_without_restart(tmp_path: Path, test_pki: TestPki) -> None:
    """A https target whose chain comes from `root` fails while the ConfigMap holds another
    root, and verifies once the ConfigMap is rotated to include `root`: no restart, no file."""
    other, root = test_pki.other_root, test_pki.root
    async with responder("cluster1", ssl_context=test_pki.good()) as port, FakeKube() as fake:
        if True:
            kubeconfig = fake.write_kubeconfig(tmp_path / "kubeconfig")
            fake.failing = 503  # the API server is unhappy at start: not ready until it lists
            config = daemon_config(
                kubeconfig,
                discovery={"kubernetes": {"enabled": False, "kubeconfig": str(kubeconfig)}},
                trust={"configmap": "istio"},
                targets=[{"name": "app/tls", "url": f"https://127.0.0.1:{port}/v1/echo"}],
            )
            async with kube_daemon(tmp_path, config) as daemon:
                rounds = Rounds(daemon)
                await until_discovered(daemon, lambda: bool(fake.requests))
                assert not daemon.is_ready()
                fake.put("configmaps", configmap(ISTIO_NS, ISTIO_CM, {ISTIO_KEY: pem(other)}))
                fake.put("configmaps", configmap("default", ISTIO_CM, {ISTIO_KEY: pem(root)}))
                fake.failing = None
                await until_discovered(daemon, daemon.is_ready)
                assert roots_exported(await scrape_daemon(daemon)) == {fp(other)}
                await rounds.wait(["app/tls"])
                assert rounds.last["app/tls"].reason is not None
                assert rounds.last["app/tls"].reason.value == "tls_untrusted"

                # Rotation, step 1: the bundle holds old and new roots.
                fake.put("configmaps", configmap(ISTIO_NS, ISTIO_CM, {ISTIO_KEY: pem(other, root)}))
                await until_discovered(daemon, lambda: bundle_is(daemon, other, root))
                assert roots_exported(await scrape_daemon(daemon)) == {fp(other), fp(root)}
                await rounds.wait(["app/tls"], at_least=2)
                assert rounds.last["app/tls"].success

                # A broken update keeps the roots we had, and says so.
                fake.put("configmaps", configmap(ISTIO_NS, ISTIO_CM, {ISTIO_KEY: "garbage"}))
                await until_discovered(daemon, lambda: not daemon.status.bundle_reload_success)
                text = await scrape_daemon(daemon)
                assert roots_exported(text) == {fp(other), fp(root)}
                reload_ok = samples(text, "meshprobe_trust_bundle_reload_success")
                assert [v for _, v in reload_ok] == [0.0]
                # One for the content, one per request the 503s refused at start.
                assert daemon.discovery is not None
                (loop,) = daemon.discovery.loops
                errors = samples(text, "meshprobe_discovery_errors_total")
                expected = [("trust-configmap", 1.0 + loop.stats.failures)]
                assert [(lbl["discovery"], v) for lbl, v in errors] == expected

                # Step 3: the old root goes.
                fake.put("configmaps", configmap(ISTIO_NS, ISTIO_CM, {ISTIO_KEY: pem(root)}))
                await until_discovered(daemon, lambda: bundle_is(daemon, root))
                text = await scrape_daemon(daemon)
                assert roots_exported(text) == {fp(root)}
                assert [v for _, v in samples(text, "meshprobe_trust_bundle_reload_success")] == [
                    1.0
                ]
                await rounds.wait(["app/tls"], at_least=2)
                assert rounds.last["app/tls"].success
            # Only the one ConfigMap was ever asked for, by name.
            cm_requests = [r for r in fake.requests if r.resource == "configmaps"]
            assert {r.query.get("fieldSelector") for r in cm_requests} == {
                f"metadata.name={ISTIO_CM}"
            }
            assert {r.namespace for r in cm_requests} == {ISTIO_NS}


async def test_rbac_rules_are_exactly_the_calls_made(tmp_path: Path) -> None:
    """Discovery in two namespaces with a label selector plus the trust ConfigMap: the fake saw
    list and watch on services and configmaps, nothing else, and only selected objects count."""
    root = pki.make_root("rbac test root")
    async with FakeKube() as fake:
        kubeconfig = fake.write_kubeconfig(tmp_path / "kubeconfig")
        team = {"team": "mesh"}
        probed = {ann.PROBE: "true"}
        fake.put("services", service("a", "one", labels=team, annotations=probed))
        fake.put("services", service("b", "two", labels=team, annotations=probed))
        fake.put("services", service("b", "other-team", annotations=probed))
        fake.put("services", service("c", "elsewhere", labels=team, annotations=probed))
        fake.put(
            "configmaps",
            configmap("linkerd", "linkerd-identity-trust-roots", {"ca-bundle.crt": pem(root)}),
        )
        config = daemon_config(
            kubeconfig,
            discovery={
                "kubernetes": {
                    "enabled": True,
                    "kubeconfig": str(kubeconfig),
                    "namespaces": ["a", "b"],
                    "label_selector": "team=mesh",
                }
            },
            trust={"configmap": "linkerd"},
        )
        async with kube_daemon(tmp_path, config) as daemon:
            await until_discovered(daemon, daemon.is_ready)
            await fake.wait_for(lambda: fake.active_watches == 3)
            assert set(targets_of(daemon)) == {("a/one", "cluster1"), ("b/two", "cluster1")}
            text = await scrape_daemon(daemon)
            up = {lbl["discovery"]: v for lbl, v in samples(text, "meshprobe_discovery_up")}
            assert up == {"kubernetes": 1.0, "linkerd": 1.0, "trust-configmap": 1.0}
            assert await promtool_findings(text) == ""
        allowed = {(verb, rule.resource) for rule in rbac.RULES for verb in rule.verbs}
        assert fake.verbs() == allowed
        names = {rule.resource: rule.resource_names for rule in rbac.RULES}
        for request in fake.requests:
            if names[request.resource]:
                selected = request.query["fieldSelector"].removeprefix("metadata.name=")
                assert selected in names[request.resource]
        services = [r for r in fake.requests if r.resource == "services"]
        assert {r.namespace for r in services} == {"a", "b"}
        assert {r.query.get("labelSelector") for r in services} == {"team=mesh"}


async def test_in_cluster_service_account_over_https(tmp_path: Path, test_pki: TestPki) -> None:
    token = tmp_path / "token"
    token.write_text("in-cluster-token")
    ca = tmp_path / "ca.crt"
    ca.write_bytes(test_pki.root.cert_pem())
    async with FakeKube(token="in-cluster-token", ssl_context=test_pki.good()) as fake:
        fake.put("services", service("default", "x"))
        environ = {
            "KUBERNETES_SERVICE_HOST": "127.0.0.1",
            "KUBERNETES_SERVICE_PORT": str(fake.port),
        }
        api = await connect(
            kubeconfig=None, context=None, environ=environ, token_file=str(token), ca_file=str(ca)
        )
        try:
            assert (api.credentials.source, api.credentials.host) == ("in-cluster", fake.url)
            handler = _Collect()
            activity = asyncio.Event()
            loop = WatchLoop(
                api=api,
                collection=Collection(rbac.SERVICES),
                handler=handler,
                settings=WatchSettings(backoff=Backoff(initial=0.05, cap=0.2)),
                on_health=lambda up, error: None,
                on_activity=activity.set,
            )
            task = asyncio.create_task(loop.run())
            try:
                await eventually(loop.synced.is_set, activity)
            finally:
                task.cancel()
            assert handler.names == ["x"]
            assert loop.stats.failures == 0
        finally:
            await api.aclose()


async def test_kubeconfig_context_and_resync(tmp_path: Path) -> None:
    """`context` picks the right cluster from a kubeconfig; a 1 s resync asks the server for
    1 s watches and lists again after each, with no target churn."""
    async with FakeKube() as fake, FakeKube(token="other") as decoy:
        path = tmp_path / "kubeconfig"
        decoy.write_kubeconfig(path, context="decoy")
        good = fake.write_kubeconfig(tmp_path / "good", context="good")
        import yaml  # noqa: PLC0415

        merged = yaml.safe_load(path.read_text())
        extra = yaml.safe_load(good.read_text())
        extra["clusters"][0]["name"] = "real"
        extra["contexts"][0]["context"]["cluster"] = "real"
        extra["users"][0]["name"] = "real-user"
        extra["contexts"][0]["context"]["user"] = "real-user"
        for key in ("clusters", "users", "contexts"):
            merged[key] += extra[key]
        path.write_text(yaml.safe_dump(merged))
        fake.put("services", service("default", "x", annotations={ann.PROBE: "true"}))
        config = daemon_config(
            path,
            discovery={"kubernetes": {"enabled": True, "kubeconfig": str(path), "context": "good"}},
        )
        watch = WatchSettings(resync_period=1.0, request_timeout=2.0, backoff=Backoff(0.05, 0.3))
        async with kube_daemon(tmp_path, config, watch=watch) as daemon:
            assert daemon.discovery is not None
            await until_discovered(daemon, daemon.is_ready)
            added = signals(daemon).added
            (loop,) = daemon.discovery.loops
            await until_discovered(daemon, lambda: loop.stats.lists >= 2, limit=5.0)
            assert signals(daemon).added == added and signals(daemon).removed == 0
        assert not decoy.requests
        watches = [r for r in fake.requests if r.verb == "watch"]
        assert watches and all(r.query["timeoutSeconds"] == "1" for r in watches)
        assert all(r.query["allowWatchBookmarks"] == "True" for r in watches)
