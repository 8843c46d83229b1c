"""Identity exchange with the meshprobe instances of the other clusters.

Each peer's /v1/identity is fetched on the probe interval through the same aiohttp session and TLS
recorder the probes use. The question it answers is the seed guide's first best practice, "a
shared root CA is mandatory": `meshprobe_peer_trust_match` is 1 while the peer's roots and ours
share at least one root (a rotation holds old and new roots side by side), 0 when disjoint.

A peer's document is untrusted input. Whatever is wrong with it (too big, not JSON, nested beyond
the decoder's recursion limit, the wrong shape) is one `IdentityError`: the peer is down with a
detail naming the problem, logged once per change, never an internal error with a traceback.
A truncated document (a peer whose bundle has more roots than `IDENTITY_MAX_BYTES` holds) is
valid; when none of the roots it lists is ours, whether we share a root is unknown, not "no".
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import structlog

from meshprobe.config.targets import make_target
from meshprobe.model import MetricOptions, Peer, Target, redact_url
from meshprobe.probes import ProbeEnv
from meshprobe.state.instance import PeerStatus, trust_match
from meshprobe.tasks import TaskSet
from meshprobe.trust.identity import IDENTITY_MAX_BYTES, IdentityError, parse_identity
from meshprobe.trust.record import HandshakeRecorder, recording_into

log = structlog.get_logger(__name__)

PEER_TARGET_NAME = "meshprobe/echo"


def peer_echo_targets(
    peer: Peer,
    *,
    interval: float,
    timeout: float,
    budget: float,
    metrics: MetricOptions,
) -> list[Target]:
    """Each peer's /v1/echo is an ordinary remote edge, so the cluster x cluster matrix has
    latency for every pair even where no application service is exported yet; a peer with a
    gRPC health echo (`grpc_url`) is also probed there, the same edge name with probe="grpc"."""
    echoes = [(peer.url.rstrip("/") + "/v1/echo", "")]
    if peer.grpc_url is not None:
        echoes.append((peer.grpc_url, "meshprobe"))
    return [
        make_target(
            name=PEER_TARGET_NAME,
            url=url,
            cluster=peer.cluster,
            own_cluster="",  # a peer is another cluster: always remote
            interval=interval,
            timeout=timeout,
            budget=budget,
            local_budget=budget,
            remote_budget=budget,
            discovery="peer",
            metrics=metrics,
            grpc_service=service,
        )
        for url, service in echoes
    ]


async def _read_bounded(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    body = bytearray()
    async for chunk in resp.content.iter_chunked(16 * 1024):
        body += chunk
        if len(body) > limit:
            raise IdentityError(f"identity document larger than {limit} bytes")
    return bytes(body)


async def check_peer(peer: Peer, env: ProbeEnv, *, limit: float) -> PeerStatus:
    url = peer.url.rstrip("/") + "/v1/identity"
    parts = urlsplit(url)
    recorder = None
    ssl_arg: Any = None
    if parts.scheme == "https":
        recorder = HandshakeRecorder(
            anchors=env.anchors,
            server_name=parts.hostname,
            trust_domain=env.trust_domain,
            trust_domain_aliases=env.trust_domain_aliases,
        )
        ssl_arg = env.context(("http/1.1",))
    try:
        with recording_into(recorder) if recorder is not None else contextlib.nullcontext():
            async with (
                asyncio.timeout(limit),
                env.fresh_session.get(url, ssl=ssl_arg, allow_redirects=False) as resp,
            ):
                if resp.status != 200:
                    raise IdentityError(f"identity answered HTTP {resp.status}")
                body = await _read_bounded(resp, IDENTITY_MAX_BYTES)
        identity = parse_identity(body, expected_cluster=peer.cluster)
    except TimeoutError:
        return PeerStatus(False, frozenset(), f"no identity within {limit}s")
    except IdentityError as exc:
        return PeerStatus(False, frozenset(), str(exc))
    except (aiohttp.ClientError, OSError) as exc:
        report = recorder.report if recorder is not None else None
        if report is not None and not report.verified:
            untrusted = report.reason is not None and report.reason.value == "tls_untrusted"
            return PeerStatus(
                False, frozenset(), f"{report.reason}: {report.detail}", tls_untrusted=untrusted
            )
        return PeerStatus(False, frozenset(), f"{type(exc).__name__}: {exc}")
    if identity.truncated:
        listed = len(identity.roots)
        detail = f"ok (truncated: lists {listed} of its {identity.root_count} roots)"
        return PeerStatus(True, identity.roots, detail, partial=True)
    return PeerStatus(True, identity.roots, "ok")


class PeerWatcher:
    """One identity-exchange loop per peer; each check lands in `statuses` (the instance state the
    collector and status pages read) and `on_check(cluster)` is called after it."""

    def __init__(
        self,
        *,
        env: ProbeEnv,
        statuses: dict[str, PeerStatus],
        our_roots: Callable[[], frozenset[str] | None],
        interval: float,
        timeout: float,
        on_check: Callable[[str], None] = lambda _cluster: None,
    ) -> None:
        self._env = env
        self._statuses = statuses
        self._our_roots = our_roots
        self._interval = interval
        self._timeout = timeout
        self._on_check = on_check
        self._loops: TaskSet[Peer] = TaskSet("peers")

    def set_peers(self, peers: Iterable[Peer], *, interval: float, timeout: float) -> None:
        wanted = set(peers)
        self._interval, self._timeout = interval, timeout
        for peer in [p for p in self._loops if p not in wanted]:
            self._loops.cancel(peer)
            self._statuses.pop(peer.cluster, None)
        for peer in wanted - set(self._loops):
            self._loops.start(peer, partial(self._loop, peer), label=peer.cluster)

    async def aclose(self) -> None:
        await self._loops.aclose()

    async def _loop(self, peer: Peer) -> None:
        while True:
            previous = self._statuses.get(peer.cluster)
            try:
                status = await check_peer(peer, self._env, limit=self._timeout)
            except Exception as exc:  # a bug here must not stop the exchange
                status = PeerStatus(False, frozenset(), f"internal error: {exc!r}")
                if previous is None or previous.detail != status.detail:  # not every interval
                    log.exception("peer check failed unexpectedly", peer_cluster=peer.cluster)
            self._statuses[peer.cluster] = status
            self._log_change(peer, previous, status)
            self._on_check(peer.cluster)
            await asyncio.sleep(self._interval)

    def _log_change(self, peer: Peer, old: PeerStatus | None, new: PeerStatus) -> None:
        ours = self._our_roots()
        match = trust_match(new, ours)
        old_match = trust_match(old, ours) if old is not None else None
        if old is not None and (old.up, old.detail, old_match) == (new.up, new.detail, match):
            return
        fields = {"peer_cluster": peer.cluster, "url": redact_url(peer.url), "detail": new.detail}
        if not new.up:
            log.warning("peer unreachable or invalid", **fields)
        elif match is False:
            log.error("peer does not share a root CA with us", **fields)
        elif match is None and new.partial:
            log.warning(
                "peer identity truncated and none of the roots it lists is ours: "
                "whether we share a root is unknown",
                **fields,
            )
        else:
            log.info("peer identity ok", trust_match=match, **fields)
