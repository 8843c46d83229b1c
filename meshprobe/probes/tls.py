"""`tls://` probes, and the TLS helpers the https probe shares (blackbox keeps these in tls.go).

A tls probe is what a mesh gateway (Istio's 15443, Linkerd's 4143) can be checked with without
speaking its application protocol: resolve, connect, handshake through the recording context, and
report the presented chain and our verdict on it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from meshprobe.model import Phase, ProbeResult, Reason, Target
from meshprobe.probes.env import Attempt, ProbeEnv, ProbeFailed
from meshprobe.probes.tcp import connect, resolve
from meshprobe.trust.record import HandshakeRecorder, RecordingContext, recording_into

__all__ = [
    "TLSBinding",
    "expected_name",
    "handshake_failure",
    "probe_tls",
    "record_handshake",
    "refresh_recorder",
    "refusal_on_second_look",
    "server_refusal",
    "shake_hands",
    "sni",
    "target_tls",
]

# How long a clean close (close_notify both ways) may take before the connection is dropped.
_CLOSE_GRACE = 1.0


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def expected_name(target: Target) -> str:
    """The name the leaf must match when no identity is configured (an IP matches IP SANs)."""
    return target.tls.server_name or target.host.strip("[]")


def sni(target: Target) -> str | None:
    """SNI to send; none for an IP literal, which RFC 6066 forbids in server_name."""
    if target.tls.server_name:
        return target.tls.server_name
    return None if _is_ip(target.host) else target.host


def refresh_recorder(recorder: HandshakeRecorder, target: Target, env: ProbeEnv) -> None:
    """Bring expectations up to date: the bundle or trust domain may have been reloaded since
    a keepalive session's context was made."""
    recorder.anchors = env.anchors_for(target)
    recorder.server_name = expected_name(target)
    recorder.expected_identity = target.tls.identity
    recorder.trust_domain = env.trust_domain
    recorder.trust_domain_aliases = env.trust_domain_aliases
    recorder.enforce = not target.tls.insecure_skip_verify
    recorder.verdicts = env.verdicts
    recorder.after_handshake = None
    recorder.new_attempt()


@dataclass(frozen=True, slots=True)
class TLSBinding:
    """What a TLS connection of a target is made with: the context shared by every target of
    its ALPN list and client certificate, and the target's own recorder (bound with
    `recording_into`)."""

    context: RecordingContext
    recorder: HandshakeRecorder


def target_tls(target: Target, env: ProbeEnv, *, alpn: tuple[str, ...] = ()) -> TLSBinding:
    """The target's recorder with its expectations refreshed for this attempt, and the context
    for its ALPN list (its own `alpn` option, else the kind's) and its client certificate."""
    recorder = env.recorder(target)
    refresh_recorder(recorder, target, env)
    client = env.client_pair(target)
    recorder.client_identity = client.identity if client is not None else None
    recorder.client_problem = None
    files = target.tls.client_pair
    if files is not None and client is None:
        source = env.clients.source(*files)
        recorder.client_problem = source.error or "not loaded"
    offered = target.tls.alpn if target.tls.alpn is not None else alpn
    return TLSBinding(env.context(offered, client), recorder)


# What a server's TLS alert about our certificate means, by OpenSSL's name for it.
_CERT_ALERTS = {
    "unknown_ca": "it does not trust the CA that issued it",
    "bad_certificate": "it finds it invalid",
    "unsupported_certificate": "it does not support its type",
    "certificate_revoked": "it finds it revoked",
    "certificate_expired": "it finds it expired or not yet valid",
    "certificate_unknown": "it could not accept it",
    "access_denied": "it is valid but not allowed here",
    "decrypt_error": "its signature did not verify",
}


def _alert(exc: BaseException) -> str | None:
    """The TLS alert a server sent, as RFC 8446 names it, if `exc` carries one."""
    reason = getattr(exc, "reason", None)
    if not isinstance(exc, ssl.SSLError) or not isinstance(reason, str):
        return None
    head, sep, name = reason.partition("_ALERT_")
    return name.lower() if sep and head else None


