"""`grpc://` and `grpcs://` probes: the standard `grpc.health.v1.Health/Check` call over HTTP/2.

No gRPC library: a health check is one unary call, and owning the connection is what makes it
judged like the other kinds. We resolve and connect with the tcp probe's helpers (the `resolve`
and `connect` phases), run TLS through the recording context (the whole presented chain against
our bundle, SPIFFE identity, the handshake failing on an untrusted chain, our client certificate;
ALPN `h2`), then speak HTTP/2 with the `h2` state machine: `processing` runs from the request to
the trailers. gRPC libraries hide the presented chain behind their own TLS; grpcio does not run on
asyncio at all.

The wire format (framing, the two messages, the status names) is in `grpcwire`, shared with the
echo's server.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from dataclasses import dataclass, field
from typing import cast
from urllib.parse import unquote

import h2.config
import h2.connection
import h2.events
import h2.exceptions

from meshprobe.model import (
    CLUSTER_HEADER,
    KIND_PHASES,
    USER_AGENT,
    Phase,
    ProbeResult,
    Reason,
    Target,
    TLSReport,
)
from meshprobe.probes.env import Attempt, ProbeEnv, ProbeFailed
from meshprobe.probes.grpcwire import (
    GRPC_CODES,
    PATH,
    SERVING_STATUS,
    decode_status,
    encode_request,
    unframe,
)
from meshprobe.probes.tcp import connect, resolve
from meshprobe.probes.tls import TLSBinding, record_handshake, shake_hands, target_tls

__all__ = ["probe_grpc"]

_MAX_MESSAGE = 64 * 1024  # a HealthCheckResponse is 2 bytes; anything this big is not one


@dataclass(eq=False)
class _Answer:
    """One call's answer as it arrives; `done` resolves when the stream ends."""

    stream: int
    done: asyncio.Future[None]
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    trailers: dict[str, str] = field(default_factory=dict)
    data: bytearray = field(default_factory=bytearray)

    def end(self) -> None:
        if not self.done.done():
            self.done.set_result(None)

    def fail(self, reason: Reason, detail: str) -> None:
        if not self.done.done():
            self.done.set_exception(ProbeFailed(reason, detail))


