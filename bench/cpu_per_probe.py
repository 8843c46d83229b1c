"""CPU seconds meshprobe spends per 1000 plain-HTTP probes at a steady probe rate.

Method: a responder runs in its own process (so its CPU is not counted); `meshprobe run` probes
`--targets` HTTP targets at `--interval`, i.e. targets/interval probes per second. After a
warm-up, the daemon's own /metrics is read twice, `--seconds` apart: the ratio of the increase of
`process_cpu_seconds_total` to the increase of `meshprobe_probes_total` is the figure. Reading
both counters from the same exposition keeps the two in step; the scrape itself costs a little
CPU, which is counted (a real Prometheus scrapes too).

    python bench/cpu_per_probe.py --targets 200 --interval 1s --seconds 30
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import yaml
from prometheus_client.parser import text_string_to_metric_families

RESPONDER = """
import asyncio, sys
from aiohttp import web
from meshprobe.web.server import build_app

async def main() -> None:
    app = build_app(cluster="bench", identity=lambda: {})
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.3.1", int(sys.argv[1])).start()
    print("ready", flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    out = {"cpu": 0.0, "probes": 0.0, "lag_sum": 0.0, "lag_count": 0.0}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "process_cpu_seconds_total":
                out["cpu"] = s.value
            elif s.name == "meshprobe_probes_total":
                out["probes"] += s.value
            elif s.name == "meshprobe_event_loop_lag_seconds_sum":
                out["lag_sum"] = s.value
            elif s.name == "meshprobe_event_loop_lag_seconds_count":
                out["lag_count"] = s.value
    return out


def wait_ready(port: int, deadline: float) -> None:
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit("meshprobe did not become ready")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--targets", type=int, default=200)
    parser.add_argument("--interval", default="1s")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--keepalive", action="store_true")
    parser.add_argument("--loop", choices=["auto", "asyncio"], default="auto")
    args = parser.parse_args()

    resp_port = free_port("127.0.3.1")
    meshprobe_port = free_port("127.0.0.1")
    responder = subprocess.Popen(
        [sys.executable, "-c", RESPONDER, str(resp_port)], stdout=subprocess.PIPE, text=True
    )
    daemon = None
    try:
        assert responder.stdout is not None
        responder.stdout.readline()
        targets = [
            {
                "name": f"bench/t{i}",
                "url": f"http://127.0.3.1:{resp_port}/v1/echo",
                "keepalive": args.keepalive,
            }
            for i in range(args.targets)
        ]
        config = {
            "cluster": "bench",
            "listen": f"127.0.0.1:{meshprobe_port}",
            "log_level": "warning",
            "log_format": "json",
            "concurrency": 1024,
            "defaults": {"interval": args.interval, "timeout": "1s"},
            "targets": targets,
        }
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "bench.yaml"
            path.write_text(yaml.safe_dump(config))
            env = {**os.environ, "MESHPROBE_LOOP": args.loop}
            daemon = subprocess.Popen(
                [sys.executable, "-m", "meshprobe", "run", "--config", str(path)], env=env
            )
            wait_ready(meshprobe_port, time.monotonic() + 30)
            time.sleep(args.warmup)
            a = scrape(meshprobe_port)
            time.sleep(args.seconds)
            b = scrape(meshprobe_port)
    finally:
        for proc in (daemon, responder):
            if proc is not None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=10)
    probes = b["probes"] - a["probes"]
    cpu = b["cpu"] - a["cpu"]
    lag_n = b["lag_count"] - a["lag_count"]
    result = {
        "targets": args.targets,
        "interval": args.interval,
        "keepalive": args.keepalive,
        "loop": args.loop,
        "window_s": args.seconds,
        "probes": probes,
        "probes_per_s": round(probes / args.seconds, 1),
        "cpu_s": round(cpu, 3),
        "cpu_s_per_1000_probes": round(1000 * cpu / probes, 4) if probes else None,
        "cpu_share_of_one_core": round(cpu / args.seconds, 3),
        "mean_loop_lag_ms": round(1000 * (b["lag_sum"] - a["lag_sum"]) / lag_n, 3)
        if lag_n
        else None,
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
