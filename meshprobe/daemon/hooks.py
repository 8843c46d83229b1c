"""What a program that embeds a Daemon may observe, passed in explicitly.

The demo's live table, the benchmark's timing reader and the tests all need to know when
something happened (a probe result, a reconcile, a trust-file poll) without polling and without
the daemon growing attributes that exist only for them. Each hook is a list of plain callbacks,
called on the event loop; they must not block, and an exception in one is logged, never raised into
the daemon.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from meshprobe.model import ProbeResult, Target

__all__ = ["Hooks", "ResultListener"]

ResultListener = Callable[[Target, ProbeResult], None]

log = structlog.get_logger(__name__)


@dataclass
class Hooks:
    result: list[ResultListener] = field(default_factory=list)  # every probe result
    reconciled: list[Callable[[int, int], None]] = field(default_factory=list)  # added, removed
    bundle_checked: list[Callable[[bool], None]] = field(default_factory=list)  # reload success
    listener_files_checked: list[Callable[[], None]] = field(default_factory=list)
    peer_checked: list[Callable[[str], None]] = field(default_factory=list)  # peer cluster
    discovery_activity: list[Callable[[], None]] = field(default_factory=list)
    # A listener basic-auth check that reached bcrypt (a cache miss), with its verdict.
    bcrypt_checked: list[Callable[[bool], None]] = field(default_factory=list)

    @staticmethod
    def call(callbacks: list[Callable[..., None]], *args: Any) -> None:
        for callback in callbacks:
            try:
                callback(*args)
            except Exception:
                log.exception("daemon hook failed", hook=getattr(callback, "__name__", "?"))
