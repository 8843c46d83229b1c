"""Driving a real Daemon against the fake API server: config, lifecycle, and event-driven waits."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import yaml

from meshprobe.config.settings import load_settings
from meshprobe.daemon.lifecycle import Daemon
from meshprobe.discovery.pacing import Backoff, WatchSettings
from meshprobe.model import Target
from tests.integration.daemonkit import signals

# Fast retries so the tests wait on events for milliseconds, not on production backoff.
FAST_WATCH = WatchSettings(
    resync_period=300.0, request_timeout=2.0, backoff=Backoff(initial=0.05, cap=0.3)
)


def daemon_config(kubeconfig: Path, **extra: Any) -> dict[str, Any]:
    """A daemon config for tests, `extra` merged in depth. Discovered targets are probed by
    cluster IP (loopback here), so no test depends on, or sends queries to, a DNS server."""
    config: dict[str, Any] = {
        "cluster": "cluster1",
        "listen": "127.0.0.1:0",
        "log_format": "json",
        "defaults": {"interval": "200ms", "timeout": "150ms"},
        "discovery": {
            "kubernetes": {
                "enabled": True,
                "kubeconfig": str(kubeconfig),
                "address": "cluster-ip",
            }
        },
    }
    return _merged(config, extra)


def _merged(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merged(out[key], value)
        else:
            out[key] = value
    return out


@contextlib.asynccontextmanager
async def kube_daemon(
    tmp_path: Path, config: dict[str, Any], *, watch: WatchSettings = FAST_WATCH
) -> AsyncIterator[Daemon]:
    path = tmp_path / "meshprobe.yaml"
    path.write_text(yaml.safe_dump(config))
    daemon = Daemon(load_settings(path, environ={}), config_path=path, environ={}, watch=watch)
    await daemon.start()
    try:
        yield daemon
    finally:
        await daemon.stop()


def targets_of(daemon: Daemon) -> dict[tuple[str, str], Target]:
    """The daemon's current edges by (name, target_cluster)."""
    return {(s.target.name, s.target.cluster): s.target for s in daemon.state.edges()}


async def eventually(check: Callable[[], bool], *events: asyncio.Event, limit: float = 5.0) -> None:
    """Wait until `check()` holds, re-checking whenever one of `events` fires (never polling)."""
    async with asyncio.timeout(limit):
        while True:
            for event in events:
                event.clear()
            if check():
                return
            waiters = [asyncio.ensure_future(e.wait()) for e in events]
            try:
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()


async def until_discovered(daemon: Daemon, check: Callable[[], bool], limit: float = 5.0) -> None:
    assert daemon.discovery is not None
    sig = signals(daemon)
    await eventually(check, sig.discovery_activity, sig.reconciled, limit=limit)
