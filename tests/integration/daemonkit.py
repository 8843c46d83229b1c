"""Helpers to drive a real Daemon and real responders on loopback in tests."""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from meshprobe.config.settings import load_settings
from meshprobe.daemon.lifecycle import Daemon
from meshprobe.model import ProbeResult, Target
from meshprobe.web.server import build_app, start_site


@contextlib.asynccontextmanager
async def responder(
    cluster: str, host: str = "127.0.0.1", ssl_context: Any = None
) -> AsyncIterator[int]:
    """A meshprobe responder (echo + identity) for `cluster`; yields its port."""
    app = build_app(
        cluster=cluster,
        identity=lambda: {"cluster": cluster, "trust_domain": None, "roots": [], "version": "t"},
    )
    runner, port = await start_site(app, host, 0, ssl_context=ssl_context)
    try:
        yield port
    finally:
        await runner.cleanup()


class Signals:
    """The daemon's hooks as events a test waits on (never a sleep), plus reconcile counts."""

    def __init__(self, daemon: Daemon) -> None:
        self.reconciled = asyncio.Event()
        self.bundle_checked = asyncio.Event()
        self.listener_files_checked = asyncio.Event()
        self.peer_checked = asyncio.Event()
        self.discovery_activity = asyncio.Event()
        self.added = 0  # scheduler loops started and stopped since attached: an unchanged
        self.removed = 0  # target never counts in either
        hooks = daemon.hooks
        hooks.reconciled.append(self._reconciled)
        hooks.bundle_checked.append(lambda _ok: self.bundle_checked.set())
        hooks.listener_files_checked.append(self.listener_files_checked.set)
        hooks.peer_checked.append(lambda _cluster: self.peer_checked.set())
        hooks.discovery_activity.append(self.discovery_activity.set)

    def _reconciled(self, added: int, removed: int) -> None:
        self.added += added
        self.removed += removed
        self.reconciled.set()


_SIGNALS: weakref.WeakKeyDictionary[Daemon, Signals] = weakref.WeakKeyDictionary()


def signals(daemon: Daemon) -> Signals:
    """The daemon's Signals, attached at the first call."""
    found = _SIGNALS.get(daemon)
    if found is None:
        found = _SIGNALS[daemon] = Signals(daemon)
    return found


class Rounds:
    """Counts results per target name so a test can wait for the next round, not for time."""

    def __init__(self, daemon: Daemon) -> None:
        self.counts: Counter[str] = Counter()
        self.last: dict[str, ProbeResult] = {}
        self._changed = asyncio.Event()
        daemon.hooks.result.append(self._observe)

    def _observe(self, target: Target, result: ProbeResult) -> None:
        self.counts[target.name] += 1
        self.last[target.name] = result
        self._changed.set()

    async def wait(self, names: list[str], at_least: int = 1) -> None:
        goal = {n: self.counts[n] + at_least for n in names}
        async with asyncio.timeout(10.0):
            while any(self.counts[n] < g for n, g in goal.items()):
                self._changed.clear()
                await self._changed.wait()


@contextlib.asynccontextmanager
async def probed_daemon(path: Path, config: dict[str, Any]) -> AsyncIterator[tuple[Daemon, Rounds]]:
    """A daemon on `config` (written to `path`), yielded once every target was probed once."""
    write_config(path, config)
    daemon = Daemon(load_settings(path, environ={}), config_path=path, environ={})
    rounds = Rounds(daemon)
    await daemon.start()
    try:
        await rounds.wait([t["name"] for t in config.get("targets", [])])
        yield daemon, rounds
    finally:
        await daemon.stop()


def write_config(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


async def scrape(port: int, host: str = "127.0.0.1") -> str:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://{host}:{port}/metrics") as resp,
    ):
        assert resp.status == 200
        return await resp.text()


def samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    """All samples of one sample name (e.g. `meshprobe_probes_total`) in an exposition."""
    out = []
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                out.append((dict(sample.labels), sample.value))
    return out


async def serve_app(app: web.Application, host: str = "127.0.0.1") -> tuple[web.AppRunner, int]:
    return await start_site(app, host, 0)


async def scrape_daemon(daemon: Daemon) -> str:
    host = daemon.settings.listen_host_port()[0]
    assert daemon.port is not None
    return await scrape(daemon.port, "127.0.0.1" if host in ("0.0.0.0", "") else host)
