"""Handshake timing and the whole presented chain, even through aiohttp.

aiohttp's tracing has no TLS event, and Python 3.11's public `ssl` API shows only the leaf of what
the server sent. Both asyncio's and uvloop's TLS transports drive the handshake by calling
`do_handshake()` on the object that `SSLContext.wrap_bio` returns, and `wrap_bio` builds that
object from the context's `sslobject_class`. So a context whose `sslobject_class` overrides
`do_handshake` sees the exact moment TLS starts (the first call: TCP is connected), the moment it
ends, and the raw chain, for any client that accepts an `SSLContext`.

Contexts are shared (one per ALPN list, not one per target: an OpenSSL 3.0 context costs about
13 KB and a quarter of an https probe's CPU to build), so the recorder a handshake reports to is
bound to the probe, not to the context: `recording_into(recorder)` around the connection, read
by the handshake's first step, which runs in the context of the task that opened the connection
(the transport schedules it from there). A context made by `recording_context(recorder)` keeps
that recorder as its fallback, for code that opens connections without binding one.

OpenSSL verification stays off: a broken chain must still complete the handshake so that we can
report it, and `tlscheck.assess_chain` reaches the verdict in one place for every probe kind. When
the verdict fails we raise from inside `do_handshake`, so the transport fails exactly as if
OpenSSL had refused the chain and no request is ever sent to an untrusted server.
"""

from __future__ import annotations

import _ssl
import contextlib
import contextvars
import ssl
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, cast

from meshprobe.model import TLSReport
from meshprobe.trust.anchors import TrustAnchors
from meshprobe.trust.cache import VerdictCache
from meshprobe.trust.verdict import assess_chain

__all__ = [
    "HandshakeRecorder",
    "RecorderFault",
    "RecordingContext",
    "TrustRejected",
    "recording_context",
    "recording_into",
    "shared_context",
]


class TrustRejected(ssl.SSLCertVerificationError):
    """Our verdict refused the chain; an `SSLCertVerificationError` so every TLS stack treats it
    like OpenSSL's own refusal (aiohttp maps it to `ClientConnectorCertificateError`)."""

    def __init__(self, report: TLSReport) -> None:
        super().__init__(1, f"meshprobe: {report.reason}: {report.detail}")
        self.report = report
        self.verify_code = 1
        self.verify_message = report.detail


class RecorderFault(ssl.SSLError):
    """The assessment itself crashed. asyncio's and uvloop's handshake loops only catch
    `ssl.SSLError`; anything else would escape into the event loop and leave the connection
    hanging until the probe times out, so the real exception rides along in `recorder.fault`."""


@dataclass(eq=False)
class HandshakeRecorder:
    """What a probe expects of the server, and what the last handshake under it saw.

    Mutable on purpose: a keepalive session keeps one context (hence one recorder) per target, and
    the probe refreshes the expectations (e.g. after a trust-bundle reload) before each request.
    """

    anchors: TrustAnchors
    server_name: str | None
    expected_identity: str | None = None
    trust_domain: str | None = None
    trust_domain_aliases: frozenset[str] = frozenset()  # more trust domains accepted as ours
    enforce: bool = True  # False for insecure_skip_verify: record the verdict, never fail on it
    # The client certificate this attempt presents (its identity), or why it presents none when
    # the target names one: what a server's refusal is about.
    client_identity: str | None = None
    client_problem: str | None = None
    started: float | None = None  # perf_counter at the first do_handshake call of the connection
    finished: float | None = None
    report: TLSReport | None = None
    rejected: bool = False
    fault: BaseException | None = None
    verdicts: VerdictCache | None = None  # shared by the probes of one ProbeEnv
    # Told of the first record after the handshake (None: a session ticket or data; else the
    # server's alert). In TLS 1.3 the server judges our certificate after our handshake is done,
    # so its refusal only arrives then; set by probes that wait for that verdict.
    after_handshake: Callable[[ssl.SSLError | None], None] | None = None

    def new_attempt(self) -> None:
        """Forget per-attempt state; `report` stays, so a reused connection keeps its verdict."""
        self.started = None
        self.finished = None
        self.rejected = False
        self.fault = None

    @property
    def duration(self) -> float | None:
        if self.started is None or self.finished is None:
            return None
        return self.finished - self.started


