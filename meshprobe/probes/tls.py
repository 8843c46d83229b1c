"""`tls://` probes, and the TLS helpers the https probe shares (blackbox keeps these in tls.go).

A tls probe is what a mesh gateway (Istio's 15443, Linkerd's 4143) can be checked with without
speaking its application protocol: resolve, connect, handshake through the recording context, and
report the presented chain and our verdict on it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
import time
from dataclasses import dataclass

from meshprobe.model import Phase, ProbeResult, Reason, Target
from meshprobe.probes.env import Attempt, ProbeEnv
from meshprobe.probes.tcp import ConnectFailed, connect, resolve
from meshprobe.trust.record import HandshakeRecorder, RecordingContext, recording_into

__all__ = [
    "TLSBinding",
    "expected_name",
    "handshake_failure",
    "probe_tls",
    "refresh_recorder",
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
    recorder.new_attempt()


@dataclass(frozen=True, slots=True)
class TLSBinding:
    """What a TLS connection of a target is made with: the context shared by every target of
    its ALPN list, and the target's own recorder (bound with `recording_into`)."""

    context: RecordingContext
    recorder: HandshakeRecorder


def target_tls(target: Target, env: ProbeEnv, *, alpn: tuple[str, ...] = ()) -> TLSBinding:
    """The target's recorder with its expectations refreshed for this attempt."""
    recorder = env.recorder(target)
    refresh_recorder(recorder, target, env)
    return TLSBinding(env.context(alpn), recorder)


def handshake_failure(recorder: HandshakeRecorder, exc: BaseException) -> tuple[Reason, str] | None:
    """Our own verdict first (the exception is just its carrier); None for a fault in the
    assessment itself, which the caller re-raises so `run_probe` logs it."""
    if recorder.fault is not None:
        return None
    if recorder.rejected and recorder.report is not None:
        report = recorder.report
        return report.reason or Reason.TLS_UNTRUSTED, report.detail
    if isinstance(exc, ConnectionResetError | ConnectionAbortedError | BrokenPipeError):
        return Reason.RESET, f"connection dropped during the TLS handshake: {exc}"
    return Reason.TLS_HANDSHAKE, f"TLS handshake failed: {exc}"


class _Watch(asyncio.Protocol):
    def __init__(self, closed: asyncio.Future[None]) -> None:
        self._closed = closed

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._closed.done():
            self._closed.set_result(None)


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


def _record(attempt: Attempt, recorder: HandshakeRecorder) -> None:
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
    attempt.settlers.append(lambda a: _record(a, recorder))
    try:
        sock = await connect(await resolve(target, attempt), attempt)
    except ConnectFailed as exc:
        return attempt.result(exc.reason, exc.detail)
    loop = asyncio.get_running_loop()
    closed: asyncio.Future[None] = loop.create_future()
    try:
        with recording_into(recorder):
            transport, _ = await loop.create_connection(
                lambda: _Watch(closed),
                sock=sock,
                ssl=tls.context,
                server_hostname=sni(target) or "",
            )
    except (ssl.SSLError, OSError) as exc:
        sock.close()
        if isinstance(exc, TimeoutError):
            raise
        mapped = handshake_failure(recorder, exc)
        if mapped is None:
            assert recorder.fault is not None
            raise recorder.fault from exc
        return attempt.result(*mapped)
    except BaseException:
        sock.close()
        raise
    attempt.tcp = None  # the connect's reading is superseded by this later, cumulative one
    attempt.note_tcp(sock)
    result = attempt.result()
    # The verdict is in; closing politely is the server's courtesy, not part of the measurement.
    env.spawn(_close(transport, closed))
    return result
