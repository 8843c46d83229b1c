"""meshprobe + real Prometheus + real Alertmanager, end to end.

Three meshprobe daemons on loopback (cluster1, cluster2 sharing a root CA; cluster3 on a root of
its own) are scraped by a real Prometheus running the shipped rules — in a copy whose only change
is shortened durations (proven below) — and alerts go through a real Alertmanager to a webhook in
this test.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web

from meshprobe.config.settings import load_settings_from_mapping
from meshprobe.daemon.lifecycle import Daemon
from meshprobe.demo import pki
from meshprobe.demo.stack import (
    Stack,
    free_port,
    run_stack,
    scale_durations,
    stack_available,
)
from meshprobe.web.server import start_site

RULES = Path(__file__).parents[2] / "deploy" / "prometheus" / "meshprobe-rules.yaml"
SPEEDUP = 60  # 1h windows become 1 min, `for: 5m` becomes 5 s

pytestmark = [
    pytest.mark.skipif(not stack_available(), reason="needs Debian's prometheus packages"),
    pytest.mark.asyncio(loop_scope="module"),
]


@dataclass
class Webhook:
    """Alertmanager's webhook receiver: every alert of every notification, in order."""

    received: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (status, alert)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.Response:
        payload = await request.json()
        for alert in payload["alerts"]:
            self.received.append((alert["status"], alert))
        self.arrived.set()
        return web.Response(text="ok")

    async def wait_for(self, status: str, within: float, **labels: str) -> dict[str, Any]:
        async with asyncio.timeout(within):
            while True:
                for got_status, alert in self.received:
                    if got_status == status and all(
                        alert["labels"].get(k) == v for k, v in labels.items()
                    ):
                        return alert
                self.arrived.clear()
                await self.arrived.wait()


@dataclass
class World:
    stack: Stack
    webhook: Webhook
    delay: dict[str, float]
    daemons: dict[str, Daemon]


@contextlib.asynccontextmanager
async def _app(app: web.Application, host: str, ssl_context: Any = None) -> AsyncIterator[int]:
    runner, port = await start_site(app, host, 0, ssl_context=ssl_context)
    try:
        yield port
    finally:
        await runner.cleanup()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    tmp = tmp_path_factory.mktemp("e2e")
    shared, rogue = pki.make_root("mesh root"), pki.make_root("rogue root")
    bundles = {}
    for name, root in (("shared", shared), ("rogue", rogue)):
        bundles[name] = tmp / f"{name}.pem"
        pki.write_bundle(bundles[name], [root])
    inter = pki.make_intermediate(shared, "cluster2 intermediate")
    leaf = pki.make_leaf(
        inter, None, uris=["spiffe://cluster.local/ns/app/sa/api"], ip_addresses=["127.0.2.1"]
    )
    delay = {"seconds": 0.0}

    async def api(_: web.Request) -> web.Response:
        await asyncio.sleep(delay["seconds"])  # the injected cross-cluster latency
        return web.Response(text="ok", headers={"X-Meshprobe-Cluster": "cluster2"})

    api_app = web.Application()
    api_app.router.add_get("/api", api)
    webhook = Webhook()
    hook_app = web.Application()
    hook_app.router.add_post("/hook", webhook.handle)
    rules = tmp / "rules.yaml"
    rules.write_text(scale_durations(RULES.read_text(), SPEEDUP))

    async with contextlib.AsyncExitStack() as stack:
        api_port = await stack.enter_async_context(_app(api_app, "127.0.2.1"))
        tls_port = await stack.enter_async_context(
            _app(api_app, "127.0.2.1", pki.server_ssl_context(leaf, [inter]))
        )
        hook_port = await stack.enter_async_context(_app(hook_app, "127.0.0.1"))
        dead_port = free_port("127.0.1.1")  # nothing listens there
        daemons: dict[str, Daemon] = {}
        base = {
            "log_format": "json",
            "log_level": "error",
            "defaults": {"interval": "500ms", "timeout": "450ms"},
        }
        for cluster, ip, bundle in (
            ("cluster3", "127.0.3.1", "rogue"),
            ("cluster2", "127.0.2.1", "shared"),
        ):
            daemon = Daemon(
                load_settings_from_mapping(
                    {
                        **base,
                        "cluster": cluster,
                        "listen": f"{ip}:0",
                        "trust": {"bundle_file": str(bundles[bundle])},
                    }
                )
            )
            await daemon.start()
            stack.push_async_callback(daemon.stop)
            daemons[cluster] = daemon
        c2, c3 = daemons["cluster2"].port, daemons["cluster3"].port
        cluster1 = Daemon(
            load_settings_from_mapping(
                {
                    **base,
                    "cluster": "cluster1",
                    "listen": "127.0.1.1:0",
                    "trust": {"bundle_file": str(bundles["shared"])},
                    "targets": [
                        {
                            "name": "app/api",
                            "cluster": "cluster2",
                            "url": f"http://127.0.2.1:{api_port}/api",
                        },
                        {
                            "name": "app/api-mtls",
                            "cluster": "cluster2",
                            "url": f"https://127.0.2.1:{tls_port}/api",
                            "tls": {"identity": "spiffe://cluster.local/ns/app/sa/api"},
                        },
                        # A local name answered by cluster2: failover in action.
                        {"name": "app/local-api", "url": f"http://127.0.2.1:{api_port}/api"},
                        # A local service that is down: failures by reason.
                        {"name": "app/broken", "url": f"http://127.0.1.1:{dead_port}/"},
                    ],
                    "peers": [
                        {"cluster": "cluster2", "url": f"http://127.0.2.1:{c2}"},
                        {"cluster": "cluster3", "url": f"http://127.0.3.1:{c3}"},
                    ],
                }
            )
        )
        await cluster1.start()
        stack.push_async_callback(cluster1.stop)
        daemons["cluster1"] = cluster1
        targets = [f"127.0.1.1:{cluster1.port}", f"127.0.2.1:{c2}", f"127.0.3.1:{c3}"]
        prom = await stack.enter_async_context(
            run_stack(
                tmp / "stack",
                scrape_targets=targets,
                rules_file=rules,
                webhook_url=f"http://127.0.0.1:{hook_port}/hook",
            )
        )
        async with asyncio.timeout(60):
            # Prometheus's own scrape cycle has no event to wait on.
            while len(await prom.query('up{job="meshprobe"} == 1')) < 3:  # noqa: ASYNC110
                await asyncio.sleep(0.5)
        yield World(prom, webhook, delay, daemons)


