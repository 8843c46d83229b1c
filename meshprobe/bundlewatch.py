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

import structlog

from meshprobe.pemfile import read_pem_file
from meshprobe.tlscheck import TrustAnchors

log = structlog.get_logger(__name__)
_LOGGED_ROOTS = 10


@dataclass(frozen=True, slots=True)
class _Reading:
    data: bytes | None  # None: the file could not be read
    anchors: TrustAnchors | None  # parsed only when the content is new and valid
    error: str | None


class BundleWatcher:
    def __init__(self, path: str, *, on_change: Callable[[TrustAnchors], None]) -> None:
        self.path = path
        self._on_change = on_change
        self._good = read_pem_file(path)  # the content our roots came from
        self._seen = self._good
        self.success = True

    def check(self) -> bool | None:
        """Re-read the file: None when unchanged, True when new roots were adopted, False when the
        new content was rejected (the previous roots stay)."""
        return self._apply(self._read())

    async def check_off_loop(self) -> bool | None:
        """`check`, with the reading and parsing in a worker thread: a bundle of thousands of
        roots takes over a second to parse, which must not stall the probes' event loop."""
        return self._apply(await asyncio.to_thread(self._read))

    def _read(self) -> _Reading:
        """The file's content and, when it is new, its roots or why they are refused. Reads our
        state, changes none of it (it may run in a worker thread)."""
        try:
            data = read_pem_file(self.path)
        except ValueError as exc:  # gone, a directory, too big: keep the roots we have
            return _Reading(None, None, str(exc))
        if data in (self._good, self._seen):
            return _Reading(data, None, None)
        try:
            return _Reading(data, TrustAnchors.from_pem(data, source=self.path), None)
        except ValueError as exc:
            return _Reading(data, None, str(exc))

    def _apply(self, reading: _Reading) -> bool | None:
        data = reading.data
        if data is None or reading.error is not None:
            if data is not None:
                self._seen = data
            return self._reject(reading.error or "unreadable")
        if data == self._good:
            self._seen = data
            self.success = True  # e.g. a bad replacement was rolled back
            return None
        if data == self._seen or reading.anchors is None:
            return None if self.success else False
        self._seen = data
        anchors = reading.anchors
        self._good = data
        self.success = True
        self._on_change(anchors)
        fingerprints = sorted(anchors.fingerprints())
        # A few fingerprints identify a mesh bundle; an OS-sized one would make a huge line.
        log.info(
            "trust bundle reloaded",
            path=self.path,
            root_count=len(fingerprints),
            roots=fingerprints[:_LOGGED_ROOTS],
        )
        return True

    def _reject(self, reason: str) -> bool:
        if self.success:  # one line per failure, not per poll
            log.error(
                "trust bundle rejected, keeping the previous roots", path=self.path, reason=reason
            )
        self.success = False
        return False
