"""meshprobe as a mesh client through an east-west gateway: Debian's haproxy in `mode tcp`, routing
TLS by SNI without terminating it (as Istio's east-west gateway does with AUTO_PASSTHROUGH), in
front of two STRICT-mTLS workloads of two "clusters" (127.0.1.1 and 127.0.2.1), each with its own
intermediate under the shared root, as in an Istio multi-primary mesh with plugged-in CAs.

The real daemon reaches each workload by its Istio SNI name through the one gateway port,
presents the client certificate from `defaults.tls`, and reports each workload's SPIFFE identity
and the root its chain anchors at; a workload that refuses our root is told apart.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.hashes import SHA256

from meshprobe.demo import pki
from meshprobe.demo.stack import free_port
from tests.integration.daemonkit import probed_daemon, samples, scrape_daemon
from tests.integration.mtlsserver import MTLSServer

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
GATEWAY = "127.0.0.1"
DOMAIN = "cluster.local"

pytestmark = pytest.mark.skipif(
    not Path(HAPROXY).exists(), reason="needs Debian's haproxy (installed by scripts/test.sh)"
)


def sni(cluster: str, port: int = 8443) -> str:
    """Istio's SNI for a service port through the east-west gateway."""
    return f"outbound_.{port}_._.echo.{cluster}.svc.{DOMAIN}"


def workload_id(cluster: str) -> str:
    return f"spiffe://{DOMAIN}/ns/{cluster}/sa/echo"


HAPROXY_CONFIG = """\
global
    maxconn 256
defaults
    mode tcp
    timeout connect 2s
    timeout client 10s
    timeout server 10s
frontend eastwest
    bind {gateway}:{port}
    tcp-request inspect-delay 5s
    tcp-request content accept if {{ req_ssl_hello_type 1 }}
{routes}
backend nowhere
    tcp-request content reject
{backends}
"""


@contextlib.contextmanager
def haproxy(tmp_path: Path, backends: dict[str, tuple[str, int]]) -> Iterator[int]:
    """haproxy on a free port, routing each SNI name to its backend; stopped by its own PID."""
    port = free_port(GATEWAY)
    routes = "\n".join(
        f"    use_backend b{i} if {{ req.ssl_sni -i {name} }}" for i, name in enumerate(backends)
    )
    routes += "\n    default_backend nowhere"
    blocks = "\n".join(
        f"backend b{i}\n    server s{i} {host}:{p}" for i, (host, p) in enumerate(backends.values())
    )
    config = tmp_path / "haproxy.cfg"
    config.write_text(
        HAPROXY_CONFIG.format(gateway=GATEWAY, port=port, routes=routes, backends=blocks)
    )
    check = subprocess.run(
        [HAPROXY, "-c", "-f", str(config)], capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stdout + check.stderr
    proc = subprocess.Popen(
        [HAPROXY, "-db", "-f", str(config)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        _wait_listening(port, proc)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def _wait_listening(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 10
    while True:
        assert proc.poll() is None, "haproxy exited"
        with socket.socket() as s:
            if s.connect_ex((GATEWAY, port)) == 0:
                return
        assert time.monotonic() < deadline, "haproxy did not listen within 10 s"
        time.sleep(0.05)


async def test_each_workload_behind_one_gateway_port_by_its_sni_name(tmp_path: Path) -> None:
    root = pki.make_root("mesh root")
    foreign_root = pki.make_root("another mesh's root")
    inter = {c: pki.make_intermediate(root, f"{c} istiod CA") for c in ("cluster1", "cluster2")}
    workloads = {
        c: pki.make_leaf(inter[c], None, uris=[workload_id(c)]) for c in ("cluster1", "cluster2")
    }
    me = pki.make_leaf(
        inter["cluster1"], None, uris=[f"spiffe://{DOMAIN}/ns/meshprobe/sa/meshprobe"]
    )
    cert, key, bundle = tmp_path / "cert-chain.pem", tmp_path / "key.pem", tmp_path / "root.pem"
    cert.write_bytes(me.cert_pem() + inter["cluster1"].cert_pem())
    key.write_bytes(me.key_pem())
    pki.write_bundle(bundle, [root])
    # cluster3 is a workload that trusts another mesh's root only: it refuses our certificate.
    refusing = pki.make_leaf(inter["cluster1"], None, uris=[workload_id("cluster3")])
    servers = {
        "cluster1": MTLSServer(workloads["cluster1"], [inter["cluster1"]], root, host="127.0.1.1"),
        "cluster2": MTLSServer(workloads["cluster2"], [inter["cluster2"]], root, host="127.0.2.1"),
        "cluster3": MTLSServer(refusing, [inter["cluster1"]], foreign_root, host="127.0.3.1"),
    }
    with contextlib.ExitStack() as stack:
        for server in servers.values():
            stack.enter_context(server)
        routes = {sni(c): (s.host, s.port) for c, s in servers.items()}
        port = stack.enter_context(haproxy(tmp_path, routes))
        targets = []
        for c in servers:
            for scheme in ("tls", "https"):
                targets.append(
                    {
                        "name": f"echo/{c}-{scheme}",
                        "url": f"{scheme}://{GATEWAY}:{port}" + ("/" if scheme == "https" else ""),
                        "cluster": c,
                        "tls": {"server_name": sni(c), "identity": workload_id(c)},
                    }
                )
        config = {
            "cluster": "cluster1",
            "listen": "127.0.0.1:0",
            "defaults": {
                "interval": "2s",
                "timeout": "1500ms",
                "tls": {"cert_file": str(cert), "key_file": str(key)},
            },
            "trust": {"bundle_file": str(bundle)},
            "targets": targets,
        }
        async with probed_daemon(tmp_path / "meshprobe.yaml", config) as (daemon, rounds):
            text = await scrape_daemon(daemon)
            last = dict(rounds.last)
    root_fp = root.cert.fingerprint(SHA256()).hex()
    success = {s[0]["target"]: s[1] for s in samples(text, "meshprobe_probe_success")}
    info = {s[0]["target"]: s[0] for s in samples(text, "meshprobe_tls_peer_info")}
    for c in ("cluster1", "cluster2"):
        for scheme in ("tls", "https"):
            name = f"echo/{c}-{scheme}"
            assert success[name] == 1.0, last[name].detail
            assert info[name]["identity"] == workload_id(c)
            assert info[name]["root_fingerprint_sha256"] == root_fp
            assert info[name]["target_cluster"] == c
        assert servers[c].accepted.qsize() >= 2  # each saw our certificate, tls and https
    for scheme in ("tls", "https"):
        refused = last[f"echo/cluster3-{scheme}"]
        assert not refused.success
        assert refused.detail.startswith("the server refused our client certificate"), refused
        assert "unknown_ca" in refused.detail
        assert success[f"echo/cluster3-{scheme}"] == 0.0
    # The refusing workload's chain was still judged by us, and it passed: the refusal is its.
    assert info["echo/cluster3-tls"]["identity"] == workload_id("cluster3")