class _Connection(asyncio.Protocol):
    """An HTTP/2 client connection carrying one health check at a time (a target's probes never
    overlap): a fresh one per probe, or kept across probes with `keepalive: true`, a new stream
    each time. Any failure makes it `dead`, so the next probe connects afresh."""

    def __init__(self, authority: str, scheme: str) -> None:
        self.authority, self.scheme = authority, scheme
        config = h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        self.h2conn = h2.connection.H2Connection(config=config)
        self.transport: asyncio.Transport | None = None
        self.answer: _Answer | None = None
        self.spoke_h2 = False  # the server sent its SETTINGS: an HTTP/2 server's first words
        self.dead = False
        self.tls: TLSReport | None = None  # the verdict this connection's handshake earned

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.h2conn.initiate_connection()
        self._flush()

    def call(self, target: Target) -> _Answer:
        """Send one Health/Check on a new stream."""
        conn = self.h2conn
        stream = conn.get_next_available_stream_id()
        headers = [
            (":method", "POST"),
            (":scheme", self.scheme),
            (":path", PATH),
            (":authority", self.authority),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
            ("user-agent", USER_AGENT),
            ("grpc-timeout", f"{max(1, int(target.timeout * 1000))}m"),
            *target.headers,
        ]
        self.answer = _Answer(stream, asyncio.get_running_loop().create_future())
        conn.send_headers(stream, headers)
        conn.send_data(stream, encode_request(target.grpc_service), end_stream=True)
        self._flush()
        return self.answer

    def _flush(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(self.h2conn.data_to_send())

    def data_received(self, data: bytes) -> None:
        try:
            events = self.h2conn.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            if self.h2conn.state_machine.state is h2.connection.ConnectionState.CLOSED:
                # Frames after the server's GOAWAY (a server shutting down sends a PING too).
                self._fail(Reason.RESET, "the server closed the HTTP/2 connection (GOAWAY)")
            else:
                self._fail(Reason.PROTOCOL, f"not an HTTP/2 answer: {type(exc).__name__}: {exc}")
            self.close()
            return
        for event in events:
            self._on(event)
        self._flush()

    def _on(self, event: h2.events.Event) -> None:
        answer = self.answer
        if isinstance(event, h2.events.RemoteSettingsChanged):
            self.spoke_h2 = True
        elif isinstance(event, h2.events.ConnectionTerminated):
            code = event.error_code
            self._fail(Reason.RESET, f"the server closed the HTTP/2 connection (GOAWAY, {code})")
        elif answer is None or getattr(event, "stream_id", None) != answer.stream:
            if isinstance(event, h2.events.DataReceived) and event.stream_id:
                self.h2conn.acknowledge_received_data(
                    event.flow_controlled_length or 0, event.stream_id
                )
        elif isinstance(event, h2.events.ResponseReceived):
            answer.headers = {str(k): str(v) for k, v in event.headers or ()}
            answer.status = int(answer.headers.get(":status", "0"))
            if event.stream_ended is not None:  # trailers-only: the status is in the headers
                answer.trailers = answer.headers
                answer.end()
        elif isinstance(event, h2.events.DataReceived):
            answer.data += event.data or b""
            self.h2conn.acknowledge_received_data(event.flow_controlled_length or 0, answer.stream)
            if len(answer.data) > _MAX_MESSAGE:
                self._fail(Reason.PROTOCOL, f"response larger than {_MAX_MESSAGE} bytes")
        elif isinstance(event, h2.events.TrailersReceived):
            answer.trailers = {str(k): str(v) for k, v in event.headers or ()}
        elif isinstance(event, h2.events.StreamEnded):
            answer.end()
        elif isinstance(event, h2.events.StreamReset):
            answer.fail(
                Reason.RESET, f"the server reset the call (HTTP/2 error {event.error_code})"
            )

    def _fail(self, reason: Reason, detail: str) -> None:
        self.dead = True
        if self.answer is not None:
            self.answer.fail(reason, detail)

    def connection_lost(self, exc: Exception | None) -> None:
        self.dead = True
        if self.answer is None or self.answer.done.done():
            return
        if not self.spoke_h2:  # an HTTP/1.1-only server drops the HTTP/2 preface unanswered
            self._fail(Reason.PROTOCOL, "the server closed the connection without speaking HTTP/2")
        elif isinstance(exc, ssl.SSLError | ConnectionResetError):
            self._fail(Reason.RESET, f"connection lost before the answer: {exc}")
        else:
            self._fail(Reason.RESET, "the server closed the connection before the answer")

    def close(self) -> None:
        self.dead = True
        if self.transport is not None:
            self.transport.close()


def _verdict(call: _Answer, attempt: Attempt) -> tuple[Reason, str] | None:
    """The call's outcome: None for SERVING, else why not. The gRPC status and the serving
    status go on the attempt when the answer carries them."""
    if call.status != 200:
        return Reason.HTTP_STATUS, f"HTTP status {call.status}: not a gRPC answer"
    if not call.headers.get("content-type", "").startswith("application/grpc"):
        shown = call.headers.get("content-type", "none")
        return Reason.PROTOCOL, f"content-type {shown!r}: not a gRPC answer"
    raw = call.trailers.get("grpc-status")
    if raw is None or not raw.isdigit():
        return Reason.PROTOCOL, "the answer has no grpc-status"
    code = int(raw)
    attempt.grpc_status = code
    if code != 0:
        name = GRPC_CODES[code] if code < len(GRPC_CODES) else f"code {code}"
        message = unquote(call.trailers.get("grpc-message", ""))[:256]
        return Reason.GRPC_STATUS, f"gRPC status {name} ({code})" + (
            f": {message}" if message else ""
        )
    try:
        body = unframe(bytes(call.data))
    except ValueError:
        return Reason.PROTOCOL, "the answer is not one uncompressed gRPC message"
    try:
        status = decode_status(body)
    except ValueError as exc:
        return Reason.PROTOCOL, f"not a HealthCheckResponse: {exc}"
    attempt.grpc_serving = status
    if status != 1:
        name = SERVING_STATUS[status] if status < len(SERVING_STATUS) else f"status {status}"
        return Reason.GRPC_STATUS, f"health status {name}"
    return None


async def _open(target: Target, attempt: Attempt, tls: TLSBinding | None) -> _Connection:
    """A fresh connection: resolve and connect (their phases), then HTTP/2, through TLS with
    ALPN h2 for grpcs; `ProbeFailed` says why not (a fault of our own verdict code propagates,
    for `run_probe` to log)."""
    sock = await connect(await resolve(target, attempt), attempt)
    authority = (tls and target.tls.server_name) or f"{target.host}:{target.port}"
    conn = _Connection(authority, "https" if tls else "http")
    if tls is not None:
        await shake_hands(lambda: conn, sock, target, tls)
    else:
        try:
            await asyncio.get_running_loop().create_connection(lambda: conn, sock=sock)
        except OSError as exc:
            sock.close()
            if isinstance(exc, TimeoutError):
                raise
            raise ProbeFailed(Reason.RESET, f"connection lost: {exc}") from None
        except BaseException:
            sock.close()
            raise
    attempt.tcp = None
    attempt.note_tcp(sock)
    if tls is not None:
        assert conn.transport is not None
        alpn = conn.transport.get_extra_info("ssl_object").selected_alpn_protocol()
        if alpn != "h2":
            conn.transport.abort()
            raise ProbeFailed(
                Reason.PROTOCOL, f"the server did not agree to h2 (ALPN: {alpn or 'none'})"
            )
        conn.tls = tls.recorder.report
    return conn


async def probe_grpc(target: Target, env: ProbeEnv, attempt: Attempt) -> ProbeResult:
    tls = None
    if target.scheme == "grpcs":
        try:
            tls = target_tls(target, env, alpn=("h2",))
        except (OSError, ValueError) as exc:
            return attempt.result(Reason.TLS_UNTRUSTED, f"ca_file unusable: {exc}")
        recorder = tls.recorder
        attempt.settlers.append(lambda a: record_handshake(a, recorder))
    kept = env.kept(target) if target.keepalive else None
    conn = kept if isinstance(kept, _Connection) and not kept.dead else None
    if conn is not None:  # reused: nothing to resolve, connect or shake hands for
        attempt.phases.update(dict.fromkeys(KIND_PHASES[target.scheme][:-1], 0.0))
        attempt.tls = conn.tls
    else:
        try:
            conn = await _open(target, attempt, tls)
        except ProbeFailed as failed:
            return attempt.result(failed.reason, failed.detail)
        if target.keepalive:
            env.keep(target, conn)
    sent = time.perf_counter()
    try:
        try:
            answer = conn.call(target)
        except h2.exceptions.ProtocolError as exc:  # closed by the server since we looked
            raise ProbeFailed(
                Reason.RESET, f"the kept HTTP/2 connection was closed: {exc}"
            ) from None
        await answer.done
    except ProbeFailed as failed:
        conn.close()
        return attempt.result(failed.reason, failed.detail)
    finally:
        attempt.phases[Phase.PROCESSING] = time.perf_counter() - sent
        if not target.keepalive:
            conn.close()
    attempt.status_code = answer.status
    attempt.served_by = answer.headers.get(CLUSTER_HEADER.lower())
    verdict = _verdict(answer, attempt)
    return attempt.result(*verdict) if verdict is not None else attempt.result()
