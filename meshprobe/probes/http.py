"""`http://` and `https://` probes through aiohttp, with blackbox_exporter's five phases.

aiohttp's tracing gives DNS, connection and request-sent moments; the TLS moments come from the
recording context (see `meshprobe.trust.record`), which also fails the handshake on a bad verdict so
no request reaches an untrusted server. Every probe uses a fresh connection unless the target asks
for keepalive, because a reused connection would hide exactly the latency (connect, TLS) that
cross-cluster problems show up in.
"""

from __future__ import annotations

import errno
import time
from contextlib import nullcontext
from dataclasses import dataclass, field

import aiohttp
from yarl import URL

from meshprobe.model import CLUSTER_HEADER, Phase, ProbeResult, Reason, Target
from meshprobe.probes.env import Attempt, ProbeEnv, TraceEvent, sockets_of
from meshprobe.probes.tcp import connect_reason
from meshprobe.probes.tls import (
    TLSBinding,
    handshake_failure,
    refusal_on_second_look,
    server_refusal,
    target_tls,
)
from meshprobe.trust.record import HandshakeRecorder, recording_into

__all__ = ["probe_http"]

_CHUNK = 64 * 1024  # the most body we ever hold beyond `body_limit`
_ALPN = ("http/1.1",)
_RESET_ERRNOS = {errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED}


@dataclass(eq=False, slots=True)
class _Hop:
    """perf_counter marks of one request/response exchange; a followed redirect adds a hop."""

    begun: float  # a connection was asked for (or an idle one reused)
    first_socket: int  # index into `Attempt.sockets` of this hop's first socket
    reused: bool = False
    dns_start: float | None = None
    dns_end: float | None = None
    tls_start: float | None = None  # TCP connected: the first handshake call
    tls_end: float | None = None  # handshake done and chain judged
    ready: float | None = None  # the connection is ready for the request
    headers: float | None = None  # the answer's status line and headers are in
    done: float | None = None  # the answer is complete (for a redirect: when it was followed)


def _add(phases: dict[Phase, float], phase: Phase, start: float | None, end: float) -> None:
    if start is not None:
        phases[phase] = phases.get(phase, 0.0) + max(0.0, end - start)


@dataclass(eq=False)
class _Timeline:
    """The hops of one probe, turned into blackbox_exporter's phases by `settle`.

    Phases are wall-clock intervals that follow each other (connect starts where resolve ends,
    processing where the connection became ready), summed over redirect hops as blackbox does.
    A phase still running when the probe ends (a timeout, a failure) counts up to that moment, so
    a hanging handshake shows as a long `tls`, not as 0.
    """

    attempt: Attempt
    recorder: HandshakeRecorder | None = None
    hops: list[_Hop] = field(default_factory=list)

    def _hop(self) -> _Hop:
        if not self.hops:  # an event before any connection: cannot happen with aiohttp, be safe
            self.hops.append(_Hop(time.perf_counter(), len(self.attempt.sockets)))
        return self.hops[-1]

    def trace(self, event: TraceEvent) -> None:
        now = time.perf_counter()
        if event == "conn_start":
            self.hops.append(_Hop(now, len(self.attempt.sockets)))
            return
        if event == "reuse":
            self.hops.append(_Hop(now, len(self.attempt.sockets), reused=True, ready=now))
            return
        hop = self._hop()
        if event == "dns_start":
            hop.dns_start = now
        elif event == "dns_end":
            hop.dns_end = now
        elif event == "conn_end":
            hop.ready = now
            self._take_handshake(hop)
        elif event == "sent":
            if not hop.reused:
                self._read_kernel(hop)
        elif event == "redirect":
            hop.headers = hop.done = now

    def _take_handshake(self, hop: _Hop) -> None:
        """Copy the recorder's handshake marks, if the handshake is this hop's (the context is
        shared by the hops of a probe, so an earlier hop's marks may still be there)."""
        recorder = self.recorder
        if recorder is not None and recorder.started is not None and recorder.started >= hop.begun:
            hop.tls_start, hop.tls_end = recorder.started, recorder.finished

    def answered(self, now: float) -> None:
        self._hop().headers = now

    def completed(self, now: float) -> None:
        self._hop().done = now

    def _read_kernel(self, hop: _Hop) -> None:
        """TCP_INFO of the hop's connection, read once the request is out: the connection is
        surely open then (a short answer may close it before aiohttp hands us the response).
        Happy eyeballs may have made several sockets; the losers are closed by now."""
        for sock in self.attempt.sockets[hop.first_socket :]:
            if sock.fileno() != -1:
                self.attempt.note_tcp(sock)
                return

    def settle(self, attempt: Attempt) -> None:
        now = time.perf_counter()
        phases = attempt.phases
        recorder = self.recorder
        for index, hop in enumerate(self.hops):
            last = index == len(self.hops) - 1
            if not hop.reused:
                if last and hop.ready is None:  # cut off before the connection was ready
                    self._take_handshake(hop)
                connected = hop.tls_start if hop.tls_start is not None else hop.ready
                if hop.dns_start is not None:
                    _add(phases, Phase.RESOLVE, hop.dns_start, hop.dns_end or connected or now)
                else:
                    phases.setdefault(Phase.RESOLVE, 0.0)  # an IP literal: nothing to resolve
                if hop.dns_end is not None or hop.dns_start is None:
                    _add(phases, Phase.CONNECT, hop.dns_end or hop.begun, connected or now)
                if recorder is not None:
                    if hop.tls_start is not None:
                        _add(phases, Phase.TLS, hop.tls_start, hop.tls_end or hop.ready or now)
                    else:
                        phases.setdefault(Phase.TLS, 0.0)
            else:
                for phase in (Phase.RESOLVE, Phase.CONNECT):
                    phases.setdefault(phase, 0.0)
                if recorder is not None:
                    phases.setdefault(Phase.TLS, 0.0)
            if hop.ready is not None:
                _add(phases, Phase.PROCESSING, hop.ready, hop.headers or now)
            if hop.headers is not None:
                _add(phases, Phase.TRANSFER, hop.headers, hop.done or now)
        if recorder is not None and recorder.finished is not None:
            attempt.tls = recorder.report
        elif recorder is not None and self.hops and self.hops[-1].reused:
            attempt.tls = recorder.report  # a reused connection keeps the verdict it earned


