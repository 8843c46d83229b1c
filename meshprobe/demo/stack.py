"""Real Prometheus and Alertmanager on loopback, for the demo and the end-to-end tests.

Both come from Debian's packages (`prometheus`, `prometheus-alertmanager`). They run as child
processes in a scratch directory with every port on loopback; nothing here talks to anything else.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import socket
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yaml

PROMETHEUS = "prometheus"
ALERTMANAGER = "prometheus-alertmanager"

_DURATION = re.compile(r"(?<![\w.])((?:\d+(?:ms|[smhdwy]))+)(?![\w])")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}


def stack_available() -> bool:
    return shutil.which(PROMETHEUS) is not None and shutil.which(ALERTMANAGER) is not None


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _seconds(token: str) -> float:
    return sum(float(n) * _UNIT_SECONDS[u] for n, u in re.findall(r"(\d+)(ms|[smhdwy])", token))


def _format(seconds: float) -> str:
    ms = round(seconds * 1000)
    if ms % 1000 == 0:
        return f"{ms // 1000}s"
    return f"{ms}ms"


def scale_durations(text: str, factor: float, *, floor: float = 1.0) -> str:
    """Every Prometheus duration in `text` divided by `factor` (at least `floor` seconds).

    The end-to-end tests and the demo run the shipped rules with shortened windows and `for:`;
    this is the only change they make, and `durations_normalised` proves it.
    """

    def shorten(match: re.Match[str]) -> str:
        return _format(max(floor, _seconds(match.group(1)) / factor))

    return _DURATION.sub(shorten, text)


def durations_normalised(text: str) -> str:
    """`text` with every duration replaced by a placeholder: equal for two rule files means they
    differ in nothing but durations."""
    return _DURATION.sub("<duration>", text)


@dataclass
class Stack:
    prometheus_url: str
    alertmanager_url: str
    workdir: Path

    async def query(self, expr: str) -> list[dict[str, Any]]:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{self.prometheus_url}/api/v1/query", params={"query": expr}) as resp,
        ):
            body = await resp.json()
        if body.get("status") != "success":
            raise ValueError(f"query failed: {expr}: {body.get('error')}")
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    async def alerts(self) -> list[dict[str, Any]]:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{self.prometheus_url}/api/v1/alerts") as resp,
        ):
            body = await resp.json()
        alerts: list[dict[str, Any]] = body["data"]["alerts"]
        return alerts


async def _wait_http(url: str, proc: asyncio.subprocess.Process, what: str) -> None:
    async with asyncio.timeout(60), aiohttp.ClientSession() as session:
        while True:
            if proc.returncode is not None:
                raise RuntimeError(f"{what} exited with {proc.returncode} before becoming ready")
            try:
                async with session.get(url) as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)  # polling a child process's readiness endpoint


async def stop_process(proc: asyncio.subprocess.Process) -> None:
    """SIGTERM, then SIGKILL if the child has not gone within 10 s."""
    if proc.returncode is None:
        proc.terminate()
        try:
            async with asyncio.timeout(10):
                await proc.wait()
        except TimeoutError:
            proc.kill()
            await proc.wait()


def _write_configs(
    workdir: Path,
    *,
    host: str,
    am_port: int,
    scrape_targets: Sequence[str],
    rules_file: Path,
    webhook_url: str | None,
    interval: str,
) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    receiver: dict[str, Any] = {"name": "default"}
    if webhook_url is not None:
        receiver["webhook_configs"] = [{"url": webhook_url, "send_resolved": True}]
    am_config = {
        "route": {
            "receiver": "default",
            "group_by": ["alertname", "source_cluster", "target_cluster", "peer_cluster"],
            "group_wait": "1s",
            "group_interval": "1s",
            "repeat_interval": "1h",
        },
        "receivers": [receiver],
    }
    (workdir / "alertmanager.yml").write_text(yaml.safe_dump(am_config))
    prom_config = {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "rule_files": [str(rules_file)],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [f"{host}:{am_port}"]}]}]},
        "scrape_configs": [
            {"job_name": "meshprobe", "static_configs": [{"targets": list(scrape_targets)}]}
        ],
    }
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(prom_config))


@contextlib.asynccontextmanager
async def run_stack(
    workdir: Path,
    *,
    scrape_targets: Sequence[str],
    rules_file: Path,
    webhook_url: str | None = None,
    interval: str = "1s",
    host: str = "127.0.0.1",
) -> AsyncIterator[Stack]:
    """Prometheus scraping `scrape_targets` (host:port) as job `meshprobe` with `rules_file`,
    alerting to an Alertmanager that routes everything to `webhook_url` (resolved ones too)."""
    am_port, prom_port = free_port(host), free_port(host)
    _write_configs(
        workdir,
        host=host,
        am_port=am_port,
        scrape_targets=scrape_targets,
        rules_file=rules_file,
        webhook_url=webhook_url,
        interval=interval,
    )
    log = open(workdir / "stack.log", "ab")  # noqa: ASYNC230, SIM115 - children write to it
    am = await asyncio.create_subprocess_exec(
        ALERTMANAGER,
        f"--config.file={workdir / 'alertmanager.yml'}",
        f"--storage.path={workdir / 'am-data'}",
        f"--web.listen-address={host}:{am_port}",
        "--cluster.listen-address=",
        stdout=log,
        stderr=log,
    )
    prom = await asyncio.create_subprocess_exec(
        PROMETHEUS,
        f"--config.file={workdir / 'prometheus.yml'}",
        f"--storage.tsdb.path={workdir / 'prom-data'}",
        f"--web.listen-address={host}:{prom_port}",
        stdout=log,
        stderr=log,
    )
    stack = Stack(f"http://{host}:{prom_port}", f"http://{host}:{am_port}", workdir)
    try:
        await _wait_http(f"{stack.alertmanager_url}/-/ready", am, "alertmanager")
        await _wait_http(f"{stack.prometheus_url}/-/ready", prom, "prometheus")
        yield stack
    finally:
        await stop_process(prom)
        await stop_process(am)
        log.close()
