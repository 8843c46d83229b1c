"""Kubernetes discovery end to end: the real kubernetes-asyncio client over HTTP on loopback
against the fake API server, driving a real Daemon; targets are read from the daemon's state and
its /metrics, and every wait is on an event the daemon or the fake sets."""

from __future__ import annotations

import time
from pathlib import Path

import aiohttp
import yaml
from structlog.testing import capture_logs

from meshprobe.discovery import services as ann
from meshprobe.model import Scope
from tests.integration.daemonkit import Rounds, responder, samples, scrape_daemon, signals
from tests.integration.kubefake import FakeKube, free_port, service
from tests.integration.kubekit import (
    daemon_config,
    eventually,
    kube_daemon,
    targets_of,
    until_discovered,
)

PROBED = {ann.PROBE: "true"}


def _metric(text: str, name: str, **labels: str) -> list[float]:
    return [v for lbl, v in samples(text, name) if all(lbl.get(k) == w for k, w in labels.items())]


async def test_annotated_service_appears_changes_and_disappears(tmp_path: Path) -> None:
    async with FakeKube() as fake:
        kubeconfig = fake.write_kubeconfig(tmp_path / "kubeconfig")
        fake.put("services", service("default", "plain"))  # not annotated: never a target
        async with kube_daemon(tmp_path, daemon_config(kubeconfig)) as daemon:
            await until_discovered(daemon, daemon.is_ready)
            created = time.perf_counter()
            fake.put(
                "services",
                service(
                    "production",
                    "api",
                    annotations={**PROBED, ann.PATH: "/healthz", ann.INTERVAL: "1s"},
                    ports=[("grpc", 9090), ("http", 8080)],
                ),
            )
            await until_discovered(
                daemon, lambda: ("production/api", "cluster1") in targets_of(daemon)
            )
            appeared = time.perf_counter() - created
            assert appeared < 2.0, f"target appeared after {appeared:.3f}s"
            target = targets_of(daemon)[("production/api", "cluster1")]
            # Probed by cluster IP in these tests (no DNS); unit tests cover the DNS names.
            assert target.url == "http://127.0.0.1:8080/healthz"
            assert (target.scope, target.interval, target.discovery) == (
                Scope.LOCAL,
                1.0,
                "kubernetes",
            )
            assert set(targets_of(daemon)) == {("production/api", "cluster1")}
            text = await scrape_daemon(daemon)
            assert _metric(text, "meshprobe_targets", discovery="kubernetes") == [1.0]
            assert _metric(text, "meshprobe_discovery_up", discovery="kubernetes") == [1.0]
            assert _metric(text, "meshprobe_latency_budget_seconds", target="production/api") == [
                0.05
            ]

            # New annotations: the same edge, changed in place.
            fake.put(
                "services",
                service(
                    "production",
                    "api",
                    annotations={**PROBED, ann.PORT: "grpc", ann.SCHEME: "tcp", ann.BUDGET: "20ms"},
                    ports=[("grpc", 9090), ("http", 8080)],
                ),
            )
            await until_discovered(
                daemon, lambda: targets_of(daemon)[("production/api", "cluster1")].scheme == "tcp"
            )
            target = targets_of(daemon)[("production/api", "cluster1")]
            assert (target.url, target.budget) == (
                "tcp://127.0.0.1:9090",
                0.02,
            )
            text = await scrape_daemon(daemon)
            assert _metric(text, "meshprobe_latency_budget_seconds", target="production/api") == [
                0.02
            ]

            fake.delete("services", "production", "api")
            await until_discovered(daemon, lambda: not targets_of(daemon))
            text = await scrape_daemon(daemon)
            assert 'target="production/api"' not in text
            assert _metric(text, "meshprobe_targets", discovery="kubernetes") == [0.0]
            assert _metric(
                text, "meshprobe_targets", source_cluster="cluster1", discovery="kubernetes"
            )


