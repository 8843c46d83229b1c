"""grpc:// and grpcs:// probes against the reference gRPC health server (grpcio-health-checking)
on loopback, in its own threads, on both event loops (conftest): SERVING succeeds; NOT_SERVING and
an unknown service fail with `grpc_status` and the code in the detail; an HTTP/1.1-only server,
an untrusted chain and a hanging server fail with `protocol`, `tls_untrusted` and `timeout`; a
SPIFFE-only leaf verifies by identity.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from meshprobe.demo import pki
from meshprobe.discovery import services as ann
from meshprobe.model import Phase, ProbeKind, Reason
from meshprobe.probes import ProbeEnv, run_probe
from meshprobe.probes.grpcwire import decode_status, encode_request
from tests.integration import faults
from tests.integration.daemonkit import Rounds, probed_daemon, responder, samples, scrape_daemon
from tests.integration.faults import FaultServer, TestPki, make_target
from tests.integration.kubefake import FakeKube, service
from tests.integration.kubekit import daemon_config, kube_daemon, targets_of, until_discovered
from tests.integration.test_cli import run as run_cli

MESH_ID = "spiffe://cluster.local/ns/mesh/sa/grpc-echo"


@contextlib.contextmanager
def health_server(credentials: grpc.ServerCredentials | None = None) -> Iterator[int]:
    """The reference health service: the server as a whole and `mesh.Echo` SERVING,
    `mesh.Down` NOT_SERVING; anything else unknown."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    servicer = health.HealthServicer()
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    servicer.set("mesh.Echo", health_pb2.HealthCheckResponse.SERVING)
    servicer.set("mesh.Down", health_pb2.HealthCheckResponse.NOT_SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    if credentials is None:
        port = server.add_insecure_port("127.0.0.1:0")
    else:
        port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    try:
        yield port
    finally:
        server.stop(grace=None).wait(5)


def credentials(leaf: pki.Issued, chain: pki.Issued) -> grpc.ServerCredentials:
    return grpc.ssl_server_credentials([(leaf.key_pem(), leaf.cert_pem() + chain.cert_pem())])


def test_the_messages_round_trip() -> None:
    assert encode_request("") == b"\x00\x00\x00\x00\x00"
    request = health_pb2.HealthCheckRequest(service="mesh.Echo").SerializeToString()
    assert encode_request("mesh.Echo") == b"\x00" + len(request).to_bytes(4, "big") + request
    for status in (0, 1, 2, 3):
        wire = health_pb2.HealthCheckResponse(status=status).SerializeToString()  # type: ignore[arg-type]
        assert decode_status(wire) == status
    with pytest.raises(ValueError):
        decode_status(b"\x08")  # a key without its value


@pytest.mark.parametrize(
    ("service", "reason", "fragment", "codes"),
    [
        ("", None, "ok", (0, 1)),
        ("mesh.Echo", None, "ok", (0, 1)),
        ("mesh.Down", Reason.GRPC_STATUS, "health status NOT_SERVING", (0, 2)),
        ("mesh.Nobody", Reason.GRPC_STATUS, "gRPC status NOT_FOUND (5)", (5, None)),
    ],
)
async def test_plaintext_health_check(
    env: ProbeEnv,
    service: str,
    reason: Reason | None,
    fragment: str,
    codes: tuple[int, int | None],
) -> None:
    with health_server() as port:
        target = make_target(f"grpc://127.0.0.1:{port}", grpc_service=service)
        assert target.kind is ProbeKind.GRPC
        result = await run_probe(target, env)
    assert (result.success, result.reason) == (reason is None, reason), result.detail
    assert fragment in result.detail
    assert (result.grpc_status, result.grpc_serving) == codes
    assert set(result.phases) == {Phase.RESOLVE, Phase.CONNECT, Phase.PROCESSING}
    assert result.duration >= sum(result.phases.values()) * 0.99


async def test_grpcs_with_a_spiffe_only_leaf_verifies_by_identity(
    env: ProbeEnv, test_pki: TestPki
) -> None:
    leaf = pki.make_leaf(test_pki.intermediate, None, uris=[MESH_ID])  # no DNS or IP name
    with health_server(credentials(leaf, test_pki.intermediate)) as port:
        target = make_target(
            f"grpcs://127.0.0.1:{port}", grpc_service="mesh.Echo", tls={"identity": MESH_ID}
        )
        result = await run_probe(target, env)
        wrong = make_target(
            f"grpcs://127.0.0.1:{port}", tls={"identity": "spiffe://cluster.local/ns/x/sa/y"}
        )
        refused = await run_probe(wrong, env)
    assert result.success, result.detail
    assert result.tls is not None and result.tls.verified and result.tls.identity == MESH_ID
    assert result.tls.version == "TLSv1.3"
    assert set(result.phases) == {Phase.RESOLVE, Phase.CONNECT, Phase.TLS, Phase.PROCESSING}
    assert refused.reason is Reason.TLS_IDENTITY, refused.detail


async def test_grpcs_refuses_an_untrusted_chain_in_the_handshake(
    env: ProbeEnv, test_pki: TestPki
) -> None:
    with health_server(credentials(test_pki.other_leaf, test_pki.other_intermediate)) as port:
        result = await run_probe(make_target(f"grpcs://127.0.0.1:{port}"), env)
    assert result.reason is Reason.TLS_UNTRUSTED, result.detail
    assert result.detail.startswith("we refused the server:")
    assert Phase.PROCESSING not in result.phases  # no request went to an untrusted server


async def test_an_http1_only_server_is_a_protocol_failure(env: ProbeEnv, test_pki: TestPki) -> None:
    """A real HTTP/1.1 server (aiohttp's): it answers the HTTP/2 preface with a 400 in plaintext,
    and over TLS it does not offer h2 in ALPN."""
    async with responder("cluster1") as port:
        result = await run_probe(make_target(f"grpc://127.0.0.1:{port}"), env)
    assert result.reason is Reason.PROTOCOL, result.detail
    assert "HTTP/2" in result.detail
    async with responder("cluster1", ssl_context=test_pki.good()) as port:
        secure = await run_probe(make_target(f"grpcs://127.0.0.1:{port}"), env)
    assert secure.reason is Reason.PROTOCOL, secure.detail
    assert "did not agree to h2" in secure.detail


async def test_a_hanging_server_times_out(env: ProbeEnv) -> None:
    async with FaultServer(faults.hang) as srv:
        result = await run_probe(make_target(f"grpc://127.0.0.1:{srv.port}", timeout=0.3), env)
    assert result.reason is Reason.TIMEOUT, result.detail


def test_meshprobe_probe_explains_one_grpc_call() -> None:
    with health_server() as port:
        good = run_cli("probe", f"grpc://127.0.0.1:{port}")
        down = run_cli("probe", f"127.0.0.1:{port}", "--kind", "grpc")
    assert good.returncode == 0, good.stdout + good.stderr
    assert good.stdout.startswith(f"grpc probe of grpc://127.0.0.1:{port}: SUCCESS in ")
    for phase in ("resolve", "connect", "processing"):
        assert phase in good.stdout
    assert down.returncode == 0  # --kind grpc on a bare host:port


async def test_a_service_with_app_protocol_grpc_becomes_a_grpc_target(tmp_path: Path) -> None:
    """Through the real Kubernetes client against the fake API server: an annotated Service whose
    port says `appProtocol: grpc` is probed with the health check, its service named by
    `meshprobe.io/grpc-service`."""
    with health_server() as port:
        async with FakeKube() as fake:
            kubeconfig = fake.write_kubeconfig(tmp_path / "kubeconfig")
            obj = service(
                "mesh",
                "echo",
                annotations={ann.PROBE: "true", ann.GRPC_SERVICE: "mesh.Down"},
                ports=[("api", port)],
            )
            obj["spec"]["ports"][0]["appProtocol"] = "grpc"
            fake.put("services", obj)
            async with kube_daemon(tmp_path, daemon_config(kubeconfig)) as daemon:
                rounds = Rounds(daemon)
                await until_discovered(
                    daemon, lambda: ("mesh/echo", "cluster1") in targets_of(daemon)
                )
                target = targets_of(daemon)[("mesh/echo", "cluster1")]
                assert (target.url, target.grpc_service) == (
                    f"grpc://127.0.0.1:{port}",
                    "mesh.Down",
                )
                await rounds.wait(["mesh/echo"])
                text = await scrape_daemon(daemon)
    result = rounds.last["mesh/echo"]
    assert result.reason is Reason.GRPC_STATUS and "NOT_SERVING" in result.detail
    (failures,) = [
        v
        for lbl, v in samples(text, "meshprobe_probe_failures_total")
        if lbl["target"] == "mesh/echo"
    ]
    assert failures >= 1
    assert {lbl["probe"] for lbl, _ in samples(text, "meshprobe_probes_total")} == {"grpc"}
    assert [v for _, v in samples(text, "meshprobe_grpc_status_code")] == [0.0]
    assert [v for _, v in samples(text, "meshprobe_grpc_serving_status")] == [2.0]


async def test_the_echo_serves_the_grpc_health_service(env: ProbeEnv, tmp_path: Path) -> None:
    """`grpc_listen`: our probe and grpcio's own client both get SERVING from the echo, which
    names its cluster; an unknown service is NOT_FOUND, another method UNIMPLEMENTED."""
    config = {"cluster": "cluster1", "listen": "127.0.0.1:0", "grpc_listen": "127.0.0.1:0"}
    async with probed_daemon(tmp_path / "meshprobe.yaml", config) as (daemon, _):
        port = daemon.grpc_port
        assert port is not None
        result = await run_probe(make_target(f"grpc://127.0.0.1:{port}"), env)
        unknown = await run_probe(make_target(f"grpc://127.0.0.1:{port}", grpc_service="x"), env)

        def with_grpcio() -> tuple[int, grpc.StatusCode, grpc.StatusCode]:
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = health_pb2_grpc.HealthStub(channel)
                serving = stub.Check(health_pb2.HealthCheckRequest(service="meshprobe"), timeout=5)
                codes = []
                for call in (
                    lambda: stub.Check(health_pb2.HealthCheckRequest(service="nope"), timeout=5),
                    lambda: next(iter(stub.Watch(health_pb2.HealthCheckRequest(), timeout=5))),
                ):
                    with pytest.raises(grpc.RpcError) as err:
                        call()
                    codes.append(err.value.code())
                return serving.status, codes[0], codes[1]

        status, not_found, unimplemented = await asyncio.to_thread(with_grpcio)
    assert result.success, result.detail
    assert result.served_by == "cluster1"
    assert unknown.reason is Reason.GRPC_STATUS and "NOT_FOUND" in unknown.detail
    assert status == health_pb2.HealthCheckResponse.SERVING
    assert (not_found, unimplemented) == (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNIMPLEMENTED)


def test_a_taken_grpc_listen_port_is_named_at_start(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        config = tmp_path / "meshprobe.yaml"
        config.write_text(
            f"cluster: c1\nlisten: 127.0.0.1:0\ngrpc_listen: 127.0.0.1:{port}\nlog_format: json\n"
        )
        out = run_cli("run", "--config", str(config))
    assert out.returncode == 1, out.stderr
    assert (
        f"meshprobe: cannot start: grpc_listen: cannot listen on 127.0.0.1:{port}: " in out.stderr
    )
    assert "Traceback" not in out.stderr


async def test_a_peer_with_a_grpc_echo_is_probed_over_grpc_too(tmp_path: Path) -> None:
    """cluster1 names cluster2's gRPC echo (`peers[].grpc_url`): the edge meshprobe/echo exists
    for both kinds, and the gRPC one is answered by cluster2."""
    two = {"cluster": "cluster2", "listen": "127.0.0.1:0", "grpc_listen": "127.0.0.1:0"}
    async with probed_daemon(tmp_path / "two.yaml", two) as (cluster2, _):
        one = {
            "cluster": "cluster1",
            "listen": "127.0.0.1:0",
            "defaults": {"interval": "1s", "timeout": "500ms"},
            "peers": [
                {
                    "cluster": "cluster2",
                    "url": f"http://127.0.0.1:{cluster2.port}",
                    "grpc_url": f"grpc://127.0.0.1:{cluster2.grpc_port}",
                }
            ],
        }
        async with probed_daemon(tmp_path / "one.yaml", one) as (cluster1, rounds):
            await rounds.wait(["meshprobe/echo"], at_least=4)
            text = await scrape_daemon(cluster1)
    success = {
        lbl["probe"]: v
        for lbl, v in samples(text, "meshprobe_probe_success")
        if lbl["target"] == "meshprobe/echo"
    }
    assert success == {"http": 1.0, "grpc": 1.0}
    served = {
        (lbl["probe"], lbl["served_by_cluster"])
        for lbl, _ in samples(text, "meshprobe_served_total")
        if lbl["target"] == "meshprobe/echo"
    }
    assert ("grpc", "cluster2") in served


async def test_keepalive_reuses_one_connection_and_reconnects_after_it_died(
    env: ProbeEnv, test_pki: TestPki
) -> None:
    """`keepalive: true`: after the first probe the call goes on a new stream of the same
    connection (resolve, connect and tls read 0, the chain's verdict stays with the
    connection); once the server is gone the kept connection is dead: the probe fails, and the
    next one connects afresh (refused) instead of writing into the dead one."""
    leaf = pki.make_leaf(test_pki.intermediate, None, uris=[MESH_ID])
    with health_server(credentials(leaf, test_pki.intermediate)) as port:
        target = make_target(f"grpcs://127.0.0.1:{port}", keepalive=True, tls={"identity": MESH_ID})
        results = [await run_probe(target, env) for _ in range(3)]
    assert all(r.success for r in results), [r.detail for r in results]
    assert results[0].phases[Phase.CONNECT] > 0 and results[0].phases[Phase.TLS] > 0
    for reused in results[1:]:
        assert reused.phases[Phase.CONNECT] == reused.phases[Phase.TLS] == 0.0
        assert reused.tls is not None and reused.tls.identity == MESH_ID
    gone = await run_probe(target, env)
    assert gone.reason in (Reason.RESET, Reason.CONNECT_REFUSED), gone.detail
    again = await run_probe(target, env)
    assert again.reason is Reason.CONNECT_REFUSED, again.detail
    with health_server() as port:
        plain = make_target(f"grpc://127.0.0.1:{port}", keepalive=True)
        first, second = await run_probe(plain, env), await run_probe(plain, env)
    assert first.success and second.success and second.phases[Phase.CONNECT] == 0.0
