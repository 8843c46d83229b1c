"""`http://` and `https://` probes through aiohttp, with blackbox_exporter's five phases.

aiohttp's tracing gives DNS, connection and request-sent moments; the TLS moments come from the
recording context (see `meshprobe.tlsrecord`), which also fails the handshake on a bad verdict so
no request reaches an untrusted server. Every probe uses a fresh connection unless the target asks
for keepalive, because a reused connection would hide exactly the latency (connect, TLS) that
cross-cluster problems show up in.
"""

from __future__ import annotations

import errno
import time
from dataclasses import dataclass

import aiohttp

from meshprobe.model import Phase, ProbeResult, Reason, Target
from meshprobe.probes.env import Attempt, ProbeEnv, TraceEvent, current_attempt
from meshprobe.probes.tcp import connect_reason
from meshprobe.probes.tcpinfo import handshake_rtt
from meshprobe.probes.tls import (
    handshake_failure,
    new_context,
    refresh_recorder,
    target_context,
)
from meshprobe.tlsrecord import HandshakeRecorder, RecordingContext

__all__ = ["SERVED_BY_HEADER", "probe_http"]

SERVED_BY_HEADER = "X-Meshprobe-Cluster"
_CHUNK = 64 * 1024  # the most body we ever hold beyond `body_limit`
_ALPN = ("http/1.1",)
_RESET_ERRNOS = {errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED}


@dataclass(eq=False)
class _Timeline:
    """Raw perf_counter marks of one request; turned into phases by `settle`."""

    recorder: HandshakeRecorder | None = None
    dns_start: float | None = None
    dns_end: float | None = None
    conn_start: float | None = None
    conn_end: float | None = None
    reused: bool = False
    sent: float | None = None
    headers: float | None = None
    done: float | None = None
    kernel_rtt: float | None = None  # the TCP handshake as the kernel measured it

    def trace(self, event: TraceEvent) -> None:
        now = time.perf_counter()
        if event == "dns_start":
            self.dns_start = now
        elif event == "dns_end":
            self.dns_end = now
        elif event == "conn_start":
            # A followed redirect starts over: the phases describe the last hop.
            self.dns_start = self.dns_end = self.conn_end = None
            self.reused = False
            self.conn_start = now
        elif event == "conn_end":
            self.conn_end = now
        elif event == "reuse":
            self.reused = True
        elif event == "sent":
            self.sent = now
            if not self.reused:  # the connection is open now; ask the kernel about its handshake
                self.kernel_rtt = handshake_rtt(current_attempt().sock)

    def settle(self, attempt: Attempt) -> None:
        phases = attempt.phases
        recorder = self.recorder
        if self.reused:
            phases[Phase.RESOLVE] = phases[Phase.CONNECT] = 0.0
            if recorder is not None:
                phases[Phase.TLS] = 0.0
        else:
            tls_start = recorder.started if recorder is not None else None
            connected = tls_start if recorder is not None else self.conn_end
            if self.dns_start is not None and self.dns_end is not None:
                phases[Phase.RESOLVE] = self.dns_end - self.dns_start
            elif self.dns_start is None and connected is not None:
                phases[Phase.RESOLVE] = 0.0  # an IP literal or a cached name
            start = self.dns_end if self.dns_end is not None else self.conn_start
            if self.kernel_rtt is not None:
                phases[Phase.CONNECT] = self.kernel_rtt
            elif start is not None and connected is not None:
                phases[Phase.CONNECT] = connected - start
            if recorder is not None and recorder.duration is not None:
                phases[Phase.TLS] = recorder.duration
        if self.sent is not None and self.headers is not None:
            phases[Phase.PROCESSING] = self.headers - self.sent
        if self.headers is not None and self.done is not None:
            phases[Phase.TRANSFER] = self.done - self.headers
        if recorder is not None and (self.reused or recorder.finished is not None):
            attempt.tls = recorder.report


def _status_ok(target: Target, status: int) -> bool:
    if target.expected_status:
        return status in target.expected_status
    return 200 <= status < 300


