"""What every probe shares: live client objects, trust anchors, and the attempt in progress.

The daemon builds one `ProbeEnv` at start and hands it to every probe, so sessions, connectors and
parsed trust bundles are made once rather than per probe. The attempt in progress lives in a
context variable so that `run_probe`, which owns the timeout, can still report the phases a probe
had measured when the deadline cut it off, without every probe catching cancellation itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import os
import re
import socket
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, Literal, Protocol

import aiohttp

from meshprobe.model import USER_AGENT, Phase, ProbeResult, Reason, Target, TCPStats, TLSReport
from meshprobe.probes.tcpinfo import read_tcp_info
from meshprobe.trust.anchors import TrustAnchors
from meshprobe.trust.cache import VerdictCache
from meshprobe.trust.clientcert import ClientCertificates, ClientPair
from meshprobe.trust.record import HandshakeRecorder, RecordingContext, shared_context

__all__ = [
    "Attempt",
    "KeepAlive",
    "ProbeEnv",
    "ProbeFailed",
    "TraceEvent",
    "sockets_of",
]


# The longest detail a result carries (logs, `meshprobe probe`): enough for any real cause.
DETAIL_LIMIT = 1024

# aiohttp's own timeouts are off: `run_probe` enforces `target.timeout` over the whole probe.
_NO_TIMEOUT = aiohttp.ClientTimeout(total=None, connect=None, sock_connect=None, sock_read=None)


class ProbeFailed(Exception):
    """A failure already mapped to a reason, raised out of the helpers probes share (resolve,
    connect, the TLS handshake) and out of a probe's own steps."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(eq=False)
class Attempt:
    """What one probe has learnt so far; `run_probe` reads it when the deadline strikes."""

    started: float = field(default_factory=time.perf_counter)
    phases: dict[Phase, float] = field(default_factory=dict)
    tls: TLSReport | None = None
    status_code: int | None = None
    served_by: str | None = None
    body_bytes: int = 0
    tcp: TCPStats | None = None  # the kernel's view of the fresh connections read so far
    grpc_status: int | None = None
    grpc_serving: int | None = None
    # Every socket aiohttp made for this attempt, in order: happy eyeballs may make several per
    # connection, and only the winner is still open once the request has been sent.
    sockets: list[socket.socket] = field(default_factory=list)
    # Turn raw timestamps into `phases`; added by probes that measure through callbacks, run
    # before every result, including the one `run_probe` makes on timeout.
    settlers: list[Callable[[Attempt], None]] = field(default_factory=list)

    def result(
        self, reason: Reason | None = None, detail: str = "", *, ended: float | None = None
    ) -> ProbeResult:
        """Success exactly when there is no reason: one place decides, so they cannot disagree.
        `ended` is when the client had what it came for, if the probe went on checking after
        that (a tls probe waiting for the server's verdict on a finished handshake)."""
        for settle in self.settlers:
            settle(self)
        # The wall clock, always: phases explain a duration, they never replace it.
        duration = (time.perf_counter() if ended is None else ended) - self.started
        text = detail or ("ok" if reason is None else reason.value)
        if len(text) > DETAIL_LIMIT:  # a hostile server must not write our log lines
            text = f"{text[: DETAIL_LIMIT - 40]}... ({len(text) - DETAIL_LIMIT + 40} chars more)"
        return ProbeResult(
            success=reason is None,
            duration=duration,
            reason=reason,
            detail=text,
            phases=dict(self.phases),
            status_code=self.status_code,
            served_by=self.served_by,
            tls=self.tls,
            body_bytes=self.body_bytes,
            tcp=self.tcp,
            grpc_status=self.grpc_status,
            grpc_serving=self.grpc_serving,
        )

    def note_tcp(self, sock: Any) -> None:
        """Add the kernel's statistics of a fresh connection that is still open."""
        stats = read_tcp_info(sock)
        if stats is not None:
            self.tcp = stats if self.tcp is None else self.tcp.plus(stats)


# Probes receive their attempt as an argument. Only aiohttp's socket factory cannot: aiohttp
# calls it with the address alone, inside the probe's task, so the attempt reaches it through
# this context variable, set by `sockets_of` around the request.
_SOCKETS_OF: contextvars.ContextVar[Attempt | None] = contextvars.ContextVar(
    "meshprobe_sockets_of", default=None
)


def _attempt_socket(addr_info: Any) -> socket.socket:
    """aiohttp's socket factory: the socket is noted on the attempt making the request, so the
    probe can read the kernel's TCP_INFO for it while the connection is open."""
    family, kind, proto, _, _ = addr_info
    sock = socket.socket(family=family, type=kind, proto=proto)
    attempt = _SOCKETS_OF.get()
    if attempt is not None:
        attempt.sockets.append(sock)
    return sock