async def test_linkerd_mirror_is_a_remote_target_and_meshprobe_mirror_a_peer(
    tmp_path: Path,
) -> None:
    """Mirrors of cluster2's Services lead (by cluster IP, loopback here) to a real cluster2
    responder: the application mirror is a remote edge answered by cluster2, the meshprobe
    mirror a peer whose identity is fetched and whose echo is probed."""
    mirror = {ann.MIRRORED: "true", ann.MIRROR_CLUSTER: "cluster2"}
    async with responder("cluster2") as port, FakeKube() as fake:
        kubeconfig = fake.write_kubeconfig(tmp_path / "kubeconfig")
        fake.put(
            "services",
            service(
                "production",
                "api-cluster2",
                labels=mirror,
                annotations={ann.PATH: "/v1/echo"},
                ports=[("http", port)],
            ),
        )
        fake.put(
            "services",
            service(
                "production", "batch-cluster2", labels=mirror, annotations={ann.PROBE: "false"}
            ),
        )
        fake.put(
            "services",
            service(
                "meshprobe",
                "meshprobe-cluster2",
                labels={**mirror, ann.APP_NAME: "meshprobe"},
                ports=[("http", port)],
            ),
        )
        async with kube_daemon(tmp_path, daemon_config(kubeconfig)) as daemon:
            rounds = Rounds(daemon)
            await until_discovered(daemon, lambda: len(targets_of(daemon)) == 2)
            found = targets_of(daemon)
            assert set(found) == {("production/api", "cluster2"), ("meshprobe/echo", "cluster2")}
            api = found[("production/api", "cluster2")]
            assert api.url == f"http://127.0.0.1:{port}/v1/echo"
            assert (api.scope, api.budget, api.discovery) == (Scope.REMOTE, 0.15, "linkerd")
            echo = found[("meshprobe/echo", "cluster2")]
            assert echo.url == f"http://127.0.0.1:{port}/v1/echo"
            peers = daemon.status.peers
            await eventually(lambda: "cluster2" in peers, signals(daemon).peer_checked)
            await rounds.wait(["production/api", "meshprobe/echo"])
            assert rounds.last["production/api"].served_by == "cluster2"
            assert rounds.last["meshprobe/echo"].success
            text = await scrape_daemon(daemon)
            assert _metric(text, "meshprobe_peer_up", peer_cluster="cluster2") == [1.0]
            assert _metric(text, "meshprobe_targets", discovery="linkerd") == [1.0]
            assert _metric(text, "meshprobe_targets", discovery="peer") == [1.0]


async def test_watch_survives_dropped_connection_and_410_gone(tmp_path: Path) -> None:
    async with FakeKube() as fake:
        kubeconfig = fake.write_kubeconfig(tmp_path / "kubeconfig")
        for name in ("a", "b", "c"):
            fake.put("services", service("default", name, annotations=PROBED))
        async with kube_daemon(tmp_path, daemon_config(kubeconfig)) as daemon:
            assert daemon.discovery is not None
            await until_discovered(daemon, lambda: len(targets_of(daemon)) == 3)
            await fake.wait_for(lambda: fake.active_watches == 1)
            (loop,) = daemon.discovery.loops
            sig = signals(daemon)
            start = (sig.added, sig.removed)

            # Cut the watch while the API server refuses reconnects; change things meanwhile.
            fake.failing = 503
            fake.drop_watches()
            await until_discovered(daemon, lambda: loop.stats.failures >= 2)
            fake.put("services", service("default", "d", annotations=PROBED))
            fake.put("services", service("default", "b", annotations={**PROBED, ann.PATH: "/b"}))
            fake.delete("services", "default", "c")
            fake.bookmark()  # no watch open: nobody hears it
            fake.failing = None
            expected = {"default/a": "/", "default/b": "/b", "default/d": "/"}
            await until_discovered(
                daemon,
                lambda: {n: t.path for (n, _), t in targets_of(daemon).items()} == expected,
            )
            assert loop.stats.lists == 1, "a dropped watch resumes from its version, no relist"
            resumed = [r for r in fake.requests if r.verb == "watch"][-1]
            assert int(resumed.query["resourceVersion"]) >= 1003
            # Only real changes restarted loops: d and the new b in, c and the old b out.
            assert (sig.added - start[0], sig.removed - start[1]) == (2, 2)

            # Now expire our version: the watch gets 410 Gone and lists again.
            await fake.wait_for(lambda: fake.active_watches == 1)
            fake.put("services", service("default", "e", annotations=PROBED))
            await until_discovered(daemon, lambda: ("default/e", "cluster1") in targets_of(daemon))
            fake.bookmark()
            await until_discovered(daemon, lambda: loop.stats.bookmarks >= 1)
            fake.delete("services", "default", "a")
            fake.expire_watches()  # history compacted: a's deletion only shows in a new list
            await until_discovered(daemon, lambda: loop.stats.lists == 2)
            await until_discovered(
                daemon, lambda: ("default/a", "cluster1") not in targets_of(daemon)
            )
            assert sorted(n for n, _ in targets_of(daemon)) == [
                "default/b",
                "default/d",
                "default/e",
            ]
            assert loop.stats.gone == 1
            assert (sig.added - start[0], sig.removed - start[1]) == (3, 3)
            text = await scrape_daemon(daemon)
            assert _metric(text, "meshprobe_discovery_up", discovery="kubernetes") == [1.0]
            # The dropped stream and the refused reconnects count; 410 Gone is routine and does not.
            errors = _metric(text, "meshprobe_discovery_errors_total", discovery="kubernetes")
            assert errors == [float(loop.stats.failures)]


