"""The status page in a real browser (Debian's chromium through chromedriver) against a real
daemon probing loopback targets of two clusters, and against the demo's own page (whose
screenshot the README shows).

Run on the stdlib loop only: the page's behaviour does not depend on the daemon's loop, and a
browser per loop would double the time."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from meshprobe.demo import pki
from meshprobe.trust.identity import identity_document
from meshprobe.web.server import build_app, start_site
from tests.integration.browserkit import browser, installed, leftovers
from tests.integration.daemonkit import Rounds, probed_daemon, responder
from tests.integration.faults import SPIFFE_ID, TestPki

pytestmark = [
    pytest.mark.asyncio(loop_factories=["asyncio"]),
    pytest.mark.skipif(
        not installed() and not os.environ.get("CI"),
        reason="needs Debian's chromium and chromium-driver (scripts/test.sh installs them)",
    ),
]

# Set to a path (docs/status-page.png) to write the demo's screenshot there for the README.
SCREENSHOT_ENV = "MESHPROBE_SCREENSHOT"
PNG = b"\x89PNG\r\n\x1a\n"


def cell(cluster: str) -> str:
    return f'#matrix td[data-cluster="{cluster}"]'


@contextlib.asynccontextmanager
async def cluster2(test_pki: TestPki, health: dict[str, int]) -> AsyncIterator[tuple[int, int]]:
    """cluster2 on 127.0.0.2: a meshprobe responder publishing our root (a peer that shares
    it), and a service whose health answer the test switches; yields their ports."""
    peer = build_app(
        cluster="cluster2",
        identity=lambda: identity_document(
            cluster="cluster2", trust_domain="cluster.local", bundle=test_pki.anchors
        ),
    )

    async def service(_: web.Request) -> web.Response:
        return web.Response(status=health["status"], text="health\n")

    flaky = web.Application()
    flaky.router.add_get("/health", service)
    peer_runner, peer_port = await start_site(peer, "127.0.0.2", 0)
    flaky_runner, flaky_port = await start_site(flaky, "127.0.0.2", 0)
    try:
        yield peer_port, flaky_port
    finally:
        await flaky_runner.cleanup()
        await peer_runner.cleanup()


async def until(rounds: Rounds, name: str, *, success: bool) -> None:
    """The daemon's next result of `name` with that outcome (results are events, not time)."""
    async with asyncio.timeout(10):
        while True:
            await rounds.wait([name])
            if rounds.last[name].success is success:
                return


