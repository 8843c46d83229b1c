"""Real misbehaving servers on loopback, one per failure a probe must name.

Each fault is a genuine listener on 127.0.0.1 with a random port, doing on the wire what a broken
service does (hanging, resetting, speaking garbage, presenting a bad chain), so the probes are
tested through the same sockets, event loop and TLS stack they use in production. Every server is
an async context manager that closes its listener and every connection it accepted.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import struct
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any

from meshprobe.config.targets import make_target as make_target_from_url
from meshprobe.demo import pki
from meshprobe.demo.pki import Issued
from meshprobe.model import Target, TLSOptions
from meshprobe.trust.anchors import TrustAnchors

SPIFFE_ID = "spiffe://cluster.local/ns/mesh/sa/echo"
OTHER_SPIFFE_ID = "spiffe://cluster.local/ns/other/sa/intruder"
# Offline NXDOMAIN: the leading hyphen makes glibc refuse the name before any query is sent (a
# plain `.invalid` name would still go to the configured nameserver).
UNKNOWN_HOST = "-meshprobe-nxdomain-.invalid"
# The kernel refuses to route TCP to the limited broadcast address: ENETUNREACH, no packet sent.


Handler = Callable[["FaultServer", asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class FaultServer:
    """A listener on 127.0.0.1:<random> running `handler` for each connection."""

    def __init__(
        self,
        handler: Handler,
        *,
        tls: ssl.SSLContext | None = None,
        sock: socket.socket | None = None,
    ) -> None:
        """`sock`: a bound listening socket to serve on (its host and port are used)."""
        self._handler = handler
        self._tls = tls
        self._sock = sock
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self.host = "127.0.0.1"
        self.port = 0
        self.connections = 0  # handlers started (for TLS: handshakes completed)
        self.requests: list[Request] = []
        self.received = 0  # bytes read by handlers that only count
        self.accepted = asyncio.Event()
        self.requested = asyncio.Event()  # set by the HTTP handlers on each request read
        self.clean_closes = 0  # connections the client ended with an orderly EOF / close_notify

    def url(self, scheme: str = "http", path: str = "/") -> str:
        return f"{scheme}://{self.host}:{self.port}{path}"

    async def __aenter__(self) -> FaultServer:
        if self._sock is not None:
            self.host, _ = self._sock.getsockname()
            self._server = await asyncio.start_server(
                self._serve,
                sock=self._sock,
                ssl=self._tls,
                ssl_shutdown_timeout=1.0 if self._tls else None,
            )
        else:
            self._server = await asyncio.start_server(
                self._serve,
                self.host,
                0,
                ssl=self._tls,
                ssl_shutdown_timeout=1.0 if self._tls else None,
            )
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        self.connections += 1
        self.accepted.set()
        try:
            await self._handler(self, reader, writer)
        except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError, RuntimeError):
            # The client hanging up on a fault server is the expected ending (uvloop reports a
            # write to a transport closed under us as RuntimeError).
            pass
        except asyncio.CancelledError:
            # Swallowed on purpose: Python 3.11's start_server callback calls task.exception()
            # on a cancelled handler task and logs a spurious error.
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                async with asyncio.timeout(1.0):
                    await writer.wait_closed()
            writer.transport.abort()
            self._tasks.discard(task)
            self._writers.discard(writer)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._server is not None
        self._server.close()
        # Dropping the connections ends every handler blocked on a read or a drain.
        for writer in list(self._writers):
            writer.transport.abort()
        tasks = list(self._tasks)
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=1.0)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
        await self._server.wait_closed()


# -- raw misbehaviour ----------------------------------------------------------------------------


async def _read_head(reader: asyncio.StreamReader) -> bytes:
    return await reader.readuntil(b"\r\n\r\n")


async def hang(server: FaultServer, reader: asyncio.StreamReader, _w: asyncio.StreamWriter) -> None:
    """Accept, read whatever comes, never answer; ends only when the client gives up."""
    while chunk := await reader.read(65536):
        server.received += len(chunk)


async def garbage(_s: FaultServer, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    """Answer an HTTP request with bytes that are not HTTP (a wrong port, a binary protocol)."""
    await _read_head(reader)
    w.write(b"\x00\x17\x03SSH-2.0-not-http \xff\xfe\r\n\r\n")
    await w.drain()


async def reset_mid_response(
    _s: FaultServer, reader: asyncio.StreamReader, w: asyncio.StreamWriter
) -> None:
    """Promise 100 kB, send 1 kB, then RST (SO_LINGER 0), as a crashing backend does."""
    await _read_head(reader)
    w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 1000)
    await w.drain()
    sock = w.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    w.transport.abort()


def big_body(size: int, chunk: int = 64 * 1024) -> Handler:
    """Stream `size` bytes one chunk at a time: the server never holds the body either."""
    block = b"m" * chunk

    async def handler(
        _s: FaultServer, reader: asyncio.StreamReader, w: asyncio.StreamWriter
    ) -> None:
        await _read_head(reader)
        w.write(f"HTTP/1.1 200 OK\r\nContent-Length: {size}\r\n\r\n".encode())
        sent = 0
        while sent < size and not w.is_closing():
            piece = block[: min(chunk, size - sent)]
            w.write(piece)
            await w.drain()
            sent += len(piece)

    return handler


async def tls_garbage(
    _s: FaultServer, reader: asyncio.StreamReader, w: asyncio.StreamWriter
) -> None:
    """A plaintext server hit by a TLS client: reads the ClientHello, answers HTTP 400."""
    await reader.read(1)
    w.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
    await w.drain()


async def hold(server: FaultServer, reader: asyncio.StreamReader, _w: asyncio.StreamWriter) -> None:
    """A TLS listener for `tls://` probes: handshake (done by the transport), then wait for
    the client's close_notify."""
    while chunk := await reader.read(65536):
        server.received += len(chunk)
    server.clean_closes += 1


