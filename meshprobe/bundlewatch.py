"""Follow the trust bundle file without a restart.

Kubernetes updates a mounted ConfigMap by swapping a `..data` symlink, so watching the file's
inode or mtime misses changes; reading the (small) file on a short period and comparing bytes
catches every swap. A replacement that does not parse keeps the roots we had: during a botched
rotation, probing on stale roots beats probing on none.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import structlog

from meshprobe.pemfile import read_pem_file
from meshprobe.tlscheck import TrustAnchors

log = structlog.get_logger(__name__)
_LOGGED_ROOTS = 10


class BundleWatcher:
    def __init__(
        self, path: str, *, initial: TrustAnchors, on_change: Callable[[TrustAnchors], None]
    ) -> None:
        self.path = path
        self._on_change = on_change
        self._good = read_pem_file(path)  # the content our roots came from
        self._seen = self._good
        self.anchors = initial
        self.success = True
        self.timestamp = time.time()

    def check(self) -> bool | None:
        """Re-read the file: None when unchanged, True when new roots were adopted, False when the
        new content was rejected (the previous roots stay)."""
        try:
            data = read_pem_file(self.path)
        except ValueError as exc:  # gone, a directory, too big: keep the roots we have
            return self._reject(str(exc))
        if data == self._good:
            self._seen = data
            self.success = True  # e.g. a bad replacement was rolled back
            return None
        if data == self._seen:
            return None if self.success else False
        self._seen = data
        try:
            anchors = TrustAnchors.from_pem(data, source=self.path)
        except ValueError as exc:
            return self._reject(str(exc))
        self._good = data
        self.anchors = anchors
        self.success = True
        self.timestamp = time.time()
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

    async def run(self, period: float) -> None:
        while True:
            await asyncio.sleep(period)
            self.check()