def server_refusal(recorder: HandshakeRecorder, exc: BaseException) -> str | None:
    """Why the server refused us, when `exc` is its alert: which certificate of ours (or none)
    and what the alert says about it. None when `exc` is not a server's alert."""
    alert = _alert(exc)
    if alert is None:
        return None
    ours = recorder.client_identity
    if ours is None:
        none = "we presented none"
        if recorder.client_problem is not None:
            none += f" (ours is unusable: {recorder.client_problem})"
        if alert == "certificate_required":
            return f"the server refused us: it requires a client certificate and {none}"
        if alert == "handshake_failure":
            return (
                "the server refused the handshake (TLS alert handshake_failure); no client "
                f"certificate was sent, which is how a server requiring one refuses before TLS "
                f"1.3: {none}"
            )
        return (
            f"the server refused the handshake (TLS alert {alert}); no client certificate: {none}"
        )
    meaning = _CERT_ALERTS.get(alert)
    if meaning is not None:
        return f"the server refused our client certificate {ours}: {meaning} (TLS alert {alert})"
    return f"the server refused the handshake (TLS alert {alert}); we presented {ours}"


def handshake_failure(recorder: HandshakeRecorder, exc: BaseException) -> tuple[Reason, str] | None:
    """Our own verdict first (the exception is just its carrier), then the server's refusal;
    None for a fault in the assessment itself, which the caller re-raises so `run_probe` logs
    it. The detail names the side that refused."""
    if recorder.fault is not None:
        return None
    if recorder.rejected and recorder.report is not None:
        report = recorder.report
        return report.reason or Reason.TLS_UNTRUSTED, f"we refused the server: {report.detail}"
    refused = server_refusal(recorder, exc)
    if refused is not None:
        return Reason.TLS_HANDSHAKE, refused
    if isinstance(exc, ConnectionResetError | ConnectionAbortedError | BrokenPipeError):
        return Reason.RESET, f"connection dropped during the TLS handshake: {exc}"
    return Reason.TLS_HANDSHAKE, f"TLS handshake failed: {exc}"


class _Watch(asyncio.Protocol):
    """Sees the connection end and, after a TLS 1.3 handshake, the server's first word on it:
    `verdict` gets None for a session ticket or data (accepted), the alert if it refused us."""

    def __init__(self, closed: asyncio.Future[None], verdict: asyncio.Future[BaseException | None]):
        self._closed = closed
        self._verdict = verdict

    def data_received(self, data: bytes) -> None:
        if not self._verdict.done():
            self._verdict.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._verdict.done():
            self._verdict.set_result(exc)
        if not self._closed.done():
            self._closed.set_result(None)


# How long a TLS 1.3 server may take to send its verdict (a session ticket, or an alert refusing
# our certificate) after our handshake is done, as a multiple of the handshake: it needs half a
# round trip, the handshake took at least one. Past it the handshake counts as accepted.
_VERDICT_WAIT = 2.0
_VERDICT_MIN = 0.05


async def _server_verdict(
    verdict: asyncio.Future[BaseException | None], handshake: float
) -> BaseException | None:
    """The server's refusal, if it sends one in time (see `_VERDICT_WAIT`)."""
    try:
        async with asyncio.timeout(max(_VERDICT_MIN, _VERDICT_WAIT * handshake)):
            return await verdict
    except TimeoutError:
        return None  # no ticket, no alert: servers with tickets off say nothing; accepted


async def _close(transport: asyncio.Transport, closed: asyncio.Future[None]) -> None:
    """Send close_notify and wait briefly for the peer's, as a polite client does."""
    transport.close()
    try:
        async with asyncio.timeout(_CLOSE_GRACE):
            await closed
    except TimeoutError:
        pass
    finally:
        if not closed.done():
            transport.abort()


def _await_verdict(
    recorder: HandshakeRecorder,
) -> tuple[asyncio.Future[None], asyncio.Future[BaseException | None], Callable[[], _Watch]]:
    """Futures for the connection's end and the server's first word after the handshake, the
    recorder set to report that word, and the protocol factory that watches both."""
    loop = asyncio.get_running_loop()
    closed: asyncio.Future[None] = loop.create_future()
    verdict: asyncio.Future[BaseException | None] = loop.create_future()

    def heard(alert: ssl.SSLError | None) -> None:
        if not verdict.done():
            verdict.set_result(alert)

    recorder.after_handshake = heard
    return closed, verdict, lambda: _Watch(closed, verdict)


