"""Trust across clusters with real meshprobe peers on loopback: identity exchange, CA match,
bundle rotation on disk."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from meshprobe.config.settings import load_settings
from meshprobe.daemon.lifecycle import Daemon
from meshprobe.demo import pki
from meshprobe.demo.pki import Issued
from meshprobe.model import Reason
from meshprobe.probes import ProbeEnv, run_probe
from meshprobe.trust.anchors import TrustAnchors
from meshprobe.web.server import start_site
from tests.integration.daemonkit import samples, scrape, scrape_daemon, signals, write_config
from tests.integration.faults import FaultServer, TestPki, echo, make_target


def fingerprint(issued: Issued) -> str:
    from cryptography.hazmat.primitives import hashes  # noqa: PLC0415

    return issued.cert.fingerprint(hashes.SHA256()).hex()


@contextlib.asynccontextmanager
async def meshprobe(
    tmp_path: Path, cluster: str, host: str, roots: list[Issued], **extra: Any
) -> AsyncIterator[Daemon]:
    bundle = tmp_path / f"{cluster}-bundle.pem"
    pki.write_bundle(bundle, roots)
    config = {
        "cluster": cluster,
        "listen": f"{host}:0",
        "log_format": "json",
        "defaults": {"interval": "200ms", "timeout": "200ms"},
        "trust": {"bundle_file": str(bundle)},
        **extra,
    }
    path = write_config(tmp_path / f"{cluster}.yaml", config)
    daemon = Daemon(load_settings(path, environ={}), config_path=path, environ={})
    await daemon.start()
    try:
        yield daemon
    finally:
        await daemon.stop()


async def peer_metrics(daemon: Daemon, peer: str, checks: int = 2) -> tuple[float, float | None]:
    """(peer_up, peer_trust_match) after `checks` more identity checks of the peer."""
    assert daemon.peers is not None and daemon.port is not None
    async with asyncio.timeout(10):
        for _ in range(checks):
            signals(daemon).peer_checked.clear()
            await signals(daemon).peer_checked.wait()
    text = await scrape_daemon(daemon)
    up = {lbl["peer_cluster"]: v for lbl, v in samples(text, "meshprobe_peer_up")}
    match = {lbl["peer_cluster"]: v for lbl, v in samples(text, "meshprobe_peer_trust_match")}
    return up[peer], match.get(peer)


@pytest.mark.parametrize(
    ("ours", "theirs", "expected_match"),
    [
        ("shared", "shared", 1.0),
        ("shared", "other", 0.0),
        ("old+new", "new", 1.0),  # rotation: our bundle holds both roots
        ("old+new", "old", 1.0),
    ],
)
async def test_peer_trust_match(
    tmp_path: Path, ours: str, theirs: str, expected_match: float
) -> None:
    roots = {"shared": pki.make_root("shared"), "other": pki.make_root("other")}
    roots["old"], roots["new"] = roots["shared"], pki.make_root("new")
    our_roots = [roots[n] for n in ours.split("+")]
    async with meshprobe(tmp_path, "cluster2", "127.0.2.1", [roots[theirs]]) as c2:
        peers = [{"cluster": "cluster2", "url": f"http://127.0.2.1:{c2.port}"}]
        async with meshprobe(tmp_path, "cluster1", "127.0.1.1", our_roots, peers=peers) as c1:
            up, match = await peer_metrics(c1, "cluster2")
            text = await scrape_daemon(c1)
    assert up == 1.0
    assert match == expected_match
    # The peer's echo is an ordinary remote edge, answered by cluster2.
    served = {
        (lbl["target"], lbl["target_cluster"], lbl["served_by_cluster"])
        for lbl, _ in samples(text, "meshprobe_served_total")
    }
    assert ("meshprobe/echo", "cluster2", "cluster2") in served


async def test_https_peer_from_another_root_is_untrusted(tmp_path: Path) -> None:
    ours, theirs = pki.make_root("ours"), pki.make_root("theirs")
    inter = pki.make_intermediate(theirs, "cluster2 intermediate")
    leaf = pki.make_leaf(
        inter,
        None,
        uris=["spiffe://cluster.local/ns/meshprobe/sa/meshprobe"],
        ip_addresses=["127.0.2.1"],
    )
    async with meshprobe(tmp_path, "cluster2", "127.0.2.1", [theirs]) as c2:
        assert c2.port is not None
        # cluster2's identity served over TLS, the way a mesh would present it
        app = web.Application()

        async def identity(_: web.Request) -> web.Response:
            return web.Response(body=c2.identity_body(), content_type="application/json")

        app.router.add_get("/v1/identity", identity)
        runner, port = await start_site(
            app, "127.0.2.1", 0, ssl_context=pki.server_ssl_context(leaf, [inter])
        )
        try:
            peers = [{"cluster": "cluster2", "url": f"https://127.0.2.1:{port}"}]
            async with meshprobe(tmp_path, "cluster1", "127.0.1.1", [ours], peers=peers) as c1:
                up, match = await peer_metrics(c1, "cluster2")
                assert c1.peers is not None
                detail = c1.status.peers["cluster2"].detail
        finally:
            await runner.cleanup()
    assert (up, match) == (0.0, 0.0)
    assert "tls_untrusted" in detail


@pytest.mark.parametrize(
    ("behaviour", "expect_in_detail"),
    [
        ("wrong-cluster", "says it is 'cluster9'"),
        ("not-json", "not JSON"),
        ("huge", "larger than"),
        ("slow", "no identity within"),
        ("bad-roots", "fingerprint_sha256"),
    ],
)
async def test_broken_peers_are_down_never_a_crash(
    tmp_path: Path, behaviour: str, expect_in_detail: str
) -> None:
    release = asyncio.Event()

    async def identity(_: web.Request) -> web.StreamResponse:
        if behaviour == "wrong-cluster":
            return web.json_response({"cluster": "cluster9", "roots": []})
        if behaviour == "not-json":
            return web.Response(text="<html>")
        if behaviour == "huge":
            resp = web.StreamResponse()
            await resp.prepare(_)
            for _i in range(200):
                await resp.write(b" " * 1024)
            return resp
        if behaviour == "slow":
            await release.wait()
        return web.json_response({"cluster": "cluster2", "roots": [{"fingerprint_sha256": "x"}]})

    app = web.Application()
    app.router.add_get("/v1/identity", identity)
    runner, port = await start_site(app, "127.0.2.1", 0)
    try:
        peers = [{"cluster": "cluster2", "url": f"http://127.0.2.1:{port}"}]
        root = pki.make_root("ours")
        async with meshprobe(tmp_path, "cluster1", "127.0.1.1", [root], peers=peers) as c1:
            up, match = await peer_metrics(c1, "cluster2")
            assert c1.peers is not None
            detail = c1.status.peers["cluster2"].detail
            release.set()
    finally:
        release.set()
        await runner.cleanup()
    assert up == 0.0 and match is None
    assert expect_in_detail in detail


async def test_bundle_swapped_on_disk_is_used_without_restart(tmp_path: Path) -> None:
    """Kubernetes updates a mounted ConfigMap by re-pointing a `..data` symlink."""
    old, new = pki.make_root("old root"), pki.make_root("new root")
    mount = tmp_path / "mount"
    mount.mkdir()
    v1, v2, v3 = (mount / "..v1"), (mount / "..v2"), (mount / "..v3")
    for d in (v1, v2, v3):
        d.mkdir()
    pki.write_bundle(v1 / "ca-bundle.crt", [old])
    pki.write_bundle(v2 / "ca-bundle.crt", [new])
    (v3 / "ca-bundle.crt").write_text("-----BEGIN CERTIFICATE-----\ngarbage\n")
    (mount / "..data").symlink_to("..v1")
    (mount / "ca-bundle.crt").symlink_to("..data/ca-bundle.crt")

    def swap(to: Path) -> None:
        tmp_link = mount / "..data_tmp"
        tmp_link.symlink_to(to.name)
        os.replace(tmp_link, mount / "..data")  # atomic, like kubelet's AtomicWriter

    config = {
        "cluster": "cluster1",
        "listen": "127.0.0.1:0",
        "log_format": "json",
        "defaults": {"interval": "200ms", "timeout": "200ms"},
        "trust": {"bundle_file": str(mount / "ca-bundle.crt")},
    }
    path = write_config(tmp_path / "c.yaml", config)
    daemon = Daemon(load_settings(path, environ={}), config_path=path, environ={})
    await daemon.start()
    try:
        assert daemon.port is not None

        async def roots_and_ok() -> tuple[set[str], float]:
            text = await scrape(daemon.port or 0)
            fps = {
                lbl["fingerprint_sha256"] for lbl, _ in samples(text, "meshprobe_trust_root_info")
            }
            ok = samples(text, "meshprobe_trust_bundle_reload_success")[0][1]
            return fps, ok

        async def until(expected: tuple[set[str], float]) -> None:
            async with asyncio.timeout(5):  # the file is polled every 100 ms here
                while await roots_and_ok() != expected:
                    signals(daemon).bundle_checked.clear()
                    await signals(daemon).bundle_checked.wait()

        assert await roots_and_ok() == ({fingerprint(old)}, 1.0)
        swap(v2)
        await until(({fingerprint(new)}, 1.0))
        swap(v3)
        await until(({fingerprint(new)}, 0.0))  # corrupt: the previous roots stay
        assert daemon._env is not None
        assert daemon._env.anchors.fingerprints() == {fingerprint(new)}
    finally:
        await daemon.stop()


async def test_server_omitting_its_intermediate_is_untrusted_and_says_incomplete(
    env: ProbeEnv, test_pki: TestPki
) -> None:
    ctx = pki.server_ssl_context(test_pki.leaf, [])  # the intermediate is not sent
    async with FaultServer(echo("cluster1"), tls=ctx) as server:
        target = make_target(server.url("https", "/v1/echo"))
        result = await run_probe(target, env)
    assert result.reason is Reason.TLS_UNTRUSTED
    assert "chain incomplete" in result.detail
    assert result.tls is not None and len(result.tls.chain) == 1


async def test_leaf_not_yet_valid_is_expired(env: ProbeEnv, test_pki: TestPki) -> None:
    now = datetime.now(UTC)
    early = pki.make_leaf(
        test_pki.intermediate,
        "echo",
        ip_addresses=["127.0.0.1"],
        not_before=now + timedelta(days=1),
        not_after=now + timedelta(days=2),
    )
    ctx = pki.server_ssl_context(early, [test_pki.intermediate])
    async with FaultServer(echo("cluster1"), tls=ctx) as server:
        result = await run_probe(make_target(server.url("tls")), env)
    assert result.reason is Reason.TLS_EXPIRED
    assert "not valid before" in result.detail


async def test_rotation_bundle_verifies_chains_from_either_root_and_checks_trust_domain(
    env: ProbeEnv,
) -> None:
    old, new = pki.make_root("old root"), pki.make_root("new root")
    env.anchors = TrustAnchors.from_pem(old.cert_pem() + new.cert_pem(), source="old+new")
    spiffe = "spiffe://cluster.local/ns/mesh/sa/echo"
    verdicts = {}
    for label, root, uri in (
        ("old", old, spiffe),
        ("new", new, spiffe),
        ("foreign-domain", new, "spiffe://other.example/ns/mesh/sa/echo"),
    ):
        inter = pki.make_intermediate(root, f"{label} intermediate")
        leaf = pki.make_leaf(inter, None, uris=[uri], ip_addresses=["127.0.0.1"])
        ctx = pki.server_ssl_context(leaf, [inter])
        async with FaultServer(echo("cluster2"), tls=ctx) as server:
            result = await run_probe(make_target(server.url("https", "/v1/echo")), env)
        verdicts[label] = result.reason
        if result.tls is not None and result.tls.root is not None and result.success:
            assert result.tls.root.subject == f"CN={label} root"
    assert verdicts == {"old": None, "new": None, "foreign-domain": Reason.TLS_IDENTITY}