async def test_the_page_shows_the_mesh_and_follows_a_failure_and_its_recovery(
    tmp_path: Path, test_pki: TestPki
) -> None:
    health = {"status": 200}
    bundle = tmp_path / "ca.pem"
    pki.write_bundle(bundle, [test_pki.root])
    async with (
        responder("cluster1") as http_port,
        responder("cluster1", ssl_context=test_pki.good()) as https_port,
        cluster2(test_pki, health) as (peer_port, flaky_port),
    ):
        config: dict[str, Any] = {
            "cluster": "cluster1",
            "listen": "127.0.0.1:0",
            # Budgets far above loopback latency: this test is about failing and recovering,
            # and a probe slowed by chromium's own start must not turn a cell over budget.
            "defaults": {
                "interval": "500ms",
                "timeout": "500ms",
                "budget": {"local": "400ms", "remote": "400ms"},
            },
            "trust": {"bundle_file": str(bundle), "trust_domain": "cluster.local"},
            "targets": [
                {"name": "app/api", "url": f"http://127.0.0.1:{http_port}/v1/echo"},
                {
                    "name": "app/api-mtls",
                    "url": f"https://127.0.0.1:{https_port}/v1/echo",
                    "tls": {"identity": SPIFFE_ID},
                },
                {
                    "name": "app/api",
                    "cluster": "cluster2",
                    "url": f"http://127.0.0.2:{peer_port}/v1/echo",
                },
                {
                    "name": "app/flaky",
                    "cluster": "cluster2",
                    "url": f"http://127.0.0.2:{flaky_port}/health",
                },
            ],
            "peers": [{"cluster": "cluster2", "url": f"http://127.0.0.2:{peer_port}"}],
        }
        async with (
            browser(tmp_path / "profile") as page,  # first: chromium's start is CPU-heavy
            probed_daemon(tmp_path / "meshprobe.yaml", config) as (daemon, rounds),
        ):
            await page.get(f"http://127.0.0.1:{daemon.port}/")
            # Both clusters, healthy, and the peer sharing our root.
            await page.wait_for(
                "return ['cluster1', 'cluster2'].every(c => { const td = document.querySelector("
                "`#matrix td[data-cluster='${c}']`); return td && td.dataset.state === 'ok'; })"
                " && document.querySelector('#matrix td[data-trust=shares_root]');"
            )
            await page.run("window.stillTheSamePage = true;")

            # One target fails: its cluster's cell turns failing, ours stays ok, and the edge
            # leads the table with its reason.
            health["status"] = 503
            await until(rounds, "app/flaky", success=False)
            state = await page.wait_for(
                f"const td = document.querySelector('{cell('cluster2')}');"
                "return td && td.dataset.state === 'failing' && td.innerText;"
            )
            assert "failing" in state  # the state in words, not only in colour
            assert (
                await page.run(
                    f"return document.querySelector('{cell('cluster1')}').dataset.state;"
                )
                == "ok"
            )
            first = await page.wait_for(
                "const row = document.querySelector('#edges tbody tr');"
                "return row && row.dataset.state === 'failing' && row.innerText;"
            )
            assert "app/flaky" in first and "http_status" in first and "cluster2" in first

            # The filter and a sortable header.
            await page.type("#filter", "flaky")
            assert (
                await page.wait_for(
                    "return document.querySelectorAll('#edges tbody tr').length === 1"
                    " && document.querySelector('#edge-count').innerText;"
                )
                == "1 of 5 edges"
            )
            await page.run(
                "const f = document.getElementById('filter'); f.value = '';"
                "f.dispatchEvent(new Event('input'));"
            )
            await page.click('#edges th[data-sort="target"] button')
            assert (
                await page.run(
                    "return document.querySelector('#edges th[data-sort=target]')"
                    ".getAttribute('aria-sort');"
                )
                == "ascending"
            )
            targets = await page.run(
                "return [...document.querySelectorAll('#edges tbody tr a[data-edge]')]"
                ".map(a => a.innerText);"
            )
            assert targets == sorted(targets) and targets[0] == "app/api"  # no longer failing first

            # An https edge's page, opened from the keyboard: chain and chart.
            link = await page.run(
                "return [...document.querySelectorAll('#edges a[data-edge]')]"
                ".find(a => a.closest('tr').innerText.includes('https')).dataset.edge;"
            )
            await page.type(f'#edges a[data-edge="{link}"]', "\ue007")  # Enter
            chain = await page.wait_for(
                "const rows = document.querySelectorAll('#chain tbody tr');"
                "const svg = document.getElementById('chart');"
                "return !document.getElementById('edge-view').hidden && rows.length >= 3"
                " && svg.querySelector('line.budget') && svg.querySelectorAll('circle.ok').length"
                " && document.getElementById('chain').innerText;"
            )
            for word in ("leaf", "intermediate", "root", "meshprobe test intermediate"):
                assert word in chain
            assert "verified" in chain
            heading = await page.run("return document.activeElement.id;")
            assert heading == "edge-heading"  # focus follows the navigation
            phases = await page.run("return document.getElementById('phases').innerText;")
            assert "tls" in phases and "connect" in phases

            # The page follows the recovery by itself: no reload.
            await page.click("#back")
            health["status"] = 200
            await until(rounds, "app/flaky", success=True)
            await page.wait_for(
                f"const td = document.querySelector('{cell('cluster2')}');"
                "const row = document.querySelector(`#edges tr[data-state='failing']`);"
                "return td && td.dataset.state === 'ok' && !row;"
            )
            assert await page.run("return window.stillTheSamePage === true;")
            shot = await page.screenshot()
            (tmp_path / "status.png").write_bytes(shot)
            assert shot.startswith(PNG) and len(shot) > 10_000
        assert leftovers(tmp_path / "profile") == []


async def test_the_demo_prints_its_page_first_and_the_page_shows_both_clusters(
    tmp_path: Path,
) -> None:
    """The README's screenshot is this page: `meshprobe demo` itself, as a user starts it."""
    async with browser(tmp_path / "profile") as page:  # first: chromium's start is CPU-heavy
        demo = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "meshprobe", "demo", "--listen", "127.0.1.1:0"),
            *("--duration", "120"),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            assert demo.stdout is not None
            async with asyncio.timeout(30):
                first = (await demo.stdout.readline()).decode()
            assert first.startswith("status page: http://127.0.1.1:"), first
            await page.get(first.split()[2])
            # Every edge answered and none is failing, nor a cluster; the peer shares our root.
            await page.wait_for(
                "const rows = [...document.querySelectorAll('#edges tbody tr')];"
                "const cells = [...document.querySelectorAll('#matrix td[data-cluster]')];"
                "const fine = el => ['ok', 'over_budget'].includes(el.dataset.state);"
                "return rows.length === 7 && cells.length === 2 && cells.every(fine)"
                " && rows.every(fine)"
                " && document.querySelector('#matrix td[data-trust=shares_root]');",
                within=30,
            )
            shot = await page.screenshot()
        finally:
            if demo.returncode is None:
                demo.send_signal(signal.SIGINT)
            _, err = await asyncio.wait_for(demo.communicate(), 30)
        assert demo.returncode == 0, err.decode()[-2000:]
    assert leftovers(tmp_path / "profile") == []
    (tmp_path / "status-page.png").write_bytes(shot)
    assert shot.startswith(PNG) and 10_000 < len(shot) < 300_000, len(shot)
    if target := os.environ.get(SCREENSHOT_ENV):
        shutil.copyfile(tmp_path / "status-page.png", target)