def _der_chain(obj: ssl.SSLObject) -> list[bytes]:
    getter = getattr(obj, "get_unverified_chain", None)  # public from Python 3.13
    if getter is None:
        getter = obj._sslobj.get_unverified_chain  # type: ignore[attr-defined]  # _ssl since 3.10
    chain: Sequence[Any] | None = getter()
    out: list[bytes] = []
    for cert in chain or ():
        if isinstance(cert, bytes | bytearray):
            out.append(bytes(cert))
        else:
            out.append(cert.public_bytes(_ssl.ENCODING_DER))
    return out


_RECORDER: contextvars.ContextVar[HandshakeRecorder | None] = contextvars.ContextVar(
    "meshprobe_recorder", default=None
)


@contextlib.contextmanager
def recording_into(recorder: HandshakeRecorder) -> Iterator[None]:
    """Handshakes of connections opened inside this block report to `recorder`."""
    token = _RECORDER.set(recorder)
    try:
        yield
    finally:
        _RECORDER.reset(token)


class _RecordingSSLObject(ssl.SSLObject):
    _mp_started: float | None = None
    _mp_recorder: HandshakeRecorder | None = None

    def _recorder(self) -> HandshakeRecorder:
        """Bound at the first handshake step (in the opening task's context), then kept: later
        steps run from the transport's callbacks."""
        recorder = self._mp_recorder
        if recorder is None:
            recorder = _RECORDER.get() or cast(RecordingContext, self.context).recorder
            if recorder is None:
                raise RecorderFault("meshprobe: no recorder bound to this TLS connection")
            self._mp_recorder = recorder
        return recorder

    def do_handshake(self) -> None:
        recorder = self._recorder()
        if self._mp_started is None:
            # The transport calls us as soon as TCP is connected, then again after each read
            # until the handshake completes (SSLWantReadError in between).
            self._mp_started = time.perf_counter()
            recorder.started = self._mp_started
        super().do_handshake()
        try:
            cipher = self.cipher()
            assess = recorder.verdicts.assess if recorder.verdicts is not None else assess_chain
            report = assess(
                _der_chain(self),
                anchors=recorder.anchors,
                server_name=recorder.server_name,
                expected_identity=recorder.expected_identity,
                trust_domain=recorder.trust_domain,
                trust_domain_aliases=recorder.trust_domain_aliases,
                version=self.version(),
                cipher=cipher[0] if cipher else None,
            )
        except Exception as exc:
            recorder.finished = time.perf_counter()
            recorder.fault = exc
            raise RecorderFault(f"meshprobe: chain assessment failed: {exc!r}") from exc
        # The handshake ends when a client would go on: after the chain was judged, as Go's
        # (blackbox_exporter's) handshake includes verification.
        recorder.finished = time.perf_counter()
        recorder.report = report
        if not report.verified and recorder.enforce:
            recorder.rejected = True
            raise TrustRejected(report)

    def read(self, len: int = 1024, buffer: Any = None) -> Any:  # ssl's own parameter names
        """Pass on the first post-handshake record's meaning to `after_handshake`, if asked."""
        recorder = self._mp_recorder
        if recorder is None or recorder.after_handshake is None:
            return super().read(len, buffer)
        notify = recorder.after_handshake
        try:
            data = super().read(len, buffer)
        except ssl.SSLWantReadError:
            session = self.session
            if session is not None and session.has_ticket:  # a ticket: the server accepted us
                recorder.after_handshake = None
                notify(None)
            raise
        except ssl.SSLError as exc:
            recorder.after_handshake = None
            notify(exc)
            raise
        recorder.after_handshake = None
        notify(None)
        return data


class RecordingContext(ssl.SSLContext):
    """A client context whose connections report to the recorder bound by `recording_into`,
    else to its own `recorder`."""

    sslobject_class = _RecordingSSLObject
    recorder: HandshakeRecorder | None = None


def shared_context(*, alpn: Sequence[str] = ()) -> RecordingContext:
    """A client context for any number of targets; bind each connection's recorder with
    `recording_into`."""
    ctx = RecordingContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the verdict is ours, see the module docstring
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    return ctx


def recording_context(recorder: HandshakeRecorder, *, alpn: Sequence[str] = ()) -> RecordingContext:
    """A fresh client context of its own, reporting to `recorder` unless another is bound."""
    ctx = shared_context(alpn=alpn)
    ctx.recorder = recorder
    return ctx
