"""The identity exchange under hostile sizes, with real daemons on loopback: a 5,000-root bundle
between two real peers (a bounded, truncated document both sides accept and still match on,
built once per bundle change and served as bytes), and a nested document from a peer (a bad
document: one warning, peer_up 0, no traceback)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from structlog.testing import capture_logs

from meshprobe.config.settings import load_settings
from meshprobe.daemon.lifecycle import Daemon
from meshprobe.demo import pki
from meshprobe.state.instance import PeerStatus
from meshprobe.trust.identity import IDENTITY_MAX_BYTES
from meshprobe.web.server import start_site
from tests.certkit import many_roots, pem
from tests.integration.daemonkit import samples, scrape_daemon, signals, write_config

ROOTS = 5000


def fp(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


@pytest.fixture(scope="module")
def bulk() -> list[x509.Certificate]:
    return many_roots(ROOTS)


def config_for(cluster: str, host: str, bundle: Path, **extra: Any) -> dict[str, Any]:
    return {
        "cluster": cluster,
        "listen": f"{host}:0",
        "log_format": "json",
        "defaults": {"interval": "500ms", "timeout": "500ms"},
        "trust": {"bundle_file": str(bundle)},
        **extra,
    }


@contextlib.asynccontextmanager
async def meshprobe(config: dict[str, Any], path: Path) -> AsyncIterator[Daemon]:
    write_config(path, config)
    daemon = Daemon(load_settings(path, environ={}), config_path=path, environ={})
    await daemon.start()
    try:
        yield daemon
    finally:
        await daemon.stop()


async def peer_view(
    daemon: Daemon, peer: str, checks: int = 2
) -> tuple[float, float | None, PeerStatus]:
    """(peer_up, peer_trust_match, status) as scraped after `checks` more identity checks."""
    assert daemon.peers is not None
    async with asyncio.timeout(20):
        for _ in range(checks):
            signals(daemon).peer_checked.clear()
            await signals(daemon).peer_checked.wait()
    text = await scrape_daemon(daemon)
    up = {lbl["peer_cluster"]: v for lbl, v in samples(text, "meshprobe_peer_up")}
    match = {lbl["peer_cluster"]: v for lbl, v in samples(text, "meshprobe_peer_trust_match")}
    return up[peer], match.get(peer), daemon.status.peers[peer]


async def get_identity(session: aiohttp.ClientSession, daemon: Daemon) -> bytes:
    host = daemon.settings.listen_host_port()[0]
    async with session.get(f"http://{host}:{daemon.port}/v1/identity") as resp:
        assert resp.status == 200
        assert resp.content_type == "application/json"
        return await resp.read()


def listed(body: bytes) -> list[str]:
    return [r["fingerprint_sha256"] for r in json.loads(body)["roots"]]


async def test_a_5000_root_bundle_between_two_real_peers(
    tmp_path: Path, bulk: list[x509.Certificate]
) -> None:
    """Both clusters trust the same 5,000 roots (listed in different orders in their files)."""
    (tmp_path / "c1.pem").write_bytes(pem(bulk[::-1]))
    (tmp_path / "c2.pem").write_bytes(pem(bulk))
    c2_config = config_for("cluster2", "127.0.2.1", tmp_path / "c2.pem")
    async with meshprobe(c2_config, tmp_path / "c2.yaml") as c2:
        to_c2 = [{"cluster": "cluster2", "url": f"http://127.0.2.1:{c2.port}"}]
        c1_config = config_for("cluster1", "127.0.1.1", tmp_path / "c1.pem", peers=to_c2)
        async with meshprobe(c1_config, tmp_path / "c1.yaml") as c1:
            # cluster2 learns of cluster1 the way an operator tells it: the config, then SIGHUP.
            to_c1 = [{"cluster": "cluster1", "url": f"http://127.0.1.1:{c1.port}"}]
            write_config(tmp_path / "c2.yaml", {**c2_config, "peers": to_c1})
            assert c2.reload()
            c1_sees = await peer_view(c1, "cluster2")
            c2_sees = await peer_view(c2, "cluster1")
            async with aiohttp.ClientSession() as session:
                c1_body = await get_identity(session, c1)
                c2_body = await get_identity(session, c2)
    for up, match, status in (c1_sees, c2_sees):
        assert (up, match) == (1.0, 1.0)
        assert status.partial
        assert f"of its {ROOTS} roots" in status.detail
    for body in (c1_body, c2_body):
        assert len(body) <= IDENTITY_MAX_BYTES
        doc = json.loads(body)
        assert doc["truncated"] is True and doc["root_count"] == ROOTS
    # Same bundle, same subset, whatever the file order: the newest roots (all of one age here),
    # then by fingerprint, as many as fit -- a few hundred.
    expected = sorted(fp(c) for c in bulk)
    assert listed(c1_body) == listed(c2_body) == expected[: len(listed(c2_body))]
    assert len(listed(c2_body)) >= 300


@pytest.mark.parametrize(("ours", "expected_match"), [("listed", 1.0), ("unlisted", None)])
async def test_one_shared_root_against_a_truncated_peer(
    tmp_path: Path, bulk: list[x509.Certificate], ours: str, expected_match: float | None
) -> None:
    """Our one root is in the peer's 5,000: a match when the peer lists it; when it does not, the
    match is unknown (no series, so no false CA-mismatch alert) and said once in a warning."""
    by_fp = sorted(bulk, key=fp)
    our_root = by_fp[0] if ours == "listed" else by_fp[-1]
    (tmp_path / "c1.pem").write_bytes(pem([our_root]))
    (tmp_path / "c2.pem").write_bytes(pem(bulk))
    with capture_logs() as logs:
        c2_config = config_for("cluster2", "127.0.2.1", tmp_path / "c2.pem")
        async with meshprobe(c2_config, tmp_path / "c2.yaml") as c2:
            to_c2 = [{"cluster": "cluster2", "url": f"http://127.0.2.1:{c2.port}"}]
            c1_config = config_for("cluster1", "127.0.1.1", tmp_path / "c1.pem", peers=to_c2)
            async with meshprobe(c1_config, tmp_path / "c1.yaml") as c1:
                up, match, status = await peer_view(c1, "cluster2", checks=3)
    assert (up, match) == (1.0, expected_match)
    unknown = [e for e in logs if e["event"].startswith("peer identity truncated")]
    if expected_match is None:
        assert len(unknown) == 1 and unknown[0]["log_level"] == "warning"
        assert unknown[0]["detail"] == status.detail
    else:
        assert unknown == []


async def test_identity_is_built_per_bundle_change_not_per_request(
    tmp_path: Path, bulk: list[x509.Certificate]
) -> None:
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(pem(bulk))
    loop = asyncio.get_running_loop()

    with capture_logs() as logs:

        def builds() -> list[dict[str, Any]]:
            return [e for e in logs if e["event"].startswith("identity document")]

        config = config_for("cluster2", "127.0.2.1", bundle)
        async with (
            meshprobe(config, tmp_path / "c2.yaml") as daemon,
            aiohttp.ClientSession() as session,
            aiohttp.ClientSession() as health,
        ):
            assert len(builds()) == 1
            assert builds()[0]["log_level"] == "warning"  # truncated: operators are told once
            assert builds()[0]["roots"] == ROOTS

            async def healthz() -> float:
                start = loop.time()
                async with health.get(f"http://127.0.2.1:{daemon.port}/healthz") as resp:
                    assert resp.status == 200
                return loop.time() - start

            *bodies, health_seconds = await asyncio.gather(
                *(get_identity(session, daemon) for _ in range(50)), healthz()
            )
            assert len(builds()) == 1  # 50 requests, no build
            assert len(set(bodies)) == 1
            assert health_seconds < 1.0  # generous: before, each request built for ~0.4 s

            two = sorted(bulk[:2], key=fp)
            bundle.write_bytes(pem(two))  # a rotation on disk: exactly one more build
            async with asyncio.timeout(10):
                while daemon.status.bundle is None or len(daemon.status.bundle.roots) != 2:
                    signals(daemon).bundle_checked.clear()
                    await signals(daemon).bundle_checked.wait()
            after = await asyncio.gather(*(get_identity(session, daemon) for _ in range(10)))
    assert len(builds()) == 2 and builds()[1]["log_level"] == "info"
    assert len(set(after)) == 1
    doc = json.loads(after[0])
    assert (doc["truncated"], doc["root_count"]) == (False, 2)
    assert sorted(listed(after[0])) == [fp(c) for c in two]


NESTED = {
    "arrays": b'{"cluster":"cluster2","roots":' + b"[" * 30_000 + b"]" * 30_000 + b"}",
    "objects": b'{"cluster":"cluster2","roots":[],"x":' + b'{"a":' * 10_000 + b"1" + b"}" * 10_001,
}


@pytest.mark.parametrize("shape", sorted(NESTED))
async def test_the_nested_document_is_one_warning_and_the_peer_down(
    tmp_path: Path, shape: str
) -> None:
    body = NESTED[shape]
    assert 60_000 <= len(body) <= IDENTITY_MAX_BYTES  # inside the bound: the parser must cope
    served = 0

    async def identity(_: web.Request) -> web.Response:
        nonlocal served
        served += 1
        return web.Response(body=body, content_type="application/json")

    app = web.Application()
    app.router.add_get("/v1/identity", identity)
    runner, port = await start_site(app, "127.0.2.1", 0)
    root = tmp_path / "ours.pem"
    pki.write_bundle(root, [pki.make_root("ours")])
    try:
        with capture_logs() as logs:
            to_c2 = [{"cluster": "cluster2", "url": f"http://127.0.2.1:{port}"}]
            config = config_for("cluster1", "127.0.1.1", root, peers=to_c2)
            async with meshprobe(config, tmp_path / "c1.yaml") as c1:
                up, match, status = await peer_view(c1, "cluster2", checks=4)
    finally:
        await runner.cleanup()
    assert served >= 4
    assert (up, match) == (0.0, None)
    assert status.detail == "identity is not JSON: nested too deeply"
    peer_lines = [e for e in logs if e.get("peer_cluster") == "cluster2"]
    assert [(e["event"], e["log_level"], e["detail"]) for e in peer_lines] == [
        ("peer unreachable or invalid", "warning", status.detail)
    ]
    assert [e for e in logs if "exc_info" in e or e["log_level"] == "error"] == []
