"""One kopf-style list/watch loop per collection.

The cycle, as kopf's `_cogs/clients/watching.py` does it:
1. list the collection and hand every object to the handler (`replace`), keeping the list's
   `resourceVersion`;
2. watch from that version with bookmarks on and a server-side `timeoutSeconds`, handing each
   event to the handler (`apply`) and keeping the newest version seen (bookmarks move it too, so a
   quiet collection does not fall out of the server's window);
3. when the stream ends (server timeout, dropped connection) watch again from the newest version:
   nothing is missed and nothing replayed twice;
4. on `410 Gone` (our version was compacted away) list again at once (backing off only when the
   watches from fresh lists keep expiring); after `resync_period` list again anyway, which
   bounds any drift.
Failures back off exponentially with jitter, capped. Only a watch that proved itself resets the
backoff: one that delivered an event (a bookmark too) or stayed open `healthy_after`. A watch that
answers 200 and ends at once is a failure like any other, or a proxy that does that would have us
retry at the first step forever (and report discovery up and down on every retry).

We read the stream ourselves instead of using `kubernetes_asyncio.watch.Watch`: that class builds
a second API client per watch, retries a 410 with the same stale version, and hands non-JSON lines
back as strings; here every outcome is one of: an event, a bookmark, `Gone`, or an error.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import aiohttp
import structlog

from meshprobe.discovery.client import Collection, KubeApi
from meshprobe.discovery.pacing import WatchSettings

log = structlog.get_logger(__name__)

Obj = dict[str, Any]
_MAX_ERROR_BODY = 16 * 1024


class WatchHandler(Protocol):
    """Receives what the loop learns; called on the event loop, must not block."""

    def replace(self, objects: list[Obj]) -> None:
        """The complete collection as of a list: objects missing from it are gone."""

    def apply(self, event: str, obj: Obj) -> None:
        """One ADDED, MODIFIED or DELETED event."""


class ApiError(Exception):
    """The API server answered with an error status (403, 500, …)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


class Gone(ApiError):
    """Our resourceVersion is older than the server keeps: list again (routine for a watch)."""

    def __init__(self, message: str) -> None:
        super().__init__(410, message)


# Everything a flaky network or API server can throw at us; anything else is a bug and is
# logged with its traceback, but still retried, because a watch must never stop.
RETRYABLE = (ApiError, aiohttp.ClientError, OSError, TimeoutError, ValueError)


@dataclass(slots=True)
class WatchStats:
    """What the loop has done: the version it resumes from, and counts logged when it stops."""

    lists: int = 0
    watches: int = 0
    events: int = 0
    bookmarks: int = 0
    gone: int = 0
    failures: int = 0
    resource_version: str | None = None


