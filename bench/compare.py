"""meshprobe against Debian's prometheus-blackbox-exporter, side by side, in one run.

What it measures (all traffic on loopback):
- **cost**: CPU-seconds of the prober process (utime+stime from /proc) per 1000 probes, at a fixed
  probe rate R, for plain HTTP and HTTPS (fresh connection per probe for both probers), and for
  gRPC health checks (`grpc:RATE`, plaintext h2c against grpcio's reference health server,
  bench/grpctarget.py; a fresh connection per probe for both);
- **timing error**: the prober's reported probe duration minus the target's injected delay,
  median and p99. Both are the wall clock each prober reports (meshprobe: start of the probe to the
  complete answer, resolve, connect, TLS and body included; blackbox: probe_duration_seconds);
- **scale**: meshprobe with 1,000 and 10,000 targets at a 30 s interval: CPU share, RSS,
  event-loop lag p99, /metrics response time and size;
- **churn**: 10 % of 1,000 targets replaced every 10 s: RSS before/after, stale series.

meshprobe schedules its own probes: N targets at interval I make R = N/I probes/s. blackbox_exporter
probes when asked: an open-loop driver here requests /probe R times per second (not waiting for
answers, so a slow prober cannot slow the clock). Rounds alternate meshprobe and blackbox so drift
on a noisy machine hits both. The target server (bench/targetserver.py) runs in its own process;
its CPU share is reported so one can see it is not the bottleneck.

meshprobe's timing error is read per probe through the daemon's result listener, in a process
that runs only the daemon (the listener appends one float per probe); its CPU cost is measured in
a separate run of `meshprobe run` with nothing attached.

    python bench/compare.py                 # the full run (about 15 minutes)
    python bench/compare.py --quick         # a smoke run of a few seconds per case
    python bench/compare.py --cases https:200 http:200 --no-timing --skip scale churn \
        --blackbox /usr/bin/prometheus-blackbox-exporter   # CPU cost of two cases only
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from prometheus_client.parser import text_string_to_metric_families

from meshprobe.demo import pki

HOST = "127.0.3.1"
CLK_TCK = os.sysconf("SC_CLK_TCK")
BLACKBOX = "prometheus-blackbox-exporter"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def free_port() -> int:
    import socket  # noqa: PLC0415

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


@dataclass
class Case:
    prober: str
    proto: str
    rate: int
    probes: float
    cpu_s: float
    cpu_s_per_1000: float
    err_median_ms: float | None = None
    err_p99_ms: float | None = None
    target_cpu_share: float | None = None


class World:
    """The target server and certificates shared by every run."""

    def __init__(self, workdir: Path, delay: float) -> None:
        self.workdir = workdir
        self.delay = delay
        root = pki.make_root("bench root")
        leaf = pki.make_leaf(root, "bench", ip_addresses=[HOST])
        self.ca = workdir / "ca.pem"
        pki.write_bundle(self.ca, [root])
        (workdir / "cert.pem").write_bytes(leaf.cert_pem())
        (workdir / "key.pem").write_bytes(leaf.key_pem())
        self.server = subprocess.Popen(
            [
                sys.executable,
                str(Path(__file__).with_name("targetserver.py")),
                "--host",
                HOST,
                "--delay",
                str(delay),
                "--cert",
                str(workdir / "cert.pem"),
                "--key",
                str(workdir / "key.pem"),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.server.stdout is not None
        self.ports: dict[str, int] = json.loads(self.server.stdout.readline())
        # The gRPC health target: grpcio's reference server, with the same injected delay.
        self.grpc_server = subprocess.Popen(
            [
                sys.executable,
                str(Path(__file__).with_name("grpctarget.py")),
                *("--host", HOST, "--delay", str(delay)),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.grpc_server.stdout is not None
        self.ports |= json.loads(self.grpc_server.stdout.readline())

    def url(self, proto: str) -> str:
        if proto == "grpc":
            return f"grpc://{HOST}:{self.ports[proto]}"
        return f"{proto}://{HOST}:{self.ports[proto]}/"

    def blackbox_target(self, proto: str) -> str:
        """blackbox_exporter's grpc prober takes host:port, its http prober a URL."""
        return f"{HOST}:{self.ports[proto]}" if proto == "grpc" else self.url(proto)

    def server_pid(self, proto: str) -> int:
        return self.grpc_server.pid if proto == "grpc" else self.server.pid

    def close(self) -> dict[str, Any]:
        """Stop the targets; returns the http target's own account of how late it answered."""
        self.grpc_server.send_signal(signal.SIGTERM)
        self.grpc_server.communicate(timeout=10)
        self.server.send_signal(signal.SIGTERM)
        out, _ = self.server.communicate(timeout=10)
        lines = [line for line in out.splitlines() if line.startswith("{")]
        return json.loads(lines[-1]) if lines else {}


