"""What a probed server chooses to send must never blind the exporter or grow its series: a
non-UTF-8 `X-Meshprobe-Cluster`, or a different value on every answer, through a real daemon that
is scraped over HTTP and checked with promtool."""

from __future__ import annotations

import asyncio
import itertools
import shutil
from asyncio.subprocess import PIPE
from pathlib import Path

from meshprobe.config.settings import load_settings
from meshprobe.daemon.lifecycle import Daemon
from tests.integration.daemonkit import Rounds, samples, scrape, write_config
from tests.integration.faults import FaultServer


def raw_http(header_values: itertools.cycle[bytes]) -> object:
    """An HTTP/1.1 server whose X-Meshprobe-Cluster is raw bytes we pick, one per answer."""

    async def handler(
        _server: FaultServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n"
            b"X-Meshprobe-Cluster: " + next(header_values) + b"\r\n\r\nok\n"
        )
        await writer.drain()

    return handler


async def promtool_check(text: str) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool comes with Debian's prometheus package (scripts/test.sh)"
    proc = await asyncio.create_subprocess_exec(
        promtool, "check", "metrics", stdin=PIPE, stdout=PIPE, stderr=PIPE
    )
    out, err = await proc.communicate(text.encode())
    assert proc.returncode == 0 and not out.strip() and not err.strip(), (out + err).decode()


async def test_server_chosen_cluster_names_neither_break_nor_grow_metrics(tmp_path: Path) -> None:
    evil = itertools.cycle([b"evil\xff", b"cluster2"])
    randoms = (f"random-{i}".encode() for i in itertools.count())
    async with (
        FaultServer(raw_http(evil)) as bad_bytes,  # type: ignore[arg-type]
        FaultServer(raw_http(itertools.cycle(randoms))) as random_names,  # type: ignore[arg-type]
    ):
        config = {
            "cluster": "cluster1",
            "listen": "127.0.0.1:0",
            "defaults": {"interval": "50ms", "timeout": "50ms"},
            "targets": [
                {"name": "hostile/bytes", "cluster": "cluster2", "url": bad_bytes.url()},
                {"name": "hostile/random", "cluster": "cluster2", "url": random_names.url()},
            ],
        }
        path = write_config(tmp_path / "meshprobe.yaml", config)
        daemon = Daemon(load_settings(path, environ={}), config_path=path, environ={})
        rounds = Rounds(daemon)
        await daemon.start()
        try:
            await rounds.wait(["hostile/bytes", "hostile/random"], at_least=30)
            assert daemon.port is not None
            first = await scrape(daemon.port)  # asserts 200
            await rounds.wait(["hostile/bytes", "hostile/random"], at_least=2)
            text = await scrape(daemon.port)
        finally:
            await daemon.stop()
    for exposition in (first, text):
        await promtool_check(exposition)
    served = {
        (labels["target"], labels["served_by_cluster"])
        for labels, _ in samples(text, "meshprobe_served_total")
    }
    # Known clusters keep their name; anything else a server says is `other`, one series.
    assert served == {
        ("hostile/bytes", "cluster2"),
        ("hostile/bytes", "other"),
        ("hostile/random", "other"),
    }
    success = {labels["target"]: v for labels, v in samples(text, "meshprobe_probe_success")}
    assert success == {"hostile/bytes": 1.0, "hostile/random": 1.0}
