"""`tcp://` probes: how long name resolution and the TCP handshake take, and whether they work.

Resolution and connection are done by hand (not `open_connection`) so each is timed on its own,
and the helpers are shared with the `tls` probe, which needs the same two phases.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import socket
import time
from typing import Any

from meshprobe.model import Phase, ProbeResult, Reason, Target
from meshprobe.probes.env import Attempt, ProbeEnv, ProbeFailed

__all__ = ["Addr", "connect", "connect_reason", "probe_tcp", "resolve"]

# An address to try: (family, type, proto, sockaddr), in resolver order.
Addr = tuple[int, int, int, tuple[Any, ...]]


def _literal(host: str, port: int) -> Addr | None:
    """An IP literal needs no resolver; skipping the executor round trip of getaddrinfo saves
    about half of a tcp probe's CPU."""
    if "%" in host:  # a scoped IPv6 address: leave the scope id to getaddrinfo
        return None
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    if ip.version == 6:
        return (socket.AF_INET6, socket.SOCK_STREAM, socket.IPPROTO_TCP, (host, port, 0, 0))
    return (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, (host, port))


async def resolve(target: Target, attempt: Attempt) -> list[Addr]:
    """Resolve `target.host`; the resolve phase is 0 for an IP literal, as in blackbox."""
    host = target.host.strip("[]")
    literal = _literal(host, target.port)
    if literal is not None:
        attempt.phases[Phase.RESOLVE] = 0.0
        return [literal]
    loop = asyncio.get_running_loop()
    start = time.perf_counter()
    _until_settled(attempt, Phase.RESOLVE, start)
    try:
        infos = await loop.getaddrinfo(
            host, target.port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
        )
    except socket.gaierror as exc:
        raise ProbeFailed(Reason.DNS, f"cannot resolve {host}: {exc.strerror or exc}") from exc
    attempt.phases[Phase.RESOLVE] = time.perf_counter() - start
    if not infos:
        raise ProbeFailed(Reason.DNS, f"{host} resolved to no address")
    return [(family, kind, proto, tuple(addr)) for family, kind, proto, _, addr in infos]


def _until_settled(attempt: Attempt, phase: Phase, start: float) -> None:
    """A phase cut off by the deadline or a failure counts the time it took until then."""

    def settle(a: Attempt) -> None:
        a.phases.setdefault(phase, time.perf_counter() - start)

    attempt.settlers.append(settle)


def connect_reason(exc: OSError) -> Reason:
    if isinstance(exc, ConnectionRefusedError) or exc.errno == errno.ECONNREFUSED:
        return Reason.CONNECT_REFUSED
    return Reason.CONNECT_ERROR


async def connect(addrs: list[Addr], attempt: Attempt) -> socket.socket:
    """Connect to the first address that accepts, in resolver order; connect phase measured
    across all tries, since that is what a client of the service would wait for."""
    loop = asyncio.get_running_loop()
    start = time.perf_counter()
    _until_settled(attempt, Phase.CONNECT, start)
    first_error: OSError | None = None
    for family, kind, proto, addr in addrs:
        sock = socket.socket(family, kind, proto)
        try:
            sock.setblocking(False)
            await loop.sock_connect(sock, addr)
        except OSError as exc:
            sock.close()
            if isinstance(exc, TimeoutError):
                raise
            first_error = first_error or exc
            continue
        except BaseException:
            sock.close()
            raise
        attempt.phases[Phase.CONNECT] = time.perf_counter() - start
        attempt.note_tcp(sock)  # a retransmitted SYN shows here even when the connect succeeds
        return sock
    assert first_error is not None
    raise ProbeFailed(
        connect_reason(first_error), f"connect failed: {first_error.strerror or first_error}"
    ) from first_error


async def probe_tcp(target: Target, env: ProbeEnv, attempt: Attempt) -> ProbeResult:
    """A successful TCP handshake is the whole check; the socket is closed right away."""
    del env
    try:
        sock = await connect(await resolve(target, attempt), attempt)
    except ProbeFailed as exc:
        return attempt.result(exc.reason, exc.detail)
    result = attempt.result()
    sock.close()
    return result
