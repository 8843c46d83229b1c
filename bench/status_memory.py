"""What the status page costs: the memory of its ring of recent results, and the CPU and size of
`/v1/status`, on synthetic https edges (bench/statusdata.py) with full rings.

The ring's memory is measured with tracemalloc around making and filling the rings alone (the
per-edge state /metrics needs anyway is not counted), at 10,000 edges by default. The document is
built by the real builder, as the handler does, and timed in process CPU: the first build (each
target's fields encoded once) and the median of five more, each after every edge got a new
result (what a page refreshing every few seconds costs).

    python bench/status_memory.py                          # 10,000 edges, 60 results
    python bench/status_memory.py --edges 10000 --results 300
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import gzip
import json
import statistics
import time
import tracemalloc

from bench.statusdata import fill, synthetic_view, targets
from meshprobe.model import ProbeResult
from meshprobe.state.recent import RecentResults
from meshprobe.web.status import edge_body, edge_id, status_body


def ring_memory(edges: int, results: int) -> int:
    made = targets(edges)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    recent = RecentResults(results)
    recent.set_targets(made)
    fill(recent, made, results)
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert len(recent) == edges
    return after - before


def document_cost(edges: int, results: int) -> dict[str, float]:
    view = synthetic_view(edges, results=results)
    cpu: list[float] = []
    body = b""
    targets = [stats.target for stats in view.state.edges()]
    for k in range(6):  # after the first, every edge has a new result before each build
        if k:
            for target in targets:
                view.recent.record(target, ProbeResult(True, 0.01), time.time())
        started = time.process_time()
        body = asyncio.run(status_body(view))
        cpu.append(time.process_time() - started)
    first = next(iter(view.state.edges())).target
    one = edge_body(view, edge_id(first.key)) or b""
    assert len(json.loads(body)["edges"]) == edges
    return {
        "status_bytes": len(body),
        "status_gzip_bytes": len(gzip.compress(body, 6)),  # aiohttp's level
        "status_cpu_seconds_first": cpu[0],  # each target's fields encoded once
        "status_cpu_seconds_steady": statistics.median(cpu[1:]),
        "edge_document_bytes": len(one),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edges", type=int, default=10_000)
    parser.add_argument("--results", type=int, default=60)
    args = parser.parse_args()
    memory = ring_memory(args.edges, args.results)
    report = {
        "edges": args.edges,
        "results": args.results,
        "ring_bytes": memory,
        "ring_bytes_per_edge": round(memory / args.edges, 1),
        **{f"at_{n}_edges": document_cost(n, args.results) for n in (1_000, args.edges)},
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