@contextlib.contextmanager
def sockets_of(attempt: Attempt) -> Iterator[None]:
    """Sockets aiohttp opens inside this block (happy eyeballs may open several) go to `attempt`."""
    token = _SOCKETS_OF.set(attempt)
    try:
        yield
    finally:
        _SOCKETS_OF.reset(token)


TraceEvent = Literal["dns_start", "dns_end", "conn_start", "conn_end", "reuse", "sent", "redirect"]


def _forward(event: TraceEvent) -> Callable[..., Coroutine[Any, Any, None]]:
    async def forward(_session: aiohttp.ClientSession, ctx: SimpleNamespace, _params: Any) -> None:
        sink = getattr(ctx, "trace_request_ctx", None)
        if sink is not None and hasattr(sink, "trace"):
            sink.trace(event)

    return forward


def _trace_config() -> aiohttp.TraceConfig:
    """One TraceConfig for every session; each request brings its own sink, so concurrent
    probes never share timing state."""
    tc = aiohttp.TraceConfig()
    tc.on_dns_resolvehost_start.append(_forward("dns_start"))
    tc.on_dns_resolvehost_end.append(_forward("dns_end"))
    tc.on_connection_create_start.append(_forward("conn_start"))
    tc.on_connection_create_end.append(_forward("conn_end"))
    tc.on_connection_reuseconn.append(_forward("reuse"))
    tc.on_request_headers_sent.append(_forward("sent"))
    tc.on_request_redirect.append(_forward("redirect"))
    tc.freeze()
    return tc


class Closable(Protocol):
    def close(self) -> None: ...


@dataclass(eq=False)
class KeepAlive:
    """One target's persistent session: its context must be the same object across requests,
    because aiohttp pools connections by (host, port, ssl context)."""

    session: aiohttp.ClientSession
    context: RecordingContext | None  # the shared context of the target's ALPN list


@dataclass(frozen=True)
class _CachedAnchors:
    mtime_ns: int
    size: int
    anchors: TrustAnchors


