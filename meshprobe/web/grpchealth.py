"""The echo's gRPC side: `grpc.health.v1.Health/Check` on its own port (`grpc_listen`, off by
default), so a peer can measure the cross-cluster gRPC path (HTTP/2 through the sidecars and the
gateways, the mesh's gRPC load balancing) beside the HTTP one.

A small HTTP/2 server on the `h2` state machine, not grpcio: one unary method, answered at once,
on the daemon's own event loop. Bounded: a few concurrent streams per connection, requests of at
most 64 KiB, idle connections closed. The answer names our cluster in `x-meshprobe-cluster`
metadata, as the HTTP echo does in its header, so the probe sees who answered (failover).
"""

from __future__ import annotations

import asyncio
import os
from typing import cast

import h2.config
import h2.connection
import h2.events
import h2.exceptions

from meshprobe.config.types import split_host_port
from meshprobe.model import CLUSTER_HEADER
from meshprobe.probes.grpcwire import PATH, decode_request, encode_response

__all__ = ["SERVICES", "ListenFailed", "start_grpc_health"]

SERVICES = ("", "meshprobe")  # what we answer SERVING for; anything else is NOT_FOUND
_MAX_REQUEST = 64 * 1024
_MAX_STREAMS = 16
_IDLE = 60.0


class _Connection(asyncio.Protocol):
    def __init__(self, cluster: str) -> None:
        self._cluster = cluster
        config = h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
        self._h2 = h2.connection.H2Connection(config=config)
        self._transport: asyncio.Transport | None = None
        self._paths: dict[int, str] = {}
        self._bodies: dict[int, bytearray] = {}
        self._idle: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self._h2.local_settings.max_concurrent_streams = _MAX_STREAMS
        self._h2.initiate_connection()
        self._flush()

    def data_received(self, data: bytes) -> None:
        try:
            events = self._h2.receive_data(data)
        except h2.exceptions.ProtocolError:
            self._flush()
            self._close()
            return
        for event in events:
            if isinstance(event, h2.events.RequestReceived):
                headers = {str(k): str(v) for k, v in event.headers or ()}
                self._paths[event.stream_id] = headers.get(":path", "")
                self._bodies[event.stream_id] = bytearray()
            elif isinstance(event, h2.events.DataReceived):
                body = self._bodies.get(event.stream_id)
                self._h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                if body is not None:
                    body += event.data
                    if len(body) > _MAX_REQUEST:
                        self._h2.reset_stream(event.stream_id)
                        self._forget(event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                self._answer(event.stream_id)
            elif isinstance(event, h2.events.StreamReset):
                self._forget(event.stream_id)
        self._flush()

    def _forget(self, stream: int) -> None:
        self._paths.pop(stream, None)
        self._bodies.pop(stream, None)

    def _answer(self, stream: int) -> None:
        path = self._paths.pop(stream, None)
        body = bytes(self._bodies.pop(stream, b""))
        if path is None:
            return
        head = [(":status", "200"), ("content-type", "application/grpc")]
        cluster = (CLUSTER_HEADER.lower(), self._cluster)
        if path != PATH:
            self._h2.send_headers(stream, [*head, ("grpc-status", "12")], end_stream=True)
            return
        try:
            service = decode_request(body)
        except ValueError:
            self._h2.send_headers(stream, [*head, ("grpc-status", "13")], end_stream=True)
            return
        if service not in SERVICES:
            trailers = [("grpc-status", "5"), ("grpc-message", "unknown service")]
            self._h2.send_headers(stream, [*head, cluster, *trailers], end_stream=True)
            return
        self._h2.send_headers(stream, [*head, cluster])
        self._h2.send_data(stream, encode_response(1))
        self._h2.send_headers(stream, [("grpc-status", "0")], end_stream=True)

    def _flush(self) -> None:
        if self._transport is None or self._transport.is_closing():
            return
        data = self._h2.data_to_send()
        if data:
            self._transport.write(data)
        if self._idle is not None:
            self._idle.cancel()
        self._idle = asyncio.get_running_loop().call_later(_IDLE, self._close)

    def _close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._idle is not None:
            self._idle.cancel()
        self._paths.clear()
        self._bodies.clear()


class ListenFailed(OSError):
    """A listener other than the main one could not bind: its field and reason, said whole."""

    def __str__(self) -> str:
        return str(self.strerror)


async def start_grpc_health(cluster: str, address: str) -> tuple[asyncio.Server, int]:
    """Listen on `grpc_listen` (port 0: any free port); returns the server and the port it got.
    A bind failure is `ListenFailed`, naming the setting and the address."""
    host, port = split_host_port(address)
    try:
        server = await asyncio.get_running_loop().create_server(
            lambda: _Connection(cluster), host, port
        )
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        where = f"grpc_listen: cannot listen on {address}: {reason}"
        raise ListenFailed(exc.errno or 0, where) from exc
    return server, int(server.sockets[0].getsockname()[1])
