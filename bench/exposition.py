"""What /metrics costs at scale: a `meshprobe run` with N https targets (default 10,000), scraped.

Reported, after every target has been probed at least once:
- size of the plain exposition, bytes per edge, and series per edge;
- scrape wall time on loopback, plain and gzipped (`Accept-Encoding: gzip`, as Prometheus asks),
  median of `--scrapes` scrapes each, and the gzipped size;
- the daemon's CPU per scrape (process CPU over a scrape burst minus the same span idle);
- event-loop lag p99 from meshprobe's own histogram, over a window with no scrapes and over a
  window of back-to-back scrapes (so the render's share of the lag shows);
- process_resident_memory_bytes.

The targets point at bench/targetserver.py over TLS with a shared CA; the interval (default 60 s)
sets the probe rate (N / interval), which competes with rendering for the same two cores.

    python bench/exposition.py                   # 10,000 https targets
    python bench/exposition.py --targets 1000 --interval 10s --scrapes 3   # a smoke run
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.compare import (
    MeshprobeProcess,
    World,
    cpu_seconds,
    free_port,
    lag_p99,
    meshprobe_config,
    metric_sum,
)


def fetch(port: int, *, gzipped: bool) -> tuple[bytes, float]:
    headers = {"Accept-Encoding": "gzip" if gzipped else "identity"}
    request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics", headers=headers)
    began = time.perf_counter()
    with urllib.request.urlopen(request, timeout=60) as resp:
        body = resp.read()
    return body, time.perf_counter() - began


def edge_series(text: str) -> tuple[int, int]:
    """(edges, series of edge families) in an exposition."""
    edges: set[str] = set()
    series = 0
    for line in text.splitlines():
        if line.startswith("#") or 'target="' not in line:
            continue
        series += 1
        start = line.index('target="') + len('target="')
        edges.add(line[start : line.index('"', start)])
    return len(edges), series


def probes_done(text: str) -> int:
    """Edges probed at least once."""
    return sum(
        1
        for line in text.splitlines()
        if line.startswith("meshprobe_probes_total{") and float(line.rsplit(" ", 1)[1]) > 0
    )


def run(n: int, interval: str, scrapes: int, window: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        world = World(workdir, delay=0.0)
        try:
            config = meshprobe_config(world, "https", n, interval, free_port())
            config["defaults"]["timeout"] = "5s"
            mp = MeshprobeProcess(config, workdir)
            try:
                deadline = time.monotonic() + 600
                while True:  # every edge probed once: the exposition has its full size
                    body, _ = fetch(mp.port, gzipped=False)
                    if probes_done(body.decode()) >= n or time.monotonic() > deadline:
                        break
                    time.sleep(2.0)
                quiet_a = body.decode()
                cpu_quiet_a = cpu_seconds(mp.proc.pid)
                time.sleep(window)
                cpu_quiet = cpu_seconds(mp.proc.pid) - cpu_quiet_a
                quiet_b, _ = fetch(mp.port, gzipped=False)
                busy_a = quiet_b.decode()
                plain_times, gzip_times = [], []
                cpu_a = cpu_seconds(mp.proc.pid)
                began = time.monotonic()
                plain = zipped = b""
                for _ in range(scrapes):
                    plain, took = fetch(mp.port, gzipped=False)
                    plain_times.append(took)
                    zipped, took = fetch(mp.port, gzipped=True)
                    gzip_times.append(took)
                busy_seconds = time.monotonic() - began
                cpu_busy = cpu_seconds(mp.proc.pid) - cpu_a
                busy_b, _ = fetch(mp.port, gzipped=False)
                text = plain.decode()
                edges, series = edge_series(text)
                idle_rate = cpu_quiet / window
                result = {
                    "targets": n,
                    "interval": interval,
                    "edges": edges,
                    "series_per_edge": round(series / max(edges, 1), 1),
                    "metrics_bytes": len(plain),
                    "bytes_per_edge": round(len(plain) / max(edges, 1)),
                    "gzip_bytes": len(zipped),
                    "gzip_matches_plain_size": abs(len(gzip.decompress(zipped)) - len(plain))
                    < len(plain) // 50,
                    "scrape_seconds_plain_median": round(statistics.median(plain_times), 3),
                    "scrape_seconds_gzip_median": round(statistics.median(gzip_times), 3),
                    "cpu_seconds_per_scrape": round(
                        (cpu_busy - idle_rate * busy_seconds) / (2 * scrapes), 3
                    ),
                    "cpu_share_probing_only": round(idle_rate, 3),
                    "loop_lag_p99_no_scrapes_s": lag_p99(quiet_a, busy_a),
                    "loop_lag_p99_scraping_s": lag_p99(busy_a, busy_b.decode()),
                    "rss_mib": round(metric_sum(text, "process_resident_memory_bytes") / 2**20, 1),
                }
            finally:
                mp.close()
        finally:
            world.close()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets", type=int, default=10_000)
    parser.add_argument("--interval", default="60s")
    parser.add_argument("--scrapes", type=int, default=5)
    parser.add_argument("--window", type=float, default=20.0, help="seconds of the quiet window")
    parser.add_argument("--out", default=None, help="write the result as JSON here too")
    args = parser.parse_args()
    result = run(args.targets, args.interval, args.scrapes, args.window)
    print(json.dumps(result, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