# -- a small HTTP/1.1 responder ------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: Mapping[str, str]  # lower-cased names


@dataclass(frozen=True)
class Reply:
    status: int = 200
    body: bytes = b"ok\n"
    headers: tuple[tuple[str, str], ...] = ()
    delay: float = 0.0  # the server's own slowness, not a test synchronisation


def _parse(head: bytes) -> Request:
    lines = head.decode("latin-1").split("\r\n")
    method, path, _version = lines[0].split(" ", 2)
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    return Request(method, path, headers)


def _render(reply: Reply) -> bytes:
    head = [f"HTTP/1.1 {reply.status} X", f"Content-Length: {len(reply.body)}"]
    head += [f"{k}: {v}" for k, v in reply.headers]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + reply.body


def http(respond: Reply | Callable[[Request], Reply] = Reply()) -> Handler:
    """Serve requests with keepalive until the client closes, recording each request."""

    async def handler(
        server: FaultServer, reader: asyncio.StreamReader, w: asyncio.StreamWriter
    ) -> None:
        while True:
            try:
                head = await _read_head(reader)
            except asyncio.IncompleteReadError:
                return
            request = _parse(head)
            server.requests.append(request)
            server.requested.set()
            reply = respond if isinstance(respond, Reply) else respond(request)
            if reply.delay:
                await asyncio.sleep(reply.delay)
            w.write(_render(reply))
            await w.drain()
            if request.headers.get("connection", "").lower() == "close":
                return

    return handler


def echo(cluster: str) -> Handler:
    """meshprobe's responder: 200 with the cluster that answered."""
    return http(Reply(headers=(("X-Meshprobe-Cluster", cluster),)))


