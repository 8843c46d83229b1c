"""Follow the trust bundle file without a restart.

Kubernetes updates a mounted ConfigMap by swapping a `..data` symlink, so watching the file's
inode or mtime misses changes; reading the (small) file on a short period and comparing bytes
catches every swap. A replacement that does not parse keeps the roots we had: during a botched
rotation, probing on stale roots beats probing on none.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

import structlog

from meshprobe.trust.anchors import TrustAnchors
from meshprobe.trust.pem import read_pem_file, shown

log = structlog.get_logger(__name__)
_LOGGED_ROOTS = 10
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class _Reading:
    data: bytes | None  # None: the file could not be read
    anchors: TrustAnchors | None  # parsed only when the content is new and valid
    error: str | None


def _describe_roots(anchors: TrustAnchors) -> dict[str, object]:
    fingerprints = sorted(anchors.fingerprints())
    # A few fingerprints identify a mesh bundle; an OS-sized one would make a huge line.
    return {"root_count": len(fingerprints), "roots": fingerprints[:_LOGGED_ROOTS]}


class KeepLastGood(Generic[T]):
    """The one policy every file-backed trust input follows (the bundle file here, the ConfigMap
    in `discovery.trustmap`, our client certificate in `clientcert`): content that parses replaces
    what is in use; content that does not, or its absence, keeps what we had, because during a
    botched rotation probing on stale roots (or a still-valid older certificate) beats probing on
    none. Each rejection reason is logged (and counted) once; `success` says whether the source's
    current content is the one in use. `what` names the input in the log lines ("trust bundle")
    and `kept` what a rejection keeps ("the previous roots")."""

    def __init__(
        self,
        *,
        source: str,
        adopt: Callable[[T], None],
        on_rejected: Callable[[], None] | None = None,
        initial: bytes | None = None,
        what: str = "trust bundle",
        kept: str = "the previous roots",
        describe: Callable[[T], dict[str, object]] | None = None,
        source_key: str = "source",
    ) -> None:
        self.source = source
        self._adopt = adopt
        self._on_rejected = on_rejected
        self._good = initial  # the content in use came from
        self.rejected: str | None = None  # the last reason, so each is logged once
        self.success = True
        self._what, self._kept, self._describe = what, kept, describe
        self._source_key = source_key

    def in_use(self, content: bytes) -> bool:
        return content == self._good

    def keep(self) -> None:
        """The source shows the content in use (again, e.g. a bad replacement rolled back)."""
        self.rejected = None
        self.success = True

    def adopt(self, content: bytes, value: T) -> None:
        self._good = content
        self.keep()
        self._adopt(value)
        fields = self._describe(value) if self._describe is not None else {}
        log.info(f"{self._what} loaded", **{self._source_key: self.source}, **fields)

    def reject(self, reason: str) -> None:
        if reason != self.rejected:
            log.error(
                f"{self._what} rejected, keeping {self._kept}",
                **{self._source_key: self.source},
                reason=reason,
                have_previous=self._good is not None,
            )
            if self._on_rejected is not None:
                self._on_rejected()
        self.rejected = reason
        self.success = False


class BundleWatcher:
    """The bundle file, polled (see the module docstring) under the keep-last-good policy."""

    def __init__(self, path: str, *, on_change: Callable[[TrustAnchors], None]) -> None:
        self.path = path
        self._seen = read_pem_file(path)  # the last content read, good or not
        self._policy: KeepLastGood[TrustAnchors] = KeepLastGood(
            source=path, adopt=on_change, initial=self._seen, describe=_describe_roots
        )

    @property
    def success(self) -> bool:
        return self._policy.success

    def check(self) -> bool | None:
        """Re-read the file: None when unchanged, True when new roots were adopted, False when the
        new content was rejected (the previous roots stay)."""
        return self._apply(self._read())

    async def check_off_loop(self) -> bool | None:
        """`check`, with the reading and parsing in a worker thread: a bundle of thousands of
        roots takes over a second to parse, which must not stall the probes' event loop."""
        return self._apply(await asyncio.to_thread(self._read))

    async def watch(self, period: float, on_check: Callable[[bool], None]) -> None:
        """Poll every `period` until cancelled; `on_check(success)` after each poll. An unexpected
        error is logged and polling goes on: trust reloading must never end silently."""
        while True:
            await asyncio.sleep(period)
            try:
                await self.check_off_loop()
            except Exception:
                log.exception("trust bundle check failed unexpectedly", path=shown(self.path))
            on_check(self.success)

    def _read(self) -> _Reading:
        """The file's content and, when it is new, its roots or why they are refused. Reads our
        state, changes none of it (it may run in a worker thread)."""
        try:
            data = read_pem_file(self.path)
        except ValueError as exc:  # gone, a directory, too big: keep the roots we have
            return _Reading(None, None, str(exc))
        if data == self._seen or self._policy.in_use(data):
            return _Reading(data, None, None)
        try:
            return _Reading(data, TrustAnchors.from_pem(data, source=self.path), None)
        except ValueError as exc:
            return _Reading(data, None, str(exc))

    def _apply(self, reading: _Reading) -> bool | None:
        policy = self._policy
        data = reading.data
        if data is not None:
            self._seen = data
        if data is None or reading.error is not None:
            policy.reject(reading.error or "unreadable")
            return False
        if policy.in_use(data):
            policy.keep()
            return None
        if reading.anchors is None:  # the same content as last time, already judged
            return None if policy.success else False
        policy.adopt(data, reading.anchors)
        return True