def _own_origin_headers(target: Target) -> tuple[aiohttp.ClientMiddlewareType, ...]:
    """Custom headers (tokens, API keys) go to the target's own origin only: aiohttp drops
    Authorization on a redirect to another origin but forwards every other header. The
    middleware runs for each hop, so it sees where a redirect leads."""
    if not target.headers or not target.follow_redirects:
        return ()
    origin = URL(target.url).origin()
    names = {name for name, _ in target.headers}

    async def own_origin_only(
        request: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType
    ) -> aiohttp.ClientResponse:
        if request.url.origin() != origin:
            for name in names:
                request.headers.popall(name, None)
        return await handler(request)

    return (own_origin_only,)


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
    if recorder is not None:  # a TLS 1.3 server's refusal arrives after our handshake
        refused = server_refusal(recorder, exc.__cause__ or exc)
        if refused is not None:
            return Reason.TLS_HANDSHAKE, refused
    if isinstance(exc, aiohttp.ClientConnectorError):
        os_error = exc.os_error
        return connect_reason(os_error), f"connect failed: {os_error.strerror or os_error}"
    if isinstance(exc, aiohttp.TooManyRedirects):
        return Reason.HTTP_STATUS, f"too many redirects ({len(exc.history)})"
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


def _refused_unread(tls: TLSBinding | None, attempt: Attempt) -> bool:
    """Reset after a finished TLS 1.3 handshake and before any answer: the shape of a server
    refusing our certificate with our request unread (see `refusal_on_second_look`)."""
    if tls is None or attempt.status_code is not None:
        return False
    report = tls.recorder.report
    return tls.recorder.finished is not None and report is not None and report.version == "TLSv1.3"


def _session_and_tls(
    target: Target, env: ProbeEnv
) -> tuple[aiohttp.ClientSession, TLSBinding | None]:
    tls = target_tls(target, env, alpn=_ALPN) if target.scheme == "https" else None
    if target.keepalive:
        entry = env.keepalive(target, tls.context if tls is not None else None)
        return entry.session, tls
    return env.fresh_session, tls


async def probe_http(target: Target, env: ProbeEnv, attempt: Attempt) -> ProbeResult:
    try:
        session, tls = _session_and_tls(target, env)
    except (OSError, ValueError) as exc:  # a ca_file we cannot read proves nothing is trusted
        return attempt.result(Reason.TLS_UNTRUSTED, f"ca_file unusable: {exc}")
    recorder = tls.recorder if tls is not None else None
    timeline = _Timeline(attempt, recorder=recorder)
    attempt.settlers.append(timeline.settle)
    try:
        with sockets_of(attempt), recording_into(recorder) if recorder else nullcontext():
            async with session.request(
                target.method,
                target.url,
                headers=target.headers,
                allow_redirects=target.follow_redirects,
                ssl=tls.context if tls is not None else True,
                server_hostname=target.tls.server_name if tls is not None else None,
                trace_request_ctx=timeline,
                middlewares=_own_origin_headers(target),
            ) as resp:
                timeline.answered(time.perf_counter())
                attempt.status_code = resp.status
                attempt.served_by = resp.headers.get(CLUSTER_HEADER)
                if not _status_ok(target, resp.status):
                    return attempt.result(Reason.HTTP_STATUS, f"status {resp.status}")
                failure = await _read_body(resp, target, env, attempt)
                if failure is None:
                    timeline.completed(time.perf_counter())
    except aiohttp.ClientError as exc:
        if timeline.recorder is not None and timeline.recorder.fault is not None:
            raise timeline.recorder.fault from exc  # a bug of ours: run_probe logs it
        reason, detail = _classify(exc, timeline.recorder)
        if reason is Reason.RESET and _refused_unread(tls, attempt):
            assert tls is not None
            refused = await refusal_on_second_look(target, tls)
            if refused is not None:
                return attempt.result(Reason.TLS_HANDSHAKE, f"{refused} (seen on a second look)")
        return attempt.result(reason, detail)
    if failure is not None:
        return attempt.result(*failure)
    return attempt.result()