async def test_api_server_down_at_start_then_ready(tmp_path: Path) -> None:
    port = free_port()
    fake = FakeKube(port=port)
    kubeconfig = fake.write_kubeconfig(tmp_path / "kubeconfig")
    async with kube_daemon(tmp_path, daemon_config(kubeconfig)) as daemon:
        assert daemon.discovery is not None
        await until_discovered(daemon, lambda: bool(daemon.discovery and daemon.discovery.loops))
        (loop,) = daemon.discovery.loops
        await until_discovered(daemon, lambda: loop.stats.failures >= 2)
        base = f"http://127.0.0.1:{daemon.port}"
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/readyz") as resp:
                assert resp.status == 503
            async with http.get(f"{base}/healthz") as resp:
                assert resp.status == 200
            text = await scrape_daemon(daemon)
            assert _metric(text, "meshprobe_discovery_up", discovery="kubernetes") == [0.0]
            assert _metric(text, "meshprobe_discovery_errors_total", discovery="kubernetes")[0] >= 2

            fake.put("services", service("default", "late", annotations=PROBED))
            async with fake:
                await until_discovered(daemon, daemon.is_ready)
                async with http.get(f"{base}/readyz") as resp:
                    assert resp.status == 200
                assert ("default/late", "cluster1") in targets_of(daemon)
                text = await scrape_daemon(daemon)
                assert _metric(text, "meshprobe_discovery_up", discovery="kubernetes") == [1.0]


async def test_malformed_annotation_skips_only_that_service(tmp_path: Path) -> None:
    """The good Services lead to a real responder and keep being probed successfully while
    their neighbours' annotations are broken."""
    async with responder("cluster1") as port, FakeKube() as fake:
        kubeconfig = fake.write_kubeconfig(tmp_path / "kubeconfig")
        good = {**PROBED, ann.PATH: "/v1/echo"}

        def svc(name: str, **annotations: str) -> dict[str, object]:
            return service(
                "apps", name, annotations={**good, **annotations}, ports=[("http", port)]
            )

        fake.put("services", svc("good1"))
        fake.put("services", svc("bad-port", **{ann.PORT: "nope"}))
        fake.put("services", svc("good2"))
        with capture_logs() as logs:
            async with kube_daemon(tmp_path, daemon_config(kubeconfig)) as daemon:
                rounds = Rounds(daemon)
                await until_discovered(daemon, lambda: len(targets_of(daemon)) == 2)
                assert set(targets_of(daemon)) == {
                    ("apps/good1", "cluster1"),
                    ("apps/good2", "cluster1"),
                }
                fake.put("services", svc("bad-interval", **{ann.INTERVAL: "soon"}))
                fake.put("services", svc("good3"))
                await until_discovered(daemon, lambda: len(targets_of(daemon)) == 3)
                names = ["apps/good1", "apps/good2", "apps/good3"]
                await rounds.wait(names, at_least=2)
                assert all(rounds.last[n].success for n in names)
                text = await scrape_daemon(daemon)
                errors = _metric(text, "meshprobe_discovery_errors_total", discovery="kubernetes")
                assert errors == [2.0]
                assert _metric(text, "meshprobe_discovery_up", discovery="kubernetes") == [1.0]

                # Fixed: the Service becomes a target, the error count stays where it was.
                fake.put("services", svc("bad-port", **{ann.PORT: "http"}))
                await until_discovered(daemon, lambda: len(targets_of(daemon)) == 4)
                await rounds.wait(["apps/bad-port"])
                assert rounds.last["apps/bad-port"].success
                text = await scrape_daemon(daemon)
                errors = _metric(text, "meshprobe_discovery_errors_total", discovery="kubernetes")
                assert errors == [2.0]
    skipped = [e for e in logs if e["event"] == "malformed annotation, Service skipped"]
    assert [(e["service"], e["annotation"]) for e in skipped] == [
        ("apps/bad-port", ann.PORT),
        ("apps/bad-interval", ann.INTERVAL),
    ]
    assert "no port named 'nope'" in skipped[0]["reason"]
    assert skipped[0]["log_level"] == "warning"


