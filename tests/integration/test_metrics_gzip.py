"""/metrics gzipped for scrapers that ask (Prometheus sends `Accept-Encoding: gzip`), plain for the
rest, with the same content either way."""

from __future__ import annotations

import gzip
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from meshprobe.web.server import accepts_gzip
from tests.integration import faults
from tests.integration.daemonkit import probed_daemon
from tests.integration.faults import FaultServer


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("gzip", True),
        ("identity, gzip;q=0.5", True),
        ("GZIP", True),
        ("*", True),
        ("gzip;q=0", False),
        ("gzip; q=0.0, deflate", False),
        ("deflate, br", False),
        ("", False),
        ("gzip;q=junk", False),
    ],
)
def test_accepts_gzip(header: str, expected: bool) -> None:
    assert accepts_gzip(header) is expected


def families(text: str) -> dict[str, int]:
    return {f.name: len(f.samples) for f in text_string_to_metric_families(text)}


async def test_metrics_gzipped_on_request_with_the_same_content(tmp_path: Path) -> None:
    async with FaultServer(faults.echo("cluster1")) as srv:
        targets = [{"name": f"app/t{i}", "url": srv.url()} for i in range(300)]
        config = {
            "cluster": "cluster1",
            "listen": "127.0.0.1:0",
            "defaults": {"interval": "3s", "timeout": "1s"},
            "targets": targets,
        }
        async with probed_daemon(tmp_path / "config.yaml", config) as (daemon, _):
            url = f"http://127.0.0.1:{daemon.port}/metrics"
            async with aiohttp.ClientSession(auto_decompress=False) as session:
                async with session.get(url, headers={"Accept-Encoding": "gzip"}) as resp:
                    assert resp.headers["Content-Encoding"] == "gzip"
                    assert "Accept-Encoding" in resp.headers["Vary"]
                    zipped = await resp.read()
                async with session.get(url, headers={"Accept-Encoding": "identity"}) as resp:
                    assert "Content-Encoding" not in resp.headers
                    plain = (await resp.read()).decode()
    unzipped = gzip.decompress(zipped).decode()
    assert families(unzipped) == families(plain)
    assert len(zipped) * 5 < len(plain)  # a 300-edge exposition shrinks several times over