def meshprobe_config(world: World, proto: str, n: int, interval: str, port: int) -> dict[str, Any]:
    target: dict[str, Any] = {"url": world.url(proto)}
    if proto == "https":
        target["tls"] = {"ca_file": str(world.ca)}
    return {
        "cluster": "bench",
        "listen": f"127.0.0.1:{port}",
        "log_level": "error",
        "log_format": "json",
        "concurrency": 4096,
        "defaults": {"interval": interval, "timeout": "2s" if interval != "1s" else "1s"},
        "targets": [{**target, "name": f"bench/t{i}"} for i in range(n)],
    }


def scrape(port: int) -> tuple[str, float]:
    import urllib.request  # noqa: PLC0415

    began = time.perf_counter()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as resp:
        text = resp.read().decode()
    return text, time.perf_counter() - began


def metric_sum(text: str, name: str) -> float:
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    )


def lag_p99(before: str, after: str) -> float | None:
    def buckets(text: str) -> dict[float, float]:
        return {
            float(s.labels["le"]): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name == "meshprobe_event_loop_lag_seconds_bucket"
        }

    a, b = buckets(before), buckets(after)
    delta = sorted((le, b[le] - a.get(le, 0.0)) for le in b)
    total = delta[-1][1] if delta else 0
    if not total:
        return None
    for le, count in delta:
        if count >= 0.99 * total:
            return le
    return None


class MeshprobeProcess:
    def __init__(self, config: dict[str, Any], workdir: Path) -> None:
        self.path = workdir / "meshprobe.yaml"
        self.write(config)
        self.port = int(config["listen"].rsplit(":", 1)[1])
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "meshprobe", "run", "--config", str(self.path)]
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                scrape(self.port)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def write(self, config: dict[str, Any]) -> None:
        self.path.write_text(yaml.safe_dump(config))

    def reload(self, config: dict[str, Any]) -> None:
        self.write(config)
        self.proc.send_signal(signal.SIGHUP)

    def close(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=10)


def run_meshprobe_cost(world: World, proto: str, rate: int, window: float, warmup: float) -> Case:
    n, interval = (rate, "1s") if rate >= 50 else (rate * 2, "2s")
    with tempfile.TemporaryDirectory() as tmp:
        mp = MeshprobeProcess(meshprobe_config(world, proto, n, interval, free_port()), Path(tmp))
        try:
            time.sleep(warmup + 1.0)  # every target's first run is spread over one interval
            text_a, _ = scrape(mp.port)
            cpu_a, srv_a = cpu_seconds(mp.proc.pid), cpu_seconds(world.server_pid(proto))
            time.sleep(window)
            cpu_b, srv_b = cpu_seconds(mp.proc.pid), cpu_seconds(world.server_pid(proto))
            text_b, _ = scrape(mp.port)
        finally:
            mp.close()
    probes = metric_sum(text_b, "meshprobe_probes_total") - metric_sum(
        text_a, "meshprobe_probes_total"
    )
    cpu = cpu_b - cpu_a
    return Case(
        "meshprobe",
        proto,
        rate,
        probes,
        cpu,
        1000 * cpu / max(probes, 1),
        target_cpu_share=(srv_b - srv_a) / window,
    )


async def meshprobe_timing(world: World, proto: str, rate: int, window: float) -> list[float]:
    """Per-probe durations through the daemon's result listener (see the module docstring)."""
    from meshprobe.config.settings import load_settings_from_mapping  # noqa: PLC0415
    from meshprobe.daemon.lifecycle import Daemon  # noqa: PLC0415

    config = meshprobe_config(world, proto, rate, "1s", 0)
    daemon = Daemon(load_settings_from_mapping(config))
    errors: list[float] = []
    measuring = False

    def listen(_: Any, result: Any) -> None:
        if measuring and result.success:
            errors.append(result.duration - world.delay)

    daemon.hooks.result.append(listen)
    await daemon.start()
    try:
        await asyncio.sleep(2.0)
        measuring = True
        await asyncio.sleep(window)
    finally:
        await daemon.stop()
    return errors