async def test_cross_cluster_latency_pages_and_resolves(world: World) -> None:
    world.delay["seconds"] = 0.3  # the remote budget is 150 ms
    fired = await world.webhook.wait_for(
        "firing",
        120,
        alertname="MeshprobeCrossClusterLatencyBudgetBurn",
        target_cluster="cluster2",
        severity="critical",
    )
    assert fired["labels"]["source_cluster"] == "cluster1"
    assert fired["annotations"]["summary"].endswith(".")
    assert "cluster2" in fired["annotations"]["description"]
    world.delay["seconds"] = 0.0
    await world.webhook.wait_for(
        "resolved",
        120,
        alertname="MeshprobeCrossClusterLatencyBudgetBurn",
        target_cluster="cluster2",
        severity="critical",
    )


async def test_ca_mismatch_reaches_the_webhook(world: World) -> None:
    alert = await world.webhook.wait_for(
        "firing", 120, alertname="MeshprobeCAMismatch", peer_cluster="cluster3"
    )
    assert alert["labels"]["severity"] == "critical"
    assert alert["labels"]["source_cluster"] == "cluster1"
    # cluster2 shares our root: never a mismatch for it.
    assert not [
        a
        for _, a in world.webhook.received
        if a["labels"].get("alertname") == "MeshprobeCAMismatch"
        and a["labels"].get("peer_cluster") == "cluster2"
    ]


async def test_every_dashboard_query_returns_data(world: World) -> None:
    from tests.dashboards import (  # noqa: PLC0415
        CONDITIONAL_PANELS,
        FAILURE_ONLY_PANELS,
        dashboard_paths,
        dashboard_queries,
    )

    # The failure scenario is on (CA mismatch with cluster3, failover for app/local-api, the
    # latency test's over-budget burst), so failure-only panels must show data too; wait until
    # the rules have seen it.
    await world.webhook.wait_for("firing", 120, alertname="MeshprobeCAMismatch")
    variables = {"cluster": "cluster1", "target": "app/api-mtls", "target_cluster": "cluster2"}
    failing = {"cluster": "cluster1", "target": "app/broken", "target_cluster": "cluster1"}
    # Discovery panels need Kubernetes discovery, which this stack does not run.
    absent = {t for t, need in CONDITIONAL_PANELS.items() if "discovery" in need.lower()}
    empty = []
    checked = 0
    for path in dashboard_paths():
        failure_queries = dict(dashboard_queries(path, failing))
        for title, healthy_expr in dashboard_queries(path, variables):
            # Failure-only panels are read for a target that is failing.
            expr = failure_queries[title] if title in FAILURE_ONLY_PANELS else healthy_expr
            result = await world.stack.query(expr)  # raises on a parse or evaluation error
            checked += 1
            if not result and title not in absent:
                empty.append(f"{path.name}: {title}: {expr}")
    assert checked > 20
    assert not empty, "\n".join(empty)