def _classify(exc: aiohttp.ClientError, recorder: HandshakeRecorder | None) -> tuple[Reason, str]:
    """aiohttp's exception -> our closed set of reasons."""
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return Reason.DNS, f"cannot resolve {exc.host}: {exc.os_error.strerror or exc.os_error}"
    handshaking = (
        recorder is not None and recorder.started is not None and recorder.finished is None
    )
    if recorder is not None and (isinstance(exc, aiohttp.ClientSSLError) or handshaking):
        cause = exc.__cause__ or exc
        mapped = handshake_failure(recorder, cause)
        if mapped is not None:
            return mapped
    if isinstance(exc, aiohttp.ClientConnectorError):
        os_error = exc.os_error
        return connect_reason(os_error), f"connect failed: {os_error.strerror or os_error}"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return Reason.RESET, "server closed the connection without a complete answer"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return Reason.RESET, f"response body cut short: {exc}"
    if isinstance(exc, aiohttp.ClientOSError):
        if isinstance(exc, ConnectionResetError) or exc.errno in _RESET_ERRNOS:
            return Reason.RESET, f"connection reset: {exc.strerror or exc}"
        return Reason.CONNECT_ERROR, f"socket error: {exc.strerror or exc}"
    if isinstance(exc, aiohttp.ClientResponseError):
        return Reason.PROTOCOL, f"not a valid HTTP answer: {exc.message}"
    return Reason.PROTOCOL, f"{type(exc).__name__}: {exc}"


async def _read_body(
    resp: aiohttp.ClientResponse, target: Target, env: ProbeEnv, attempt: Attempt
) -> tuple[Reason, str] | None:
    """Count the body as it streams; keep it only when a regex must see it."""
    kept = bytearray() if target.body_regex else None
    total = 0
    while chunk := await resp.content.read(_CHUNK):
        total += len(chunk)
        attempt.body_bytes = total
        if total > target.body_limit:
            resp.close()  # drop the connection rather than drain the rest
            return Reason.BODY_TOO_LARGE, f"body exceeds the {target.body_limit}-byte limit"
        if kept is not None:
            kept += chunk
    if target.body_regex is not None and kept is not None:
        try:
            text = kept.decode(resp.charset or "utf-8", errors="replace")
        except LookupError:  # a charset Python does not know: read it as UTF-8
            text = kept.decode("utf-8", errors="replace")
        if env.pattern(target.body_regex).search(text) is None:
            return Reason.BODY_MISMATCH, f"body does not match {target.body_regex!r}"
    return None


def _session_and_context(
    target: Target, env: ProbeEnv
) -> tuple[aiohttp.ClientSession, RecordingContext | None]:
    https = target.scheme == "https"
    if target.keepalive:
        entry = env.keepalive(
            target, lambda: new_context(target, env, alpn=_ALPN) if https else None
        )
        if entry.context is not None:
            refresh_recorder(entry.context.recorder, target, env)
        return entry.session, entry.context
    context = target_context(target, env, alpn=_ALPN) if https else None
    return env.fresh_session, context


async def probe_http(target: Target, env: ProbeEnv) -> ProbeResult:
    attempt = current_attempt()
    try:
        session, context = _session_and_context(target, env)
    except (OSError, ValueError) as exc:  # a ca_file we cannot read proves nothing is trusted
        return attempt.result(Reason.TLS_UNTRUSTED, f"ca_file unusable: {exc}")
    timeline = _Timeline(recorder=context.recorder if context is not None else None)
    attempt.settlers.append(timeline.settle)
    try:
        async with session.request(
            target.method,
            target.url,
            headers=target.headers,
            allow_redirects=target.follow_redirects,
            ssl=context if context is not None else True,
            server_hostname=target.tls.server_name if context is not None else None,
            trace_request_ctx=timeline,
        ) as resp:
            timeline.headers = time.perf_counter()
            attempt.status_code = resp.status
            attempt.served_by = resp.headers.get(SERVED_BY_HEADER)
            if not _status_ok(target, resp.status):
                return attempt.result(Reason.HTTP_STATUS, f"status {resp.status}")
            failure = await _read_body(resp, target, env, attempt)
            if failure is None:
                timeline.done = time.perf_counter()
    except aiohttp.ClientError as exc:
        if timeline.recorder is not None and timeline.recorder.fault is not None:
            raise timeline.recorder.fault from exc  # a bug of ours: run_probe logs it
        return attempt.result(*_classify(exc, timeline.recorder))
    if failure is not None:
        return attempt.result(*failure)
    # A complete answer: the probe took what its phases took, not what Python spent between them.
    attempt.measured_total = True
    return attempt.result()