@dataclass(eq=False)
class ProbeEnv:
    """Live objects shared by all probes; created once by the daemon."""

    source_cluster: str
    anchors: TrustAnchors  # the default bundle; the daemon swaps it on a trust reload
    trust_domain: str | None
    # Other trust domains accepted as ours (Istio trust-domain aliases, a mesh mid-migration).
    trust_domain_aliases: frozenset[str] = frozenset()
    verdicts: VerdictCache = field(default_factory=VerdictCache, init=False, repr=False)
    _fresh: aiohttp.ClientSession | None = field(default=None, init=False, repr=False)
    _trace: aiohttp.TraceConfig | None = field(default=None, init=False, repr=False)
    _recorders: dict[Target, HandshakeRecorder] = field(
        default_factory=dict, init=False, repr=False
    )
    # Keyed by ALPN list and client certificate (its leaf's fingerprint), see `context`.
    _contexts: dict[tuple[tuple[str, ...], str | None], RecordingContext] = field(
        default_factory=dict, init=False, repr=False
    )
    clients: ClientCertificates = field(default_factory=ClientCertificates, init=False)
    _keepalive: dict[Target, KeepAlive] = field(default_factory=dict, init=False, repr=False)
    # Connections a probe kind keeps for a target across probes (grpc keepalive), closed when
    # the target goes.
    _kept: dict[Target, Closable] = field(default_factory=dict, init=False, repr=False)
    _ca_files: dict[str, _CachedAnchors] = field(default_factory=dict, init=False, repr=False)
    _patterns: dict[str, re.Pattern[str]] = field(default_factory=dict, init=False, repr=False)
    _closing: set[asyncio.Task[None]] = field(default_factory=set, init=False, repr=False)

    @classmethod
    async def create(
        cls, *, source_cluster: str, anchors: TrustAnchors, trust_domain: str | None
    ) -> ProbeEnv:
        env = cls(source_cluster=source_cluster, anchors=anchors, trust_domain=trust_domain)
        env._trace = _trace_config()
        # force_close: every probe pays DNS, connect and TLS, so they are measured every time;
        # no DNS cache, for the same reason (tcp and tls probes resolve every time too, as
        # blackbox_exporter does); limit=0 because the scheduler already bounds concurrency.
        env._fresh = env._session(
            aiohttp.TCPConnector(
                force_close=True, limit=0, use_dns_cache=False, socket_factory=_attempt_socket
            )
        )
        return env

    def _session(self, connector: aiohttp.TCPConnector) -> aiohttp.ClientSession:
        assert self._trace is not None
        return aiohttp.ClientSession(
            connector=connector,
            timeout=_NO_TIMEOUT,
            trace_configs=[self._trace],
            cookie_jar=aiohttp.DummyCookieJar(),  # probes must not carry state between runs
            headers={"User-Agent": USER_AGENT},
        )

    @property
    def fresh_session(self) -> aiohttp.ClientSession:
        if self._fresh is None:
            raise RuntimeError("ProbeEnv used before create() or after aclose()")
        return self._fresh

    def keepalive(self, target: Target, context: RecordingContext | None) -> KeepAlive:
        """The target's persistent session, made on first use."""
        entry = self._keepalive.get(target)
        if entry is None:
            if self._fresh is None:
                raise RuntimeError("ProbeEnv used before create() or after aclose()")
            # Keep the idle connection across at least one interval, else nothing is reused.
            idle = max(15.0, target.interval + target.timeout + 5.0)
            connector = aiohttp.TCPConnector(
                limit=1,
                keepalive_timeout=idle,
                use_dns_cache=False,
                socket_factory=_attempt_socket,
            )
            entry = KeepAlive(self._session(connector), context)
            self._keepalive[target] = entry
        return entry

    def anchors_for(self, target: Target) -> TrustAnchors:
        """The target's own ca_file when it has one (re-read when the file changes, so a rotated
        bundle mounted from a ConfigMap is picked up), else the shared bundle."""
        path = target.tls.ca_file
        if path is None:
            return self.anchors
        st = os.stat(path)
        cached = self._ca_files.get(path)
        if cached is None or (cached.mtime_ns, cached.size) != (st.st_mtime_ns, st.st_size):
            cached = _CachedAnchors(st.st_mtime_ns, st.st_size, TrustAnchors.from_file(path))
            self._ca_files[path] = cached
        return cached.anchors

    def pattern(self, regex: str) -> re.Pattern[str]:
        compiled = self._patterns.get(regex)
        if compiled is None:
            compiled = self._patterns[regex] = re.compile(regex)
        return compiled

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run clean-up that must not delay a result; `aclose` waits for it."""
        task = asyncio.get_running_loop().create_task(coro)
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def context(self, alpn: tuple[str, ...], client: ClientPair | None = None) -> RecordingContext:
        """The TLS client context of every target with this ALPN list and client certificate,
        made once: an OpenSSL 3.0 context costs about 13 KB (130 MB at 10,000 targets) and a
        quarter of a fresh https probe's CPU to build. A rotated certificate is a new key; the
        contexts of the pair it replaced are dropped (aiohttp pools connections by context, so
        from the next probe on every connection presents the new certificate)."""
        key = (alpn, client.fingerprint_sha256 if client is not None else None)
        ctx = self._contexts.get(key)
        if ctx is None:
            ctx = shared_context(alpn=alpn)
            if client is not None:
                client.load_into(ctx)
                in_use = {p.fingerprint_sha256 for s in self.clients if (p := s.pair) is not None}
                for stale in [k for k in self._contexts if k[1] is not None and k[1] not in in_use]:
                    del self._contexts[stale]
            self._contexts[key] = ctx
        return ctx

    def client_pair(self, target: Target) -> ClientPair | None:
        """The client certificate the target presents now (re-read if its files changed)."""
        files = target.tls.client_pair
        if files is None:
            return None
        return self.clients.source(*files).current()

    def recorder(self, target: Target) -> HandshakeRecorder:
        """The target's handshake recorder, made once: a keepalive connection's verdict stays
        with it. One loop per target means no two probes of a target share it at once."""
        recorder = self._recorders.get(target)
        if recorder is None:
            recorder = self._recorders[target] = HandshakeRecorder(
                anchors=self.anchors, server_name=None
            )
        return recorder

    def kept(self, target: Target) -> Closable | None:
        return self._kept.get(target)

    def keep(self, target: Target, connection: Closable) -> None:
        """Keep `connection` for the target's next probes (the one it replaces is closed)."""
        old = self._kept.get(target)
        if old is not None and old is not connection:
            old.close()
        self._kept[target] = connection

    def forget(self, target: Target) -> None:
        """Drop a removed target's context and keepalive session; the session is closed in the
        background because the scheduler calls this from synchronous code."""
        self._recorders.pop(target, None)
        kept = self._kept.pop(target, None)
        if kept is not None:
            kept.close()
        entry = self._keepalive.pop(target, None)
        if entry is None:
            return
        self.spawn(entry.session.close())

    async def aclose(self) -> None:
        for kept in self._kept.values():
            kept.close()
        self._kept.clear()
        sessions = [e.session for e in self._keepalive.values()]
        self._keepalive.clear()
        if self._fresh is not None:
            sessions.append(self._fresh)
            self._fresh = None
        for session in sessions:
            await session.close()
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)
