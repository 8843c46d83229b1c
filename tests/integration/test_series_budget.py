"""What one edge costs the Prometheus that scrapes meshprobe, counted on a real daemon.

One healthy edge of each kind against real loopback servers, with the defaults and with each
control of the README's cardinality table: the default budget (28 series for http and tcp, 34 for
https and tls, everything the edge exports except the `served` counters), and the exact saving of
each control.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from meshprobe.demo import pki
from meshprobe.metrics import names as m
from meshprobe.model import DURATION_BUCKETS
from tests.integration import faults
from tests.integration.daemonkit import probed_daemon, scrape_daemon
from tests.integration.faults import SPIFFE_ID, FaultServer, TestPki

BUDGET = {"http": 28, "tcp": 28, "https": 34, "tls": 34}
PHASES = {
    "http": 4,
    "https": 5,
    "tcp": 2,
    "tls": 3,
}  # resolve, connect, [tls], [processing, transfer]
VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "narrow": {"histogram": {"buckets": ["100ms", "1s"]}},
    "no-histogram": {"histogram": {"enabled": False}},
    "no-phases": {"phases": False},
}


def series_per_edge(text: str) -> Counter[tuple[str, str]]:
    """Series per (variant, kind) of every edge family but the served counters."""
    counts: Counter[tuple[str, str]] = Counter()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if "target" not in sample.labels or sample.name.startswith(m.SERVED):
                continue
            variant, kind = sample.labels["target"].split("/")
            counts[(variant, kind)] += 1
    return counts


async def test_series_budget_per_edge_and_what_each_control_saves(
    tmp_path: Path, test_pki: TestPki
) -> None:
    bundle = tmp_path / "bundle.pem"
    pki.write_bundle(bundle, [test_pki.root])
    async with (
        FaultServer(faults.echo("cluster1")) as plain,
        FaultServer(faults.echo("cluster1"), tls=test_pki.good()) as secure,
    ):
        urls = {
            "http": plain.url(),
            "tcp": plain.url("tcp"),
            "https": secure.url("https"),
            "tls": secure.url("tls"),
        }
        targets = [
            {
                "name": f"{variant}/{kind}",
                "url": url,
                **({"tls": {"identity": SPIFFE_ID}} if kind in ("https", "tls") else {}),
                **extra,
            }
            for variant, extra in VARIANTS.items()
            for kind, url in urls.items()
        ]
        config = {
            "cluster": "cluster1",
            "listen": "127.0.0.1:0",
            "trust": {"bundle_file": str(bundle)},
            "defaults": {"interval": "1s", "timeout": "1s"},
            "targets": targets,
        }
        async with probed_daemon(tmp_path / "config.yaml", config) as (daemon, rounds):
            text = await scrape_daemon(daemon)
    assert all(r.success for r in rounds.last.values()), {
        n: r.detail for n, r in rounds.last.items() if not r.success
    }
    counts = series_per_edge(text)
    for kind, budget in BUDGET.items():
        default = counts[("default", kind)]
        assert 0 < default <= budget, (kind, default)
        # Each bound costs one series: 11 bounds down to 2 saves 9.
        assert counts[("narrow", kind)] == default - (len(DURATION_BUCKETS) - 2), kind
        # No histogram: the bounds and +Inf go, _count and _sum stay.
        assert counts[("no-histogram", kind)] == default - (len(DURATION_BUCKETS) + 1), kind
        assert counts[("no-phases", kind)] == default - PHASES[kind], kind
    # With no bounds the family is still a valid histogram: _count and _sum, nothing else.
    duration = {
        s.name
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.labels.get("target") == "no-histogram/http" and s.name.startswith(m.PROBE_DURATION)
    }
    assert duration == {f"{m.PROBE_DURATION}_count", f"{m.PROBE_DURATION}_sum"}
