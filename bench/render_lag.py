"""How much /metrics stalls the event loop, isolated from probing: 10,000 synthetic https edges
(every family filled, as after a few probes each) served by the real /metrics handler in this
process, scraped by `curl` at the lowest CPU priority, while a 1 ms timer measures how late the
loop wakes. Reported: the CPU time of rendering the edge text alone, at the first scrape (each
edge's label set escaped) and in the steady state (median of five renders, each after every edge
got a fresh result, as when the probe interval is shorter than the scrape interval), and the
timer's lateness p99/max with no scrape and during three back-to-back scrapes.

    python bench/render_lag.py                 # plain
    python bench/render_lag.py --gzip          # Accept-Encoding: gzip
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from dataclasses import replace

from prometheus_client import CollectorRegistry

from meshprobe.config.targets import make_target
from meshprobe.metrics.edges import edge_exposition
from meshprobe.model import CertRole, CertSummary, Phase, ProbeResult, TCPStats, TLSReport
from meshprobe.state.edges import ProbeState
from meshprobe.web.server import build_app, start_site


def synthetic_state(n: int) -> ProbeState:
    now = time.time()

    def cert(role: CertRole, fingerprint: str) -> CertSummary:
        return CertSummary(
            subject="CN=bench",
            issuer="CN=bench root",
            not_before=now - 1000,
            not_after=float(int(now) + 86400 * 30),
            fingerprint_sha256=fingerprint * 64,
            role=role,
        )

    root = cert(CertRole.ROOT, "b")
    tls = TLSReport(
        verified=True,
        reason=None,
        detail="",
        chain=(cert(CertRole.LEAF, "a"), root),
        root=root,
        identity="127.0.3.1",
        version="TLSv1.3",
        cipher="TLS_AES_256_GCM_SHA384",
    )
    phases = {
        Phase.RESOLVE: 0.000123,
        Phase.CONNECT: 0.000457,
        Phase.TLS: 0.003457,
        Phase.PROCESSING: 0.001235,
        Phase.TRANSFER: 0.000046,
    }
    targets = [
        make_target(
            name=f"bench/t{i}",
            url="https://127.0.3.1:44321/",
            cluster="bench",
            own_cluster="bench",
            interval=120,
            timeout=5,
            budget=None,
            local_budget=0.05,
            remote_budget=0.15,
        )
        for i in range(n)
    ]
    state = ProbeState()
    state.set_targets(targets)
    for target in targets:
        for duration in (0.012345, 0.003456, 0.2):
            state.record(
                target,
                ProbeResult(
                    success=True,
                    duration=duration,
                    phases=phases,
                    tls=tls,
                    tcp=TCPStats(rtt=2e-05, retransmits=0),
                ),
            )
    return state


def refresh(state: ProbeState) -> None:
    """One more result per edge, as a probe of the same server gives it: a new result object, the
    histogram and counters moved, and the verdict cache's report for the unchanged chain."""
    for stats in list(state.edges()):
        last = stats.last
        assert last is not None
        state.record(stats.target, replace(last, duration=last.duration * 1.01))


def render_cpu(state: ProbeState) -> tuple[float, int]:
    began = time.process_time()
    size = sum(len(chunk) for chunk in edge_exposition(state, "bench"))
    return time.process_time() - began, size


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def measure(n: int, gzip: bool) -> dict[str, object]:
    state = synthetic_state(n)
    first, size = render_cpu(state)
    steady = []
    for _ in range(5):
        refresh(state)
        steady.append(render_cpu(state)[0])
    app = build_app(
        cluster="bench",
        identity=lambda: {},
        registry=CollectorRegistry(),
        edges=lambda: edge_exposition(state, "bench"),
    )
    runner, port = await start_site(app, "127.0.0.1", 0)
    lateness: list[float] = []
    running = True

    async def monitor() -> None:
        loop = asyncio.get_running_loop()
        while running:
            start = loop.time()
            await asyncio.sleep(0.001)
            lateness.append(loop.time() - start - 0.001)

    task = asyncio.create_task(monitor())
    try:
        await asyncio.sleep(1.0)
        quiet = list(lateness)
        lateness.clear()
        url = f"http://127.0.0.1:{port}/metrics"
        args = [a for _ in range(3) for a in ("-o", "/dev/null", url)]
        encoding = "gzip" if gzip else "identity"
        curl = await asyncio.create_subprocess_exec(
            "nice", "-n", "19", "curl", "-s", "-H", f"Accept-Encoding: {encoding}",
            "-w", "%{time_total}\n", *args,
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, _ = await curl.communicate()
        busy = list(lateness)
    finally:
        running = False
        await task
        await runner.cleanup()
    return {
        "edges": n,
        "encoding": encoding,
        "edge_text_bytes": size,
        "render_cpu_seconds_first": round(first, 3),
        "render_cpu_seconds": round(statistics.median(steady), 3),
        "render_cpu_seconds_all": [round(x, 3) for x in steady],
        "scrape_seconds": [float(x) for x in out.decode().split()],
        "lag_ms_quiet_p99": round(quantile(quiet, 0.99) * 1000, 1),
        "lag_ms_scraping_p99": round(quantile(busy, 0.99) * 1000, 1),
        "lag_ms_scraping_max": round(max(busy, default=0.0) * 1000, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--edges", type=int, default=10_000)
    parser.add_argument("--gzip", action="store_true")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(measure(args.edges, args.gzip)), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
