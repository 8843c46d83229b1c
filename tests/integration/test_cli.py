"""The command line as a user runs it: real processes, real signals."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import queue
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from meshprobe.demo import pki
from tests.integration.daemonkit import responder, write_config
from tests.integration.mtlsserver import MTLSServer

MESHPROBE = [sys.executable, "-m", "meshprobe"]
ENV = {k: v for k, v in os.environ.items() if not k.startswith("MESHPROBE_")}


def run(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*MESHPROBE, *args], capture_output=True, text=True, timeout=timeout, env=ENV, check=False
    )


def test_version() -> None:
    out = run("--version")
    assert out.returncode == 0
    assert out.stdout.startswith("meshprobe ")


def test_check_names_every_bad_field(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "defaults: {interval: 10 parsecs}\n"
        "colour: blue\n"
        "targets:\n"
        "  - {name: a, url: 'ftp://example.invalid/x'}\n"
    )
    out = run("check", "--config", str(path))
    assert out.returncode == 2
    lines = out.stderr
    assert "cluster:" in lines  # missing
    assert "defaults.interval:" in lines and "10 parsecs" in lines
    assert "colour:" in lines and "unknown key" in lines
    assert "targets.0.url:" in lines and "ftp" in lines


def test_check_accepts_a_valid_file_with_a_summary(tmp_path: Path) -> None:
    path = write_config(
        tmp_path / "ok.yaml",
        {
            "cluster": "c1",
            "targets": [
                {"name": "a/b", "url": "http://127.0.0.1:1/"},
                {"name": "a/b", "cluster": "c2", "url": "tcp://h:1"},
            ],
        },
    )
    out = run("check", "--config", str(path))
    assert out.returncode == 0, out.stderr
    assert "config OK" in out.stdout and "1 local, 1 remote" in out.stdout


def test_run_refuses_an_invalid_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("cluster: c1\ntargets: [{name: a, url: 'gopher://x:1'}]\n")
    out = run("run", "--config", str(path))
    assert out.returncode == 2
    assert "targets.0.url:" in out.stderr


def test_run_reloads_on_sighup_and_stops_on_sigterm_within_5s(tmp_path: Path) -> None:
    # A listener that completes the TCP handshake (backlog) but never answers keeps an http
    # probe in flight with a 30 s timeout: SIGTERM must cancel it, not wait for it.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    port = silent.getsockname()[1]
    path = write_config(
        tmp_path / "c.yaml",
        {
            "cluster": "c1",
            "listen": "127.0.0.1:0",
            "log_format": "json",
            "defaults": {"interval": "60s", "timeout": "30s"},
            "targets": [{"name": "a/hang", "url": f"http://127.0.0.1:{port}/"}],
        },
    )
    proc = subprocess.Popen(
        [*MESHPROBE, "run", "--config", str(path)], stderr=subprocess.PIPE, text=True, env=ENV
    )
    try:
        assert proc.stderr is not None
        events = (json.loads(line)["event"] for line in proc.stderr)
        assert "meshprobe started" in events
        proc.send_signal(signal.SIGHUP)
        assert "config reloaded" in events
        began = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
        assert time.monotonic() - began < 5
    finally:
        silent.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()


def test_probe_explains_one_https_probe(tmp_path: Path) -> None:
    root = pki.make_root("probe test root")
    inter = pki.make_intermediate(root, "probe test intermediate")
    leaf = pki.make_leaf(
        inter, None, uris=["spiffe://cluster.local/ns/a/sa/b"], ip_addresses=["127.0.0.1"]
    )
    bundle = tmp_path / "ca.pem"
    pki.write_bundle(bundle, [root])
    ctx = pki.server_ssl_context(leaf, [inter])
    with serve_in_thread(ctx) as port:
        good = run(
            "probe",
            f"https://127.0.0.1:{port}/v1/echo",
            "--ca-file",
            str(bundle),
            "--identity",
            "spiffe://cluster.local/ns/a/sa/b",
        )
        wrong = run(
            "probe",
            f"127.0.0.1:{port}",
            "--kind",
            "tls",
            "--ca-file",
            str(bundle),
            "--identity",
            "spiffe://cluster.local/ns/a/sa/other",
        )
    assert good.returncode == 0, good.stdout + good.stderr
    out = good.stdout
    assert "SUCCESS" in out
    for phase in ("resolve", "connect", "tls", "processing", "transfer"):
        assert phase in out
    assert "status: 200" in out
    assert "kernel tcp: rtt " in out and "retransmits 0" in out  # Linux, loopback: no loss
    assert "CN=probe test intermediate" in out and "CN=probe test root" in out
    assert "verified: yes" in out
    assert "served by cluster: probe-target" in out
    assert wrong.returncode == 1
    assert "FAILED (tls_identity)" in wrong.stdout


@contextlib.contextmanager
def serve_in_thread(ssl_context: ssl.SSLContext) -> Iterator[int]:
    """A responder in its own thread and loop, so a subprocess can probe it."""
    ready: queue.Queue[tuple[int, asyncio.AbstractEventLoop, asyncio.Event]] = queue.Queue()

    async def main() -> None:
        stop = asyncio.Event()
        async with responder("probe-target", "127.0.0.1", ssl_context) as port:
            ready.put((port, asyncio.get_running_loop(), stop))
            await stop.wait()

    thread = threading.Thread(target=asyncio.run, args=(main(),))
    thread.start()
    port, loop, stop = ready.get(timeout=10)
    try:
        yield port
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=10)


@pytest.mark.parametrize("mismatch", [False, True])
def test_demo_runs_two_clusters_and_shows_trust(mismatch: bool) -> None:
    args = ["demo", "--duration", "3", "--interval", "200ms", "--listen", "127.0.1.1:0"]
    out = run(*args, *(["--ca-mismatch"] if mismatch else []))
    assert out.returncode == 0, out.stderr
    rows = {}
    for line in out.stdout.splitlines():
        cols = line.split()
        if len(cols) >= 8 and cols[1] in ("cluster1", "cluster2"):
            rows[(cols[0], cols[1])] = cols
    assert ("demo/echo", "cluster1") in rows and ("demo/echo", "cluster2") in rows
    assert out.stdout.startswith("status page: http://127.0.1.1:")  # the page's address first
    assert "metrics: http://127.0.1.1:" in out.stdout
    peer_line = "peer cluster2: up, " + ("CA MISMATCH" if mismatch else "shares our root CA")
    assert peer_line in out.stdout
    for (_name, cluster), cols in rows.items():
        trust = cols[7]
        tls = cols[2] in ("https", "tls")
        if mismatch and cluster == "cluster2" and tls:
            assert trust == "tls_untrusted", cols
            assert cols[6] == "0%"
        else:
            assert cols[6] == "100%", cols
            assert trust == ("ok" if tls else "-"), cols


@pytest.mark.skipif(shutil.which("prometheus") is None, reason="needs Debian's prometheus")
def test_demo_with_prometheus_prints_the_stack_urls() -> None:
    out = run(
        "demo",
        "--duration",
        "2",
        "--interval",
        "250ms",
        "--listen",
        "127.0.1.1:0",
        "--with-prometheus",
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "prometheus: http://127.0.0.1:" in out.stdout
    assert "alertmanager: http://127.0.0.1:" in out.stdout
    assert "shortened 60x" in out.stdout


def test_probe_presents_a_client_certificate_and_says_which_side_refused(tmp_path: Path) -> None:
    root = pki.make_root("mtls test root")
    server = pki.make_leaf(
        root, None, uris=["spiffe://cluster.local/ns/a/sa/server"], ip_addresses=["127.0.0.1"]
    )
    ours = pki.make_leaf(root, None, uris=["spiffe://cluster.local/ns/a/sa/prober"])
    bundle, cert, key = tmp_path / "ca.pem", tmp_path / "cert.pem", tmp_path / "key.pem"
    pki.write_bundle(bundle, [root])
    cert.write_bytes(ours.cert_pem())
    key.write_bytes(ours.key_pem())
    with MTLSServer(server, [], root) as srv:
        common = ["--ca-file", str(bundle), "--identity", "spiffe://cluster.local/ns/a/sa/server"]
        accepted = run(
            "probe", srv.url("tls"), *common, "--cert-file", str(cert), "--key-file", str(key)
        )
        refused = run("probe", srv.url("https"), *common)
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
    assert "SUCCESS" in accepted.stdout
    assert "client certificate: spiffe://cluster.local/ns/a/sa/prober, expires " in accepted.stdout
    assert refused.returncode == 1
    assert "FAILED (tls_handshake)" in refused.stdout
    assert "the server refused us: it requires a client certificate and we presented none" in (
        refused.stdout
    )