async def shake_hands(
    protocol: Callable[[], asyncio.BaseProtocol],
    sock: socket.socket,
    target: Target,
    tls: TLSBinding,
) -> asyncio.Transport:
    """TLS on the connected socket through the target's context and recorder. A refused or
    failed handshake closes the socket and raises `ProbeFailed` with the side that refused; a
    fault of our own verdict code, and the deadline, propagate (`run_probe` handles both)."""
    loop = asyncio.get_running_loop()
    try:
        with recording_into(tls.recorder):
            transport, _ = await loop.create_connection(
                protocol, sock=sock, ssl=tls.context, server_hostname=sni(target) or ""
            )
    except (ssl.SSLError, OSError) as exc:
        sock.close()
        if isinstance(exc, TimeoutError):
            raise
        mapped = handshake_failure(tls.recorder, exc)
        if mapped is None:
            assert tls.recorder.fault is not None
            raise tls.recorder.fault from exc
        raise ProbeFailed(*mapped) from None
    except BaseException:
        sock.close()
        raise
    return transport


async def refusal_on_second_look(target: Target, tls: TLSBinding) -> str | None:
    """Why the server refused us, learnt from one more handshake that waits for its verdict.

    An https request after a TLS 1.3 handshake races the server's alert: the server closes with
    our request unread, so the kernel may answer with a reset that discards the alert before we
    read it. The probe has failed either way; this only finds out which side refused and why.
    """
    recorder = replace(tls.recorder)
    recorder.new_attempt()
    _, verdict, watch = _await_verdict(recorder)
    try:
        with recording_into(recorder):
            transport, _ = await asyncio.get_running_loop().create_connection(
                watch,
                target.host.strip("[]"),
                target.port,
                ssl=tls.context,
                server_hostname=sni(target) or "",
            )
    except (ssl.SSLError, OSError) as exc:
        return server_refusal(recorder, exc)
    try:
        started = recorder.started or time.perf_counter()
        refused = await _server_verdict(verdict, time.perf_counter() - started)
    finally:
        transport.abort()
    return server_refusal(recorder, refused) if refused is not None else None


def record_handshake(attempt: Attempt, recorder: HandshakeRecorder) -> None:
    """Settle the attempt's `tls` phase and verdict from the recorder (a settler)."""
    if recorder.duration is not None:
        attempt.phases[Phase.TLS] = recorder.duration
    elif recorder.started is not None:  # cut off mid-handshake: the time it took until then
        attempt.phases[Phase.TLS] = time.perf_counter() - recorder.started
    if recorder.finished is not None:  # the context is reused: only this attempt's verdict
        attempt.tls = recorder.report


async def probe_tls(target: Target, env: ProbeEnv, attempt: Attempt) -> ProbeResult:
    try:
        tls = target_tls(target, env)
    except (OSError, ValueError) as exc:  # a ca_file we cannot read proves nothing is trusted
        return attempt.result(Reason.TLS_UNTRUSTED, f"ca_file unusable: {exc}")
    recorder = tls.recorder
    attempt.settlers.append(lambda a: record_handshake(a, recorder))
    try:
        sock = await connect(await resolve(target, attempt), attempt)
    except ProbeFailed as exc:
        return attempt.result(exc.reason, exc.detail)
    closed, verdict, watch = _await_verdict(recorder)
    try:
        transport = await shake_hands(watch, sock, target, tls)
    except ProbeFailed as exc:
        return attempt.result(exc.reason, exc.detail)
    attempt.tcp = None  # the connect's reading is superseded by this later, cumulative one
    attempt.note_tcp(sock)
    handshaken = time.perf_counter()
    ssl_object = transport.get_extra_info("ssl_object")
    if ssl_object is not None and ssl_object.version() == "TLSv1.3":
        # A TLS 1.3 client is done before the server has judged its certificate; the server's
        # refusal (an alert) comes after. Wait for its first word, so that a refused client is
        # not reported as a success; the duration still ends with the handshake.
        started = recorder.started if recorder.started is not None else handshaken
        refused = await _server_verdict(verdict, handshaken - started)
        detail = server_refusal(recorder, refused) if refused is not None else None
        if detail is not None:
            transport.abort()
            return attempt.result(Reason.TLS_HANDSHAKE, detail)
        # Anything but an alert (an EOF, a reset) is no verdict on us: the handshake succeeded,
        # and what a server does after it is its application's business, as before TLS 1.3.
    recorder.after_handshake = None
    result = attempt.result(ended=handshaken)
    # The verdict is in; closing politely is the server's courtesy, not part of the measurement.
    env.spawn(_close(transport, closed))
    return result
