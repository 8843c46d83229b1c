"""A probe's duration is the wall clock a client lived through, whatever part of the exchange is
slow: a dropped SYN, a slow first redirect hop, a server that stalls the TLS handshake. The kernel's
retransmit count for the edge shows the dropped SYN even though the probe succeeds.

Real servers on loopback, both event loops (see conftest). The bounds are the ones the faults
impose (a SYN retransmit waits the kernel's 1 s initial RTO), never tighter: the machine is noisy.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from meshprobe.metrics.edges import edge_exposition
from meshprobe.model import Phase, ProbeResult, Target
from meshprobe.probes import ProbeEnv, run_probe
from meshprobe.probes.tcpinfo import SUPPORTED as TCP_INFO_SUPPORTED
from meshprobe.state.edges import ProbeState
from tests.integration import faults
from tests.integration.faults import SPIFFE_ID, FaultServer, Reply, Request, TestPki, make_target

pytestmark = pytest.mark.skipif(not TCP_INFO_SUPPORTED, reason="TCP_INFO is Linux-only")

SYN_TIMEOUT = 5.0  # room for one SYN retransmit (1 s RTO) on a slow machine


async def timed(target: Target, env: ProbeEnv) -> tuple[ProbeResult, float]:
    """The probe's result and the wall clock the test itself saw around it."""
    start = time.perf_counter()
    result = await run_probe(target, env)
    return result, time.perf_counter() - start


def _listen_overflows() -> int:
    """The kernel's count of SYNs dropped because an accept queue was full (this netns)."""
    lines = Path("/proc/net/netstat").read_text().splitlines()
    for names, values in zip(lines[::2], lines[1::2], strict=True):
        if names.startswith("TcpExt:"):
            return int(dict(zip(names.split(), values.split(), strict=True))["ListenOverflows"])
    raise AssertionError("no TcpExt line in /proc/net/netstat")


@contextlib.contextmanager
def full_accept_queue() -> Iterator[socket.socket]:
    """A listener with backlog 0 whose one queue slot is taken by a connection nobody accepts:
    the kernel drops the next SYN, and the client retransmits it after its 1 s initial RTO."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    filler: socket.socket | None = None
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        filler = socket.create_connection(listener.getsockname())
        yield listener
    finally:
        if filler is not None:
            filler.close()
        listener.close()


@contextlib.asynccontextmanager
async def serve_after_first_syn_dropped(
    listener: socket.socket, handler: faults.Handler, before: int, tls: ssl.SSLContext | None
) -> AsyncIterator[FaultServer]:
    """Start serving `listener` (listen() again with a long queue) once the kernel has dropped
    a SYN: the client's retransmitted SYN then gets through."""
    # The kernel offers no event for a dropped SYN; its counter is the closest thing to one.
    while _listen_overflows() == before:  # noqa: ASYNC110
        await asyncio.sleep(0.005)
    async with FaultServer(handler, sock=listener, tls=tls) as srv:
        yield srv


def retransmits_exported(target: Target, result: ProbeResult) -> float:
    state = ProbeState()
    state.set_targets([target])
    state.record(target, result)
    text = "".join(edge_exposition(state, "cluster1"))
    (value,) = [
        s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "meshprobe_tcp_retransmits_total"
    ]
    return value


@pytest.mark.parametrize("scheme", ["http", "https", "tls"])
async def test_a_dropped_syn_is_in_the_duration_and_in_the_retransmits(
    env: ProbeEnv, test_pki: TestPki, scheme: str
) -> None:
    handler = faults.hold if scheme == "tls" else faults.http()
    tls = test_pki.good() if scheme != "http" else None
    with full_accept_queue() as listener:
        host, port = listener.getsockname()
        options = {"identity": SPIFFE_ID} if tls is not None else {}
        target = make_target(f"{scheme}://{host}:{port}/", timeout=SYN_TIMEOUT, tls=options)
        before = _listen_overflows()
        probe = asyncio.create_task(timed(target, env))
        async with serve_after_first_syn_dropped(listener, handler, before, tls=tls):
            result, wall = await probe
    assert result.success, result.detail
    assert 0.9 <= result.duration <= wall
    assert result.phases[Phase.CONNECT] >= 0.9  # the wait was for the TCP handshake
    assert sum(result.phases.values()) <= result.duration
    assert result.tcp is not None and result.tcp.retransmits >= 1
    assert retransmits_exported(target, result) >= 1