class Blackbox:
    binary = BLACKBOX

    def __init__(self, world: World, workdir: Path) -> None:
        config = {
            "modules": {
                "http": {
                    "prober": "http",
                    "timeout": "2s",
                    "http": {"preferred_ip_protocol": "ip4"},
                },
                "https": {
                    "prober": "http",
                    "timeout": "2s",
                    "http": {
                        "preferred_ip_protocol": "ip4",
                        "tls_config": {"ca_file": str(world.ca)},
                    },
                },
                "grpc": {
                    "prober": "grpc",
                    "timeout": "2s",
                    "grpc": {"preferred_ip_protocol": "ip4", "tls": False, "service": ""},
                },
            }
        }
        path = workdir / "blackbox.yml"
        path.write_text(yaml.safe_dump(config))
        self.port = free_port()
        self.proc = subprocess.Popen(
            [
                self.binary,
                f"--config.file={path}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=error",
            ],
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        import urllib.request  # noqa: PLC0415

        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/", timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def close(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=10)


async def drive_blackbox(
    bb: Blackbox, world: World, proto: str, rate: int, seconds: float
) -> tuple[int, list[float]]:
    """Open loop: request /probe every 1/rate s whatever the answers do."""
    url = f"http://127.0.0.1:{bb.port}/probe"
    params = {"module": proto, "target": world.blackbox_target(proto)}
    errors: list[float] = []
    done = 0

    async def one(session: aiohttp.ClientSession) -> None:
        nonlocal done
        async with session.get(url, params=params) as resp:
            text = await resp.text()
        done += 1
        duration = success = None
        for line in text.splitlines():
            if line.startswith("probe_duration_seconds "):
                duration = float(line.split()[1])
            elif line.startswith("probe_success "):
                success = float(line.split()[1])
        if duration is not None and success == 1.0:
            errors.append(duration - world.delay)

    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        loop = asyncio.get_running_loop()
        start = loop.time()
        tasks = set()
        for i in range(int(rate * seconds)):
            delay = start + i / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(one(session))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.gather(*tasks, return_exceptions=True)
    return done, errors


def run_blackbox(world: World, proto: str, rate: int, window: float, warmup: float) -> Case:
    with tempfile.TemporaryDirectory() as tmp:
        bb = Blackbox(world, Path(tmp))
        try:
            asyncio.run(drive_blackbox(bb, world, proto, rate, warmup))
            cpu_a, srv_a = cpu_seconds(bb.proc.pid), cpu_seconds(world.server_pid(proto))
            done, errors = asyncio.run(drive_blackbox(bb, world, proto, rate, window))
            cpu_b, srv_b = cpu_seconds(bb.proc.pid), cpu_seconds(world.server_pid(proto))
        finally:
            bb.close()
    cpu = cpu_b - cpu_a
    case = Case(
        "blackbox",
        proto,
        rate,
        done,
        cpu,
        1000 * cpu / max(done, 1),
        target_cpu_share=(srv_b - srv_a) / window,
    )
    if errors:
        case.err_median_ms = 1000 * statistics.median(errors)
        case.err_p99_ms = 1000 * quantile(errors, 0.99)
    return case


def scale_run(world: World, n: int, window: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        mp = MeshprobeProcess(meshprobe_config(world, "http", n, "30s", free_port()), Path(tmp))
        try:
            time.sleep(min(30.0, window))  # first runs spread over one interval
            text_a, _ = scrape(mp.port)
            cpu_a = cpu_seconds(mp.proc.pid)
            time.sleep(window)
            cpu_b = cpu_seconds(mp.proc.pid)
            text_b, took = scrape(mp.port)
            rss = rss_bytes(mp.proc.pid)
        finally:
            mp.close()
    return {
        "targets": n,
        "cpu_share_of_one_core": round((cpu_b - cpu_a) / window, 3),
        "rss_mib": round(rss / 2**20, 1),
        "loop_lag_p99_s": lag_p99(text_a, text_b),
        "metrics_seconds": round(took, 3),
        "metrics_bytes": len(text_b.encode()),
    }


def churn_run(world: World, seconds: float, every: float = 10.0) -> dict[str, Any]:
    n = 1000
    with tempfile.TemporaryDirectory() as tmp:
        config = meshprobe_config(world, "http", n, "10s", free_port())
        mp = MeshprobeProcess(config, Path(tmp))
        try:
            time.sleep(every)
            rss_before = rss_bytes(mp.proc.pid)
            next_id = n
            rounds = int(seconds // every)
            for _ in range(rounds):
                targets = config["targets"][n // 10 :]
                for _ in range(n // 10):
                    targets.append({**config["targets"][0], "name": f"bench/t{next_id}"})
                    next_id += 1
                config["targets"] = targets
                mp.reload(config)
                time.sleep(every)
            text, _ = scrape(mp.port)
            rss_after = rss_bytes(mp.proc.pid)
        finally:
            mp.close()
    wanted = {t["name"] for t in config["targets"]}
    exported = {
        s.labels["target"]
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "meshprobe_probes_total"
    }
    return {
        "rounds": rounds,
        "rss_before_mib": round(rss_before / 2**20, 1),
        "rss_after_mib": round(rss_after / 2**20, 1),
        "rss_growth": round(rss_after / rss_before - 1, 3),
        "stale_series_targets": len(exported - wanted),
        "missing_targets": len(wanted - exported),
    }


def run_loop(main: Any) -> Any:
    """The loop `meshprobe run` would use: uvloop when installed."""
    try:
        import uvloop  # noqa: PLC0415
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def table(cases: list[Case]) -> str:
    rows = [
        "| proto | R/s | prober | probes | CPU s/1000 | ratio mp/bb | err median ms | err p99 ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    grouped: dict[tuple[str, int], dict[str, list[Case]]] = {}
    for c in cases:
        grouped.setdefault((c.proto, c.rate), {}).setdefault(c.prober, []).append(c)
    for (proto, rate), by in sorted(grouped.items()):
        med = {p: statistics.median(x.cpu_s_per_1000 for x in cs) for p, cs in by.items()}
        ratio = med.get("meshprobe", float("nan")) / med.get("blackbox", float("nan"))
        for prober, cs in sorted(by.items(), reverse=True):
            errs = [c for c in cs if c.err_median_ms is not None]
            em = f"{statistics.median(c.err_median_ms or 0 for c in errs):.2f}" if errs else "-"
            ep = f"{statistics.median(c.err_p99_ms or 0 for c in errs):.2f}" if errs else "-"
            rows.append(
                f"| {proto} | {rate} | {prober} | {int(sum(c.probes for c in cs))} | "
                f"{med[prober]:.3f} | {ratio:.2f} | {em} | {ep} |"
            )
    return "\n".join(rows)


def parse_case(text: str) -> tuple[str, int]:
    proto, _, rate = text.partition(":")
    if proto not in ("http", "https", "grpc") or not rate.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r}: want PROTO:RATE, e.g. https:200")
    return proto, int(rate)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few seconds per case")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--window", type=float, default=10.0)
    parser.add_argument("--delay", type=float, default=0.005)
    parser.add_argument("--skip", nargs="*", default=[], choices=["cost", "scale", "churn"])
    parser.add_argument("--out", default="bench/results.json")
    parser.add_argument(
        "--cases",
        nargs="+",
        type=parse_case,
        help="PROTO:RATE cost cases, PROTO http|https|grpc (default: the six http(s) cases)",
    )
    parser.add_argument("--blackbox", default=BLACKBOX, help="the blackbox_exporter binary")
    parser.add_argument(
        "--no-timing", action="store_true", help="cost only: skip meshprobe's timing-error run"
    )
    args = parser.parse_args()
    if shutil.which(args.blackbox) is None:
        print(
            f"{args.blackbox} missing: apt-get install -y prometheus-blackbox-exporter",
            file=sys.stderr,
        )
        return 2
    Blackbox.binary = args.blackbox
    window, warmup, rounds = (2.0, 1.0, 1) if args.quick else (args.window, 2.0, args.rounds)
    plan = [
        ("http", 50),
        ("http", 200),
        ("http", 1000),
        ("https", 50),
        ("https", 200),
        ("https", 1000),
    ]
    if args.quick:
        plan = [("http", 50), ("https", 50)]
    if args.cases:
        plan = args.cases
    results: dict[str, Any] = {
        "python": sys.version.split()[0],
        "openssl": ssl.OPENSSL_VERSION,
        "blackbox": args.blackbox,
        "delay_s": args.delay,
        "window_s": window,
        "rounds": rounds,
    }
    with tempfile.TemporaryDirectory() as tmp:
        world = World(Path(tmp), args.delay)
        try:
            cases: list[Case] = []
            if "cost" not in args.skip:
                for proto, rate in plan:
                    for _ in range(rounds):
                        mp = run_meshprobe_cost(world, proto, rate, window, warmup)
                        errors = (
                            []
                            if args.no_timing
                            else run_loop(meshprobe_timing(world, proto, rate, window))
                        )
                        if errors:
                            mp.err_median_ms = 1000 * statistics.median(errors)
                            mp.err_p99_ms = 1000 * quantile(errors, 0.99)
                        cases.append(mp)
                        cases.append(run_blackbox(world, proto, rate, window, warmup))
                        print(f"{proto} {rate}/s: {cases[-2]} | {cases[-1]}", file=sys.stderr)
                results["cases"] = [asdict(c) for c in cases]
                results["table"] = table(cases)
            if "scale" not in args.skip:
                sizes = [100] if args.quick else [1000, 10000]
                results["scale"] = [scale_run(world, n, 3.0 if args.quick else 60.0) for n in sizes]
            if "churn" not in args.skip:
                results["churn"] = churn_run(
                    world, 3.0 if args.quick else 300.0, every=1.0 if args.quick else 10.0
                )
        finally:
            results["target_server"] = world.close()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))
    if "table" in results:
        print(results["table"])
    for key in ("target_server", "scale", "churn"):
        if key in results:
            print(f"\n{key}: {json.dumps(results[key])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
