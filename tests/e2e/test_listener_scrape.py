"""A real Prometheus scrapes real daemons over TLS with basic auth, and over mTLS.

Four scrape jobs, read back through Prometheus's HTTP API: the right password and the right
client certificate give `up == 1` and meshprobe's series; a wrong password and a missing client
certificate give `up == 0` with the reason in the target's `lastError`. Everything on loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from meshprobe.daemon.hooks import Hooks
from meshprobe.demo.stack import PROMETHEUS, Stack, free_port, stop_process
from tests.integration.weblistenerkit import (
    PASSWORD,
    SERVER_NAME,
    USER,
    ListenerPki,
    bcrypt_hash,
    make_listener_pki,
    running_daemon,
)

pytestmark = pytest.mark.skipif(
    not Path(f"/usr/bin/{PROMETHEUS}").exists(), reason="needs Debian's prometheus package"
)


def _job(name: str, port: int, tls: ListenerPki, **extra: Any) -> dict[str, Any]:
    tls_config: dict[str, Any] = {"ca_file": str(tls.ca_file), "server_name": SERVER_NAME}
    tls_config.update(extra.pop("tls_config", {}))
    return {
        "job_name": name,
        "scheme": "https",
        "tls_config": tls_config,
        "static_configs": [{"targets": [f"127.0.0.1:{port}"]}],
        **extra,
    }


def _write_config(workdir: Path, scrape_configs: list[dict[str, Any]]) -> Path:
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "prometheus.yml"
    global_config = {"scrape_interval": "1s", "scrape_timeout": "900ms"}
    config.write_text(yaml.safe_dump({"global": global_config, "scrape_configs": scrape_configs}))
    return config


@contextlib.asynccontextmanager
async def prometheus(workdir: Path, scrape_configs: list[dict[str, Any]]) -> AsyncIterator[Stack]:
    port = free_port()
    config = _write_config(workdir, scrape_configs)
    with (workdir / "prometheus.log").open("ab") as log:
        proc = await asyncio.create_subprocess_exec(
            PROMETHEUS,
            f"--config.file={config}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            stdout=log,
            stderr=log,
        )
    stack = Stack(f"http://127.0.0.1:{port}", "", workdir)
    try:
        await _until(lambda: _ready(stack, proc), "prometheus ready")
        yield stack
    finally:
        await stop_process(proc)


async def _ready(stack: Stack, proc: asyncio.subprocess.Process) -> bool:
    if proc.returncode is not None:
        raise RuntimeError(f"prometheus exited with {proc.returncode}")
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{stack.prometheus_url}/-/ready") as resp,
        ):
            return resp.status == 200
    except aiohttp.ClientError:
        return False


async def _until(check: Any, what: str, within: float = 60.0) -> None:
    """Poll `check` (a coroutine function) until it returns true; Prometheus has no events."""
    try:
        async with asyncio.timeout(within):
            while True:
                if await check():
                    return
                await asyncio.sleep(0.2)  # Prometheus's API has nothing to wait on
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


async def _targets(stack: Stack) -> dict[str, dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{stack.prometheus_url}/api/v1/targets") as resp,
    ):
        body = await resp.json()
    return {t["labels"]["job"]: t for t in body["data"]["activeTargets"]}


async def test_prometheus_scrapes_over_tls_with_basic_auth_and_mtls(tmp_path: Path) -> None:
    tls = make_listener_pki(tmp_path / "tls")
    password_file = tmp_path / "password"
    password_file.write_text(PASSWORD)
    basic = {
        "tls_server_config": tls.tls_section(),
        "basic_auth_users": {USER: bcrypt_hash(PASSWORD, 10)},
    }
    mtls = {
        "tls_server_config": tls.tls_section(
            client_auth_type="RequireAndVerifyClientCert", client_ca_file=str(tls.client_ca_file)
        )
    }
    client_cert = {"cert_file": str(tls.client_cert_file), "key_file": str(tls.client_key_file)}
    granted: list[bool] = []  # the verdict of each basic-auth check that reached bcrypt
    async with (
        running_daemon(basic, hooks=Hooks(bcrypt_checked=[granted.append])) as daemon,
        running_daemon(mtls, cluster="cluster2") as mtls_daemon,
    ):
        assert daemon.port is not None and mtls_daemon.port is not None
        jobs = [
            _job(
                "basic",
                daemon.port,
                tls,
                basic_auth={"username": USER, "password_file": str(password_file)},
            ),
            _job(
                "wrong-password",
                daemon.port,
                tls,
                basic_auth={"username": USER, "password": "nope"},
            ),
            _job("mtls", mtls_daemon.port, tls, tls_config=client_cert),
            _job("mtls-no-cert", mtls_daemon.port, tls),
        ]
        async with prometheus(tmp_path / "prom", jobs) as stack:

            async def all_scraped() -> bool:
                targets = await _targets(stack)
                return len(targets) == 4 and all(
                    t["health"] in ("up", "down") for t in targets.values()
                )

            await _until(all_scraped, "every job scraped once")
            up = {r["metric"]["job"]: r["value"][1] for r in await stack.query("up")}
            targets = await _targets(stack)
            assert up == {"basic": "1", "wrong-password": "0", "mtls": "1", "mtls-no-cert": "0"}, {
                job: t["lastError"] for job, t in targets.items()
            }
            assert "401" in targets["wrong-password"]["lastError"]
            # Refused below HTTP: the TLS handshake (or, in TLS 1.3, its first read) failed.
            no_cert = targets["mtls-no-cert"]["lastError"]
            assert no_cert and "HTTP status" not in no_cert
            build = await stack.query('meshprobe_build_info{job="basic"}')
            assert [r["metric"]["source_cluster"] for r in build] == ["cluster1"]
            build = await stack.query('meshprobe_build_info{job="mtls"}')
            assert [r["metric"]["source_cluster"] for r in build] == ["cluster2"]
            # Many scrapes, one bcrypt verification: the rest were cache hits.

            async def scraped_thrice() -> bool:
                result = await stack.query('count_over_time(up{job="basic"}[5m])')
                return bool(result) and float(result[0]["value"][1]) >= 3

            await _until(scraped_thrice, "three scrapes of the basic job")
            assert granted.count(True) == 1