@contextlib.contextmanager
def refused_port() -> Iterator[int]:
    """A port bound but not listening: connecting gets RST, and nobody else can take the port
    while the test runs (closing the socket first would race with other tests)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]
    finally:
        sock.close()


# -- certificates --------------------------------------------------------------------------------


@dataclass(frozen=True)
class TestPki:
    """Every chain the TLS faults present, minted once per session (EC keys: milliseconds)."""

    __test__ = False  # not a pytest test class

    root: Issued
    intermediate: Issued
    leaf: Issued
    other_root: Issued
    other_intermediate: Issued
    other_leaf: Issued
    self_signed: Issued
    expired_leaf: Issued
    expired_intermediate: Issued
    leaf_under_expired: Issued
    wrong_identity: Issued
    anchors: TrustAnchors = field(repr=False)

    def good(self) -> ssl.SSLContext:
        return pki.server_ssl_context(self.leaf, [self.intermediate])

    def from_other_ca(self) -> ssl.SSLContext:
        return pki.server_ssl_context(self.other_leaf, [self.other_intermediate])

    def self_signed_ctx(self) -> ssl.SSLContext:
        return pki.server_ssl_context(self.self_signed)

    def expired_leaf_ctx(self) -> ssl.SSLContext:
        return pki.server_ssl_context(self.expired_leaf, [self.intermediate])

    def expired_intermediate_ctx(self) -> ssl.SSLContext:
        return pki.server_ssl_context(self.leaf_under_expired, [self.expired_intermediate])

    def wrong_identity_ctx(self) -> ssl.SSLContext:
        return pki.server_ssl_context(self.wrong_identity, [self.intermediate])


def make_test_pki() -> TestPki:
    now = datetime.now(UTC)
    ip = ["127.0.0.1"]
    root = pki.make_root("meshprobe test root")
    inter = pki.make_intermediate(root, "meshprobe test intermediate")
    other_root = pki.make_root("meshprobe other root")
    other_inter = pki.make_intermediate(other_root, "meshprobe other intermediate")
    expired_inter = pki.make_intermediate(
        root,
        "meshprobe expired intermediate",
        not_before=now - timedelta(days=30),
        not_after=now - timedelta(days=1),
    )
    return TestPki(
        root=root,
        intermediate=inter,
        leaf=pki.make_leaf(inter, "echo", ip_addresses=ip, uris=[SPIFFE_ID]),
        other_root=other_root,
        other_intermediate=other_inter,
        other_leaf=pki.make_leaf(other_inter, "echo", ip_addresses=ip, uris=[SPIFFE_ID]),
        self_signed=pki.make_self_signed_leaf("echo", ip_addresses=ip),
        expired_leaf=pki.make_leaf(
            inter,
            "echo",
            ip_addresses=ip,
            uris=[SPIFFE_ID],
            not_before=now - timedelta(days=2),
            not_after=now - timedelta(days=1),
        ),
        expired_intermediate=expired_inter,
        leaf_under_expired=pki.make_leaf(expired_inter, "echo", ip_addresses=ip, uris=[SPIFFE_ID]),
        wrong_identity=pki.make_leaf(inter, "intruder", ip_addresses=ip, uris=[OTHER_SPIFFE_ID]),
        anchors=TrustAnchors.from_pem(root.cert_pem(), source="test root"),
    )


# -- targets -------------------------------------------------------------------------------------


def make_target(url: str, **overrides: Any) -> Target:
    """A Target from the one factory config and discovery use, with short timeouts so faults
    fail fast; `tls` may be given as a dict of TLSOptions fields."""
    tls = overrides.pop("tls", None)
    if isinstance(tls, dict):
        tls = TLSOptions(**tls)
    if tls is not None:
        overrides["tls"] = tls
    fields: dict[str, Any] = {
        "name": "test/target",
        "cluster": "cluster1",
        "own_cluster": "cluster1",
        "interval": max(10.0, overrides.get("timeout", 0.0)),  # room for a long timeout
        "timeout": 2.0,
        "budget": 0.05,
        "local_budget": 0.05,
        "remote_budget": 0.15,
        **overrides,
    }
    return make_target_from_url(url=url, **fields)