async def test_reload_applies_defaults_to_discovered_targets_keeps_discovery(
    tmp_path: Path,
) -> None:
    async with FakeKube() as fake:
        kubeconfig = fake.write_kubeconfig(tmp_path / "kubeconfig")
        fake.put("services", service("default", "x", annotations=PROBED))
        config = daemon_config(kubeconfig)
        async with kube_daemon(tmp_path, config) as daemon:
            await until_discovered(daemon, lambda: len(targets_of(daemon)) == 1)
            assert daemon.config_path is not None
            changed = daemon_config(
                kubeconfig,
                defaults={"interval": "400ms", "timeout": "150ms"},
                discovery={"kubernetes": {"enabled": False}},
            )
            daemon.config_path.write_text(yaml.safe_dump(changed))
            with capture_logs() as logs:
                assert daemon.reload()
            assert [t.interval for t in targets_of(daemon).values()] == [0.4]
            assert daemon.settings.discovery.kubernetes.enabled  # restart-only
            assert {"event": "setting changes only on restart", "field": "discovery"} in [
                {k: e[k] for k in ("event", "field") if k in e} for e in logs
            ]
            # The watch is the same one and still delivers.
            fake.put("services", service("default", "y", annotations=PROBED))
            await until_discovered(daemon, lambda: len(targets_of(daemon)) == 2)
            assert {t.interval for t in targets_of(daemon).values()} == {0.4}


async def test_gone_as_http_status_on_reconnect_relists(tmp_path: Path) -> None:
    """Some servers answer an expired resume with HTTP 410 rather than an ERROR event."""
    async with FakeKube() as fake:
        kubeconfig = fake.write_kubeconfig(tmp_path / "kubeconfig")
        fake.put("services", service("default", "a", annotations=PROBED))
        async with kube_daemon(tmp_path, daemon_config(kubeconfig)) as daemon:
            assert daemon.discovery is not None
            await until_discovered(daemon, lambda: len(targets_of(daemon)) == 1)
            await fake.wait_for(lambda: fake.active_watches == 1)
            (loop,) = daemon.discovery.loops
            fake.gone_as_status = True
            fake.failing = 503
            fake.drop_watches()
            await until_discovered(daemon, lambda: loop.stats.failures >= 2)
            fake.delete("services", "default", "a")
            fake.compact()
            fake.put("services", service("default", "b", annotations=PROBED))
            fake.failing = None  # the resume from our version now gets HTTP 410
            await until_discovered(daemon, lambda: loop.stats.gone == 1 and loop.stats.lists == 2)
            assert set(targets_of(daemon)) == {("default/b", "cluster1")}


async def test_watch_ending_at_once_backs_off_instead_of_spinning(tmp_path: Path) -> None:
    async with FakeKube() as fake:
        kubeconfig = fake.write_kubeconfig(tmp_path / "kubeconfig")
        fake.put("services", service("default", "a", annotations=PROBED))
        async with kube_daemon(tmp_path, daemon_config(kubeconfig)) as daemon:
            assert daemon.discovery is not None
            await until_discovered(daemon, daemon.is_ready)
            await fake.wait_for(lambda: fake.active_watches == 1)
            (loop,) = daemon.discovery.loops
            fake.hollow = True
            fake.end_watches()  # ended early and empty: the first of the failures below
            await until_discovered(daemon, lambda: loop.stats.failures >= 3)
            # Backoff (50 ms doubling) spaces the empty watches: a spinning loop would have made
            # hundreds of requests by now. (test_discovery_backoff checks the escalation.)
            assert fake.watches_opened <= loop.stats.failures + 2
            fake.hollow = False
            fake.put("services", service("default", "b", annotations=PROBED))
            await until_discovered(daemon, lambda: len(targets_of(daemon)) == 2)
            assert loop.stats.lists == 1