async def test_a_slow_first_redirect_hop_counts(env: ProbeEnv) -> None:
    def respond(request: Request) -> Reply:
        if request.path == "/start":
            return Reply(status=302, headers=(("Location", "/final"),), delay=0.2)
        return Reply(body=b"ok")

    async with FaultServer(faults.http(respond)) as srv:
        target = make_target(srv.url(path="/start"), follow_redirects=True)
        result, wall = await timed(target, env)
    assert result.success, result.detail
    assert [r.path for r in srv.requests] == ["/start", "/final"]
    assert 0.2 <= result.duration <= wall
    # Phases add up over both hops, as blackbox_exporter's do: the slow hop is in processing.
    assert result.phases[Phase.PROCESSING] >= 0.2
    assert sum(result.phases.values()) <= result.duration
    assert result.tcp is not None  # both fresh connections were read by the kernel


@contextlib.asynccontextmanager
async def stalling_tls_server(context: ssl.SSLContext, seconds: float) -> AsyncIterator[str]:
    """Accept TCP at once, leave the ClientHello unread for `seconds`, then handshake and answer
    one HTTP request (or wait for the client's close). Yields host:port."""
    loop = asyncio.get_running_loop()
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.setblocking(False)

    async def serve_one() -> None:
        conn, _ = await loop.sock_accept(listener)
        await asyncio.sleep(seconds)  # the fault itself, not a synchronisation
        reader = asyncio.StreamReader()
        protocol = asyncio.StreamReaderProtocol(reader)
        transport, _ = await loop.connect_accepted_socket(lambda: protocol, conn, ssl=context)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            if head.startswith(b"GET "):
                transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n")
            await reader.read()  # until the client closes
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            transport.abort()

    server = asyncio.create_task(serve_one())
    try:
        host, port = listener.getsockname()
        yield f"{host}:{port}"
    finally:
        server.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await server
        listener.close()


@pytest.mark.parametrize("scheme", ["https", "tls"])
async def test_a_stalled_handshake_counts(env: ProbeEnv, test_pki: TestPki, scheme: str) -> None:
    async with stalling_tls_server(test_pki.good(), 0.3) as address:
        target = make_target(f"{scheme}://{address}/", tls={"identity": SPIFFE_ID})
        result, wall = await timed(target, env)
    assert result.success, result.detail
    assert 0.3 <= result.duration <= wall
    assert result.phases[Phase.TLS] >= 0.3
    assert sum(result.phases.values()) <= result.duration


async def test_every_http_probe_resolves(env: ProbeEnv) -> None:
    """No DNS cache across probes: the resolve phase measures the cluster's DNS every time, as
    tcp and tls probes (and blackbox_exporter) do."""
    async with FaultServer(faults.http()) as srv:
        target = make_target(f"http://localhost:{srv.port}/")
        results = [await run_probe(target, env) for _ in range(3)]
    assert all(r.success for r in results), [r.detail for r in results]
    assert all(r.phases[Phase.RESOLVE] > 0 for r in results), [r.phases for r in results]


async def test_duration_is_the_wall_clock_not_the_sum_of_phases(env: ProbeEnv) -> None:
    """Phases explain the duration and fit inside it; the duration itself is the stopwatch of
    the whole probe, so it can never be less than what the server made us wait."""
    async with FaultServer(faults.http(Reply(delay=0.1, body=b"x" * 1000))) as srv:
        result, wall = await timed(make_target(srv.url()), env)
    assert result.success, result.detail
    assert 0.1 <= result.duration <= wall
    assert sum(result.phases.values()) <= result.duration
    assert result.phases[Phase.PROCESSING] >= 0.1
