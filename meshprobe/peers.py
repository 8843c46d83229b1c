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
import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import structlog
from prometheus_client.core import GaugeMetricFamily, Metric

from meshprobe.config.targets import make_target
from meshprobe.metrics import names as m
from meshprobe.model import Target, redact_url
from meshprobe.probes import ProbeEnv
from meshprobe.tasks import cancel_and_wait
from meshprobe.trust.identity import IDENTITY_MAX_BYTES
from meshprobe.trust.record import HandshakeRecorder, recording_context

log = structlog.get_logger(__name__)

_FINGERPRINT = re.compile(r"[0-9a-f]{64}")
PEER_TARGET_NAME = "meshprobe/echo"


@dataclass(frozen=True, slots=True)
class Peer:
    cluster: str
    url: str  # base URL of the peer's listener


@dataclass(frozen=True, slots=True)
class PeerStatus:
    up: bool
    roots: frozenset[str]  # the peer's root fingerprints (empty when down)
    detail: str
    tls_untrusted: bool = False  # an https peer whose chain our bundle rejects
    partial: bool = False  # the peer's document lists only some of its roots (truncated)


def peer_echo_target(peer: Peer, *, interval: float, timeout: float, budget: float) -> Target:
    """Each peer's /v1/echo is an ordinary remote edge, so the cluster x cluster matrix has
    latency for every pair even where no application service is exported yet."""
    return make_target(
        name=PEER_TARGET_NAME,
        url=peer.url.rstrip("/") + "/v1/echo",
        cluster=peer.cluster,
        own_cluster="",  # a peer is another cluster: always remote
        interval=interval,
        timeout=timeout,
        budget=budget,
        local_budget=budget,
        remote_budget=budget,
        discovery="peer",
    )


class IdentityError(Exception):
    """The peer answered, but not with a usable identity document."""


@dataclass(frozen=True, slots=True)
class PeerIdentity:
    roots: frozenset[str]  # the fingerprints the document lists
    root_count: int  # roots in the peer's bundle: more than listed when truncated
    truncated: bool


def _decode(body: bytes) -> object:
    try:
        return json.loads(body)
    except RecursionError:
        # CPython's decoder recurses per nesting level: 30k '[' in 60 KB exhaust the stack limit.
        raise IdentityError("identity is not JSON: nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, int too long to convert
        raise IdentityError(f"identity is not JSON: {exc}") from None


def parse_identity(body: bytes, *, expected_cluster: str) -> PeerIdentity:
    """Validate a peer's identity document (schema in docs/identity.md)."""
    doc = _decode(body)
    if not isinstance(doc, dict):
        raise IdentityError("identity is not a JSON object")
    cluster = doc.get("cluster")
    if not isinstance(cluster, str):
        raise IdentityError("identity has no 'cluster' string")
    if cluster != expected_cluster:
        raise IdentityError(
            f"peer configured as cluster {expected_cluster!r} says it is {cluster!r}"
        )
    roots = doc.get("roots")
    if not isinstance(roots, list):
        raise IdentityError("identity has no 'roots' list")
    fingerprints = set()
    for i, root in enumerate(roots):
        fp = root.get("fingerprint_sha256") if isinstance(root, dict) else None
        if not isinstance(fp, str) or not _FINGERPRINT.fullmatch(fp):
            raise IdentityError(f"roots[{i}].fingerprint_sha256 is not a lowercase SHA-256 hex")
        fingerprints.add(fp)
    truncated = doc.get("truncated", False)
    if not isinstance(truncated, bool):
        raise IdentityError("identity 'truncated' is not a boolean")
    root_count = doc.get("root_count", len(roots))
    if type(root_count) is not int or root_count < len(roots):
        raise IdentityError("identity 'root_count' is not an integer at least the roots listed")
    return PeerIdentity(frozenset(fingerprints), root_count, truncated)


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
        ssl_arg = recording_context(recorder, alpn=["http/1.1"])
    try:
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
    def __init__(
        self,
        *,
        env: ProbeEnv,
        our_roots: Callable[[], frozenset[str] | None],
        interval: float,
        timeout: float,
    ) -> None:
        self._env = env
        self._our_roots = our_roots
        self._interval = interval
        self._timeout = timeout
        self._loops: dict[Peer, asyncio.Task[None]] = {}
        self.status: dict[str, PeerStatus] = {}
        self.changed = asyncio.Event()  # set after every check; tests wait on it

    def set_peers(self, peers: Iterable[Peer], *, interval: float, timeout: float) -> None:
        wanted = set(peers)
        if (interval, timeout) != (self._interval, self._timeout):
            self._interval, self._timeout = interval, timeout
        for peer in [p for p in self._loops if p not in wanted]:
            self._loops.pop(peer).cancel()
            self.status.pop(peer.cluster, None)
        for peer in wanted - set(self._loops):
            self._loops[peer] = asyncio.create_task(self._loop(peer), name=f"peer {peer.cluster}")

    async def aclose(self) -> None:
        loops = list(self._loops.values())
        self._loops.clear()
        await cancel_and_wait(loops)

    async def _loop(self, peer: Peer) -> None:
        while True:
            previous = self.status.get(peer.cluster)
            try:
                status = await check_peer(peer, self._env, limit=self._timeout)
            except Exception as exc:  # a bug here must not stop the exchange
                status = PeerStatus(False, frozenset(), f"internal error: {exc!r}")
                if previous is None or previous.detail != status.detail:  # not every interval
                    log.exception("peer check failed unexpectedly", peer_cluster=peer.cluster)
            self.status[peer.cluster] = status
            self._log_change(peer, previous, status)
            self.changed.set()
            await asyncio.sleep(self._interval)

    def trust_match(self, status: PeerStatus) -> bool | None:
        ours = self._our_roots()
        if status.tls_untrusted:
            return False  # the peer's chain does not lead to any of our roots
        if ours is None or not status.up:
            return None
        if ours & status.roots:
            return True
        return None if status.partial else False  # an unlisted root may be one we share

    def _log_change(self, peer: Peer, old: PeerStatus | None, new: PeerStatus) -> None:
        match = self.trust_match(new)
        old_match = self.trust_match(old) if old is not None else None
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

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            m.PEER_UP,
            "Whether the peer's identity document was fetched and valid.",
            labels=["source_cluster", "peer_cluster"],
        )
        match = GaugeMetricFamily(
            m.PEER_TRUST_MATCH,
            "1 when the peer's trust roots and ours share a root, 0 when disjoint.",
            labels=["source_cluster", "peer_cluster"],
        )
        src = self._env.source_cluster
        for cluster, status in sorted(self.status.items()):
            up.add_metric([src, cluster], 1.0 if status.up else 0.0)
            verdict = self.trust_match(status)
            if verdict is not None:
                match.add_metric([src, cluster], 1.0 if verdict else 0.0)
        yield up
        yield match
