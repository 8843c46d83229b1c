"""`meshprobe demo`: the whole story on one machine, no Kubernetes.

Two simulated clusters on loopback — cluster1 at 127.0.1.1, cluster2 at 127.0.2.1 — each with a
meshprobe responder behind TLS. Their certificates come from one root made at start with an
intermediate per cluster (as Istio's plug-in `cacerts` are), or, with `--ca-mismatch`, cluster2's
from a different root: the drift the seed guide's first "common issue" describes. cluster2 answers
~40 ms later, standing in for a region link. A real meshprobe daemon for cluster1 probes both and
serves its status page (the first line printed) and /metrics; the terminal shows a live table.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import tempfile
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TextIO

from aiohttp import web

from meshprobe.config.durations import format_duration, parse_duration
from meshprobe.config.settings import Settings, load_settings_from_mapping
from meshprobe.daemon.hooks import Hooks
from meshprobe.daemon.lifecycle import Daemon
from meshprobe.daemon.logsetup import configure_logging
from meshprobe.demo import pki
from meshprobe.demo.stack import run_stack, scale_durations, stack_available
from meshprobe.model import ProbeResult, Target
from meshprobe.trust.anchors import TrustAnchors
from meshprobe.trust.identity import identity_document
from meshprobe.web.server import build_app, start_site

TRUST_DOMAIN = "cluster.local"
ECHO_IDENTITY = f"spiffe://{TRUST_DOMAIN}/ns/demo/sa/echo"
REMOTE_DELAY = 0.040
DEMO_SPEEDUP = 60  # alerts in a minute instead of an hour


@dataclass(frozen=True)
class SimCluster:
    name: str
    ip: str
    delay: float


CLUSTERS = (
    SimCluster("cluster1", "127.0.1.1", 0.0),
    SimCluster("cluster2", "127.0.2.1", REMOTE_DELAY),
)


@dataclass
class Responder:
    cluster: SimCluster
    http_port: int
    https_port: int
    runners: list[web.AppRunner]


def _issue(workdir: Path, *, ca_mismatch: bool) -> tuple[dict[str, Any], Path]:
    """One shared root (or a rogue second root for cluster2), an intermediate per cluster."""
    root = pki.make_root("meshprobe demo root CA")
    rogue = pki.make_root("meshprobe demo rogue root CA") if ca_mismatch else root
    contexts = {}
    for cluster in CLUSTERS:
        anchor = rogue if cluster.name == "cluster2" else root
        inter = pki.make_intermediate(anchor, f"{cluster.name} intermediate CA")
        leaf = pki.make_leaf(
            inter,
            None,
            uris=[ECHO_IDENTITY],
            dns_names=[f"echo.demo.{cluster.name}.example"],
            ip_addresses=[cluster.ip],
        )
        contexts[cluster.name] = (pki.server_ssl_context(leaf, [inter]), anchor)
    bundle = workdir / "ca-bundle.crt"
    pki.write_bundle(bundle, [root])
    return contexts, bundle


async def _start_responders(contexts: dict[str, Any], remote_delay: float) -> list[Responder]:
    responders = []
    for sim in CLUSTERS:
        cluster = replace(sim, delay=remote_delay) if sim.delay else sim
        ssl_ctx, anchor = contexts[cluster.name]
        roots = TrustAnchors.from_pem(anchor.cert_pem(), source=f"{cluster.name} roots")

        def app(
            c: str = cluster.name, r: TrustAnchors = roots, d: float = cluster.delay
        ) -> web.Application:
            return build_app(
                cluster=c,
                identity=lambda: identity_document(cluster=c, trust_domain=TRUST_DOMAIN, bundle=r),
                echo_delay=d,
            )

        http_runner, http_port = await start_site(app(), cluster.ip, 0)
        https_runner, https_port = await start_site(app(), cluster.ip, 0, ssl_context=ssl_ctx)
        responders.append(Responder(cluster, http_port, https_port, [http_runner, https_runner]))
    return responders


def _settings(
    responders: Sequence[Responder], bundle: Path, listen: str, interval: str
) -> Settings:
    targets: list[dict[str, Any]] = []
    for r in responders:
        ip = r.cluster.ip
        targets.append(
            {
                "name": "demo/echo",
                "cluster": r.cluster.name,
                "url": f"http://{ip}:{r.http_port}/v1/echo",
            }
        )
        targets.append(
            {
                "name": "demo/echo-mtls",
                "cluster": r.cluster.name,
                "url": f"https://{ip}:{r.https_port}/v1/echo",
                "tls": {"identity": ECHO_IDENTITY},
            }
        )
        targets.append(
            {
                "name": f"gateway/{r.cluster.name}",
                "cluster": r.cluster.name,
                "url": f"tls://{ip}:{r.https_port}",
            }
        )
    return load_settings_from_mapping(
        {
            "cluster": "cluster1",
            "listen": listen,
            "log_level": "error",
            "defaults": {
                "interval": interval,
                "timeout": format_duration(min(1.0, parse_duration(interval))),
            },
            "trust": {"bundle_file": str(bundle), "trust_domain": TRUST_DOMAIN},
            "targets": targets,
            "peers": [
                {"cluster": r.cluster.name, "url": f"http://{r.cluster.ip}:{r.http_port}"}
                for r in responders
                if r.cluster.name != "cluster1"
            ],
        }
    )


_ROW = "{:<20} {:<9} {:<5} {:>8} {:>8} {:>8} {:>8}"


class LiveTable:
    """Recent results per edge; quantiles over the last couple of minutes, like a person expects
    from a live view (the histogram in /metrics is the cumulative truth)."""

    def __init__(self, window: int = 120) -> None:
        self._recent: dict[tuple[str, str, str], deque[ProbeResult]] = {}
        self._targets: dict[tuple[str, str, str], Target] = {}
        self._window = window

    def observe(self, target: Target, result: ProbeResult) -> None:
        self._targets[target.key] = target
        self._recent.setdefault(target.key, deque(maxlen=self._window)).append(result)

    def render(self) -> str:
        cols = ("TARGET", "CLUSTER", "PROBE", "P50", "P99", "BUDGET", "SUCCESS")
        lines = [_ROW.format(*cols) + "  TRUST"]
        for key in sorted(self._recent, key=lambda k: (k[1], k[0], k[2])):
            t = self._targets[key]
            results = self._recent[key]
            durations = sorted(r.duration for r in results)
            ok = sum(r.success for r in results) / len(results)
            row = _ROW.format(
                t.name,
                t.cluster,
                t.scheme,
                _ms(_q(durations, 0.5)),
                _ms(_q(durations, 0.99)),
                _ms(t.budget),
                f"{ok:.0%}",
            )
            lines.append(f"{row}  {_trust(results[-1])}")
        return "\n".join(lines)


def _q(sorted_values: Sequence[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}ms"


def _trust(result: ProbeResult) -> str:
    if result.tls is None:
        return "-" if result.success else f"{result.reason}"
    if result.tls.verified:
        return "ok"
    return f"{result.tls.reason}"


def shipped_rules() -> Path:
    """The rules file of a source checkout (the demo runs from one: scripts/demo.sh)."""
    return Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "meshprobe-rules.yaml"


async def run_demo(
    *,
    ca_mismatch: bool = False,
    listen: str = "127.0.1.1:9942",
    duration: float | None = None,
    interval: str = "1s",
    remote_latency: float = REMOTE_DELAY,
    with_prometheus: bool = False,
    rules: Path | None = None,
    out: TextIO = sys.stdout,
) -> int:
    configure_logging("error", "auto")
    parse_duration(interval)  # a clear error before anything starts
    rules = rules or shipped_rules()
    if with_prometheus and not (stack_available() and rules.is_file()):
        print(
            "--with-prometheus needs Debian's prometheus and prometheus-alertmanager packages "
            f"and the rules file {rules} (a source checkout, or --rules)",
            file=sys.stderr,
        )
        return 2
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with contextlib.AsyncExitStack() as resources:
            tmp = Path(
                resources.enter_context(tempfile.TemporaryDirectory(prefix="meshprobe-demo-"))
            )
            contexts, bundle = _issue(tmp, ca_mismatch=ca_mismatch)
            responders = await _start_responders(contexts, remote_latency)
            for r in responders:
                for runner in r.runners:
                    resources.push_async_callback(runner.cleanup)
            table = LiveTable()
            daemon = Daemon(
                _settings(responders, bundle, listen, interval),
                hooks=Hooks(result=[table.observe]),
            )
            await daemon.start()
            resources.push_async_callback(daemon.stop)
            host = listen.rsplit(":", 1)[0]
            lines = [  # the page first: it is what a person opens
                f"status page: http://{host}:{daemon.port}/   (Ctrl-C to stop)",
                f"meshprobe demo: cluster1 probing cluster1 (127.0.1.1) and cluster2 "
                f"(127.0.2.1, +{remote_latency * 1000:.0f} ms)"
                f"{' with a CA MISMATCH' if ca_mismatch else ''}",
                f"metrics: http://{host}:{daemon.port}/metrics",
            ]
            if with_prometheus:
                scaled = tmp / "rules.yaml"
                scaled.write_text(scale_durations(rules.read_text(), DEMO_SPEEDUP))
                stack = await resources.enter_async_context(
                    run_stack(
                        tmp / "stack", scrape_targets=[f"{host}:{daemon.port}"], rules_file=scaled
                    )
                )
                lines += [
                    f"prometheus: {stack.prometheus_url}/alerts   alertmanager: "
                    f"{stack.alertmanager_url}",
                    f"(rules from {rules}, windows and for: shortened {DEMO_SPEEDUP}x)",
                ]
            banner = "\n".join(lines)
            print(banner, file=out, flush=True)
            await _refresh(
                table=table, daemon=daemon, stop=stop, duration=duration, out=out, banner=banner
            )
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    return 0


def _peer_lines(daemon: Daemon) -> str:
    lines = []
    for cluster, status in sorted(daemon.status.peers.items()):
        match = daemon.status.peer_trust(status)
        verdict = {True: "shares our root CA", False: "CA MISMATCH", None: "unknown"}[match]
        lines.append(f"peer {cluster}: {'up' if status.up else 'DOWN'}, {verdict}")
    return "\n".join(lines)


async def _refresh(
    *,
    table: LiveTable,
    daemon: Daemon,
    stop: asyncio.Event,
    duration: float | None,
    out: TextIO,
    banner: str,
) -> None:
    tty = out.isatty()
    loop = asyncio.get_running_loop()
    deadline = None if duration is None else loop.time() + duration
    while not stop.is_set():
        timeout = 1.0 if deadline is None else max(0.0, min(1.0, deadline - loop.time()))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout)
        if tty:
            screen = f"{banner}\n\n{table.render()}\n\n{_peer_lines(daemon)}"
            print("\x1b[H\x1b[2J" + screen, file=out, flush=True)
        if deadline is not None and loop.time() >= deadline:
            break
    if not tty:
        print(f"{table.render()}\n\n{_peer_lines(daemon)}", file=out, flush=True)
