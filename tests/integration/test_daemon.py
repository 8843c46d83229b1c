"""A real Daemon against real responders on loopback: export, reload, endpoints."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import socket
from asyncio.subprocess import PIPE
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography.hazmat.primitives import hashes
from structlog.testing import capture_logs

from meshprobe.config.settings import load_settings
from meshprobe.daemon.lifecycle import Daemon
from meshprobe.demo import pki
from tests.integration.daemonkit import Rounds, responder, samples, scrape, write_config
from tests.integration.weblistenerkit import running_daemon

pytestmark = pytest.mark.asyncio


def refused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def base_config(
    local_port: int, remote_port: int, dead_port: int, period: str = "100ms"
) -> dict[str, Any]:
    return {
        "cluster": "cluster1",
        "listen": "127.0.0.1:0",
        "log_format": "json",
        "defaults": {"interval": period, "timeout": period},
        "targets": [
            {"name": "app/local", "url": f"http://127.0.1.1:{local_port}/v1/echo"},
            {
                "name": "app/remote",
                "cluster": "cluster2",
                "url": f"http://127.0.2.1:{remote_port}/v1/echo",
            },
            {"name": "app/dead", "cluster": "cluster2", "url": f"tcp://127.0.0.1:{dead_port}"},
        ],
    }


Stack = tuple[Daemon, Rounds, Path, dict[str, Any]]


@contextlib.asynccontextmanager
async def running(tmp_path: Path, period: str = "100ms") -> AsyncIterator[Stack]:
    """Responders for cluster1 and cluster2 and a started daemon probing them plus a dead port,
    every `period` with `period` as the timeout."""
    async with (
        responder("cluster1", "127.0.1.1") as local_port,
        responder("cluster2", "127.0.2.1") as remote_port,
    ):
        config = base_config(local_port, remote_port, refused_port(), period)
        path = write_config(tmp_path / "meshprobe.yaml", config)
        daemon = Daemon(load_settings(path, environ={}), config_path=path, environ={})
        rounds = Rounds(daemon)
        await daemon.start()
        try:
            yield daemon, rounds, path, config
        finally:
            await daemon.stop()


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    async with running(tmp_path) as started:
        yield started


async def test_metrics_follow_the_contract_and_pass_promtool(
    stack: Stack,
) -> None:
    daemon, rounds, _, _ = stack
    await rounds.wait(["app/local", "app/remote", "app/dead"], at_least=2)
    assert daemon.port is not None
    text = await scrape(daemon.port)

    success = {lbl["target"]: v for lbl, v in samples(text, "meshprobe_probe_success")}
    assert success == {"app/local": 1.0, "app/remote": 1.0, "app/dead": 0.0}
    remote = next(
        lbl for lbl, _ in samples(text, "meshprobe_probe_success") if lbl["target"] == "app/remote"
    )
    assert remote == {
        "source_cluster": "cluster1",
        "target_cluster": "cluster2",
        "target": "app/remote",
        "scope": "remote",
        "probe": "http",
    }
    served = {
        (lbl["target"], lbl["served_by_cluster"]): v
        for lbl, v in samples(text, "meshprobe_served_total")
    }
    assert served[("app/remote", "cluster2")] >= 2
    assert served[("app/local", "cluster1")] >= 2
    refused = [
        v
        for lbl, v in samples(text, "meshprobe_probe_failures_total")
        if lbl["target"] == "app/dead" and lbl["reason"] == "connect_refused"
    ]
    assert refused and refused[0] >= 2
    # Only the reasons that happened have a counter (rules count failures as probes minus
    # successes, so none is needed in advance), and a healthy edge has none.
    reasons = {
        (lbl["target"], lbl["reason"]) for lbl, _ in samples(text, "meshprobe_probe_failures_total")
    }
    assert {r for t, r in reasons if t == "app/dead"} == {"connect_refused"}
    assert not [r for t, r in reasons if t in ("app/local", "app/remote")]
    buckets = [
        lbl["le"]
        for lbl, _ in samples(text, "meshprobe_probe_duration_seconds_bucket")
        if lbl["target"] == "app/local"
    ]
    assert buckets[0] == "0.001" and buckets[-2] == "2.0" and buckets[-1] == "+Inf"
    phases = {
        lbl["phase"]
        for lbl, _ in samples(text, "meshprobe_probe_phase_duration_seconds")
        if lbl["target"] == "app/local"
    }
    assert phases == {"resolve", "connect", "processing", "transfer"}
    budget = {lbl["target"]: v for lbl, v in samples(text, "meshprobe_latency_budget_seconds")}
    assert budget["app/local"] == 0.05 and budget["app/remote"] == 0.15
    assert samples(text, "meshprobe_build_info")[0][0]["version"]
    assert samples(text, "meshprobe_config_reload_success")[0][1] == 1.0
    assert samples(text, "meshprobe_event_loop_lag_seconds_count")
    assert {lbl["discovery"]: v for lbl, v in samples(text, "meshprobe_targets")} == {"static": 3.0}

    promtool = shutil.which("promtool")
    assert promtool, "promtool comes with Debian's prometheus package (scripts/test.sh)"
    proc = await asyncio.create_subprocess_exec(
        promtool, "check", "metrics", stdin=PIPE, stdout=PIPE, stderr=PIPE
    )
    out, err = await proc.communicate(text.encode())
    assert proc.returncode == 0, (out + err).decode()
    assert out.strip() == b"" and err.strip() == b""


async def test_reload_removes_a_target_and_its_series_vanish(
    stack: Stack,
) -> None:
    daemon, rounds, path, config = stack
    await rounds.wait(["app/local", "app/remote", "app/dead"])
    assert daemon.port is not None
    before = await scrape(daemon.port)
    assert any(lbl["target"] == "app/dead" for lbl, _ in samples(before, "meshprobe_probes_total"))

    config["targets"] = [t for t in config["targets"] if t["name"] != "app/dead"]
    write_config(path, config)
    assert daemon.reload() is True
    await rounds.wait(["app/local", "app/remote"])

    after = await scrape(daemon.port)
    names = {lbl["target"] for lbl, _ in samples(after, "meshprobe_probes_total")}
    assert names == {"app/local", "app/remote"}
    assert "app/dead" not in after
    assert samples(after, "meshprobe_config_reload_success")[0][1] == 1.0


async def test_bad_reload_keeps_the_running_config(
    stack: Stack,
) -> None:
    daemon, rounds, path, _ = stack
    await rounds.wait(["app/local"])
    path.write_text("cluster: cluster1\ndefaults: {interval: 10 parsecs}\n")
    assert daemon.reload() is False
    await rounds.wait(["app/local", "app/remote", "app/dead"])  # still probing everything
    assert daemon.port is not None
    text = await scrape(daemon.port)
    assert samples(text, "meshprobe_config_reload_success")[0][1] == 0.0
    assert len({lbl["target"] for lbl, _ in samples(text, "meshprobe_probes_total")}) == 3


async def test_endpoints_answer(tmp_path: Path) -> None:
    root = pki.make_root("test root")
    bundle = tmp_path / "bundle.pem"
    pki.write_bundle(bundle, [root])
    path = write_config(
        tmp_path / "c.yaml",
        {
            "cluster": "east",
            "listen": "127.0.0.1:0",
            "trust": {"bundle_file": str(bundle), "trust_domain": "mesh.example"},
        },
    )
    daemon = Daemon(load_settings(path, environ={}), config_path=path, environ={})
    await daemon.start()
    try:
        base = f"http://127.0.0.1:{daemon.port}"
        async with aiohttp.ClientSession() as s:
            async with s.get(f"{base}/healthz") as r:
                assert r.status == 200
            async with s.get(f"{base}/readyz") as r:
                assert r.status == 200
            async with s.get(f"{base}/v1/echo") as r:
                assert r.status == 200
                assert r.headers["X-Meshprobe-Cluster"] == "east"
            async with s.get(f"{base}/v1/identity") as r:
                doc = json.loads(await r.text())
            async with s.get(f"{base}/probe?target=http://127.0.0.1:1") as r:
                assert r.status == 404  # never probes what a caller hands it
        text = await scrape(daemon.port)
    finally:
        await daemon.stop()
    fp = root.cert.fingerprint(hashes.SHA256()).hex()
    assert doc["cluster"] == "east"
    assert doc["trust_domain"] == "mesh.example"
    assert [r["fingerprint_sha256"] for r in doc["roots"]] == [fp]
    assert doc["roots"][0]["subject"] == "CN=test root"
    info = samples(text, "meshprobe_trust_root_info")
    assert info == [
        ({"source_cluster": "east", "fingerprint_sha256": fp, "subject": "CN=test root"}, 1.0)
    ]


async def test_one_log_line_per_failure_state_change(tmp_path: Path) -> None:
    # Logs are captured from before the start: the first failure may come in the first round.
    # A 1 s timeout: a healthy responder must not time out on a loaded CI machine (a GC pause
    # after a heavy test), which would add a log line this test does not count on.
    with capture_logs() as logs:
        async with running(tmp_path, "1s") as (_, rounds, _, _):
            await rounds.wait(["app/dead", "app/local"], at_least=2)
    failing = [e for e in logs if e["event"] == "probe failing"]
    assert [(e["target"], e["reason"]) for e in failing] == [("app/dead", "connect_refused")]
    assert failing[0]["log_level"] == "warning"


async def test_event_loop_errors_are_structured_log_lines_while_the_daemon_runs() -> None:
    loop = asyncio.get_running_loop()
    done = asyncio.Event()

    def broken() -> None:
        done.set()
        raise RuntimeError("unable to perform operation: the handler is closed")

    with capture_logs() as logs:
        async with running_daemon() as daemon:
            assert daemon.port is not None
            loop.call_soon(broken)
            await done.wait()  # the loop reported the error as the callback raised it
        assert loop.get_exception_handler() is None  # restored at stop
    (entry,) = [e for e in logs if e["event"] == "event loop error"]
    assert entry["log_level"] == "error"
    assert entry["error"] == "RuntimeError: unable to perform operation: the handler is closed"
    assert "broken" in entry["message"]
