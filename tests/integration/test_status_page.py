"""`/`, its files, `/v1/status` and one edge's JSON from a real daemon over real sockets: what
they serve, that they sit behind the listener's TLS and basic auth like `/metrics`, and that a
reload resizes the window."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import jsonschema
import pytest

from meshprobe.web.status import edge_id
from tests.integration.daemonkit import probed_daemon, responder, write_config
from tests.integration.weblistenerkit import (
    PASSWORD,
    USER,
    bcrypt_hash,
    get,
    make_listener_pki,
    running_daemon,
)

ROOT = Path(__file__).parents[2]
SCHEMA = json.loads((ROOT / "docs" / "status.schema.json").read_text())
PATHS = ("/", "/page/status.js", "/page/status.css", "/v1/status")


async def fetch(url: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as resp:
        return resp.status, dict(resp.headers), await resp.read()


async def test_the_page_and_its_json_from_a_running_daemon(tmp_path: Path) -> None:
    async with responder("cluster2", "127.0.0.2") as port:
        config: dict[str, Any] = {
            "cluster": "cluster1",
            "listen": "127.0.0.1:0",
            "defaults": {"interval": "200ms", "timeout": "200ms"},
            "status": {"recent_results": 5},
            "targets": [
                {
                    "name": "app/echo",
                    "cluster": "cluster2",
                    "url": f"http://127.0.0.2:{port}/v1/echo",
                }
            ],
        }
        async with probed_daemon(tmp_path / "meshprobe.yaml", config) as (daemon, rounds):
            base = f"http://127.0.0.1:{daemon.port}"
            status, headers, body = await fetch(base + "/")
            assert status == 200 and headers["Content-Type"] == "text/html; charset=utf-8"
            assert "default-src 'none'" in headers["Content-Security-Policy"]
            assert b'<script src="page/status.js" defer>' in body
            for path, kind in (
                ("/page/status.js", "text/javascript"),
                ("/page/status.css", "text/css"),
            ):
                status, headers, body = await fetch(base + path)
                assert status == 200 and headers["Content-Type"].startswith(kind) and body
            assert (await fetch(base + "/page/nothing.js"))[0] == 404

            await rounds.wait(["app/echo"], at_least=6)  # more results than the window holds
            status, headers, body = await fetch(base + "/v1/status", **{"Accept-Encoding": "gzip"})
            assert status == 200 and headers["Content-Encoding"] == "gzip"
            assert headers["Cache-Control"] == "no-store"
            doc = json.loads(body)
            jsonschema.validate(doc, SCHEMA)
            (edge,) = doc["edges"]
            assert (edge["target"], edge["cluster"], edge["state"]) == (
                "app/echo",
                "cluster2",
                "ok",
            )
            assert edge["window"]["results"] == 5 and edge["last"]["served_by"] == "cluster2"
            assert [c["cluster"] for c in doc["matrix"]["columns"]] == ["cluster2"]  # targeted only

            status, _, body = await fetch(base + f"/v1/status/edges/{edge['id']}")
            assert status == 200
            detail = json.loads(body)
            jsonschema.validate(detail, {**SCHEMA, "$ref": "#/$defs/edge_document"})
            assert len(detail["recent"]) == 5
            assert set(detail["phases"]) == {"resolve", "connect", "processing", "transfer"}
            status, _, body = await fetch(base + "/v1/status/edges/0123456789abcdef")
            assert status == 404 and json.loads(body) == {"error": "no such edge"}

            # A reload resizes every ring, keeping the newest results.
            config["status"] = {"recent_results": 3}
            write_config(tmp_path / "meshprobe.yaml", config)
            assert daemon.reload()
            key = ("app/echo", "cluster2", "http")
            doc = json.loads((await fetch(base + f"/v1/status/edges/{edge_id(key)}"))[2])
            assert doc["window_results"] == 3 and len(doc["recent"]) == 3


async def test_page_and_json_are_behind_tls_and_basic_auth_like_metrics(tmp_path: Path) -> None:
    tls = make_listener_pki(tmp_path / "tls")
    web = {
        "tls_server_config": tls.tls_section(),
        "basic_auth_users": {USER: bcrypt_hash(PASSWORD)},
    }
    async with running_daemon(web) as daemon:
        ctx = tls.client_context()
        base = f"https://127.0.0.1:{daemon.port}"
        for path in (*PATHS, "/v1/status/edges/0123456789abcdef", "/metrics"):
            status, headers, _ = await get(base + path, ssl_context=ctx)
            assert status == 401, path
            assert headers["WWW-Authenticate"].startswith("Basic realm="), path
            status, _, _ = await get(base + path, ssl_context=ctx, auth=(USER, "wrong"))
            assert status == 401, path
        for path in PATHS:
            status, _, body = await get(base + path, ssl_context=ctx, auth=(USER, PASSWORD))
            assert status == 200 and body, path
        # Plain HTTP to the TLS listener reaches nothing, the page included.
        with pytest.raises(aiohttp.ClientError):
            await get(f"http://127.0.0.1:{daemon.port}/")


def test_check_names_a_bad_ring_size_and_exits_2(tmp_path: Path) -> None:
    path = write_config(tmp_path / "bad.yaml", {"cluster": "c1", "status": {"recent_results": 0}})
    out = subprocess.run(
        [sys.executable, "-m", "meshprobe", "check", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 2, out.stderr
    assert "status.recent_results: must be 1..1000, got 0" in out.stderr