class WatchLoop:
    def __init__(
        self,
        *,
        api: KubeApi,
        collection: Collection,
        handler: WatchHandler,
        settings: WatchSettings,
        on_health: Callable[[bool, Exception | None], None],
        on_activity: Callable[[], None] = lambda: None,
        rng: random.Random | None = None,
    ) -> None:
        self._api = api
        self.collection = collection
        self._handler = handler
        self._settings = settings
        self._on_health = on_health  # (up, error) after every success or failure
        self._on_activity = on_activity  # after any list, event, failure or change
        self._rng = rng or random.Random()
        self._failures = 0  # since the last working watch: the backoff step
        self._watch_failures = 0  # watches failed in a row: `up` falls at down_after_failures
        self._listed = False  # the latest list succeeded
        self._watch_ok = False  # the current watch has proved itself
        self._gone_in_a_row = 0  # watches expired (410) before they worked, relist after relist
        self.synced = asyncio.Event()  # the first list succeeded
        self.stats = WatchStats()

    async def run(self) -> None:
        """List and watch until cancelled; the loop's counts are logged when it stops."""
        try:
            while True:
                try:
                    await self._cycle()
                except RETRYABLE as exc:
                    await self._failed(exc)
                except Exception as exc:  # a bug: log it loudly, keep watching
                    log.exception("watch loop error", collection=str(self.collection))
                    await self._failed(exc)
        finally:
            log.info("watch loop stopped", collection=str(self.collection), **asdict(self.stats))

    async def _cycle(self) -> None:
        loop = asyncio.get_running_loop()
        await self._list()
        deadline = loop.time() + self._settings.resync_period
        while (remaining := deadline - loop.time()) > 0:
            try:
                # From the newest version seen, even if the last stream broke mid-way: what
                # arrived before the break is applied and must not be replayed.
                await self._watch(max(1, math.ceil(remaining)))
            except Gone:
                self.stats.gone += 1
                log.info("watch version expired, listing again", collection=str(self.collection))
                await self._after_gone()
                return
            except RETRYABLE as exc:
                self._watch_failures += 1
                await self._failed(exc)

    async def _after_gone(self) -> None:
        """Relist at once after a 410, as kopf does, unless the watch from a fresh list's version
        was already expired twice in a row: a server (or a caching proxy) answering every watch
        with 410 would otherwise have us list and watch in a tight loop. Not an error: each list
        succeeds and keeps the view current; it only slows down."""
        if self._watch_ok:
            self._gone_in_a_row = 0
            return
        self._gone_in_a_row += 1
        if self._gone_in_a_row < 2:
            return
        delay = self._settings.backoff.delay(self._gone_in_a_row - 1, self._rng)
        log.warning(
            "watch expired right after a list again, slowing down",
            collection=str(self.collection),
            retry_in=round(delay, 3),
            times=self._gone_in_a_row,
        )
        await asyncio.sleep(delay)

    @property
    def up(self) -> bool:
        """Listed, and the watch is not failing repeatedly: what `meshprobe_discovery_up` shows."""
        return self._listed and self._watch_failures < self._settings.down_after_failures

    def _watch_healthy(self) -> None:
        """The current watch delivered something or stayed open long enough (once per watch)."""
        if self._watch_ok:
            return
        self._watch_ok = True
        self._gone_in_a_row = 0
        self._failures = 0
        self._watch_failures = 0
        self._on_health(self.up, None)
        self._on_activity()

    async def _failed(self, exc: Exception) -> None:
        self._failures += 1
        self.stats.failures += 1
        self._on_health(self.up, exc)
        self._on_activity()
        delay = self._settings.backoff.delay(self._failures, self._rng)
        log.warning(
            "kubernetes list/watch failed, retrying",
            collection=str(self.collection),
            error=f"{type(exc).__name__}: {exc}",
            retry_in=round(delay, 3),
            failures=self._failures,
        )
        await asyncio.sleep(delay)

    def _progress(self) -> None:
        self._on_activity()

    async def _list(self) -> None:
        self._listed = False  # until this list succeeds; a failure below reports down
        timeout = self._settings.request_timeout
        resp = await self._api.request(
            self.collection,
            watch=False,
            request_timeout=aiohttp.ClientTimeout(sock_connect=timeout, sock_read=timeout),
        )
        try:
            await _check_status(resp)
            body = await resp.json(content_type=None)
        finally:
            resp.release()
        if not isinstance(body, dict) or not isinstance(body.get("items"), list):
            raise ValueError("list answer has no items")
        items = [item for item in body["items"] if isinstance(item, dict)]
        self._handler.replace(items)
        self.stats.lists += 1
        self.stats.resource_version = _version(body)
        # A list proves the API answers, not that watching works: the backoff is left alone.
        self._listed = True
        self._on_health(self.up, None)
        self.synced.set()
        self._progress()

    async def _watch(self, timeout_seconds: int) -> None:
        self._watch_ok = False
        timeout = self._settings.request_timeout
        resp = await self._api.request(
            self.collection,
            watch=True,
            resource_version=self.stats.resource_version,
            timeout_seconds=timeout_seconds,
            request_timeout=aiohttp.ClientTimeout(
                sock_connect=timeout, sock_read=timeout_seconds + timeout
            ),
        )
        loop = asyncio.get_running_loop()
        began = loop.time()
        proof: asyncio.TimerHandle | None = None
        try:
            await _check_status(resp)
            self.stats.watches += 1
            # A server ends a quiet watch at its timeout, so half of that proves it as well.
            healthy_after = min(self._settings.healthy_after, timeout_seconds / 2)
            proof = loop.call_later(healthy_after, self._watch_healthy)
            async for line in resp.content:
                if line.strip() and self._event(line):
                    self._watch_healthy()
        finally:
            if proof is not None:
                proof.cancel()
            resp.close()  # a watch connection is never reused
        if not self._watch_ok:
            # Answered 200 and ended with nothing in it (a proxy closing watches): a failure.
            took = loop.time() - began
            raise ApiError(200, f"watch ended after {took:.3f}s without an event")

    def _event(self, line: bytes) -> bool:
        """Apply one line; True when it was an event or bookmark (proof the watch works)."""
        event = json.loads(line)
        if not isinstance(event, dict) or not isinstance(event.get("object"), dict):
            raise ValueError(f"watch line is not an event: {line[:200]!r}")
        kind, obj = event.get("type"), event["object"]
        if kind == "ERROR":
            code = obj.get("code")
            if code == 410:
                raise Gone(obj.get("message", "gone"))
            raise ApiError(code if isinstance(code, int) else 0, str(obj.get("message", obj)))
        known = True
        if kind == "BOOKMARK":
            self.stats.bookmarks += 1
        elif kind in ("ADDED", "MODIFIED", "DELETED"):
            self.stats.events += 1
            self._handler.apply(kind, obj)
        else:
            known = False
            log.warning("unknown watch event type", type=kind, collection=str(self.collection))
        self.stats.resource_version = _version(obj) or self.stats.resource_version
        self._progress()
        return known


def _version(obj: Obj) -> str | None:
    meta = obj.get("metadata")
    version = meta.get("resourceVersion") if isinstance(meta, dict) else None
    return version if isinstance(version, str) and version else None


async def _check_status(resp: aiohttp.ClientResponse) -> None:
    if resp.status == 200:
        return
    body = await resp.content.read(_MAX_ERROR_BODY)
    message = body.decode("utf-8", "replace").strip()
    try:
        status = json.loads(body)
        if isinstance(status, dict) and "message" in status:
            message = str(status["message"])
    except ValueError:
        pass
    if resp.status == 410:
        raise Gone(message)
    raise ApiError(resp.status, message or (resp.reason or ""))
