"""One loop per target, as cloudprober's scheduler does.

- First runs are spread over the interval (plus jitter) so a thousand targets loaded at once do
  not fire in the same millisecond.
- Each run keeps the loop's rhythm: the next start is the previous start plus the interval; a run
  that overran skips the missed slots instead of bursting to catch up.
- A global semaphore bounds probes in flight; the probe's own timeout starts only once it holds a
  slot, so waiting for a slot never turns into a false `timeout`.
- `reconcile` compares targets by value: unchanged targets keep their loop and rhythm, changed
  ones restart, removed ones are cancelled.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Iterable
from functools import partial

import structlog

from meshprobe.model import ProbeResult, Reason, Target
from meshprobe.tasks import TaskSet

ProbeRunner = Callable[[Target], Awaitable[ProbeResult]]
ResultSink = Callable[[Target, ProbeResult], None]

log = structlog.get_logger(__name__)


class Scheduler:
    def __init__(
        self,
        *,
        run: ProbeRunner,
        sink: ResultSink,
        concurrency: int,
        jitter: float = 0.05,
        grace: float = 1.0,
        rng: random.Random | None = None,
    ) -> None:
        self._run = run
        self._sink = sink
        self._slots = asyncio.Semaphore(concurrency)
        self._jitter = jitter
        # A probe that ignores its own timeout is cut this long after it: a bug guard.
        self._grace = grace
        self._rng = rng or random.Random()
        self._loops: TaskSet[Target] = TaskSet("scheduler")

    @property
    def targets(self) -> frozenset[Target]:
        return frozenset(self._loops)

    def reconcile(self, targets: Iterable[Target]) -> tuple[int, int]:
        """Start loops for new targets and stop those of removed ones; returns (added, removed)."""
        wanted = set(targets)
        removed = [t for t in self._loops if t not in wanted]
        for target in removed:
            self._loops.cancel(target)
        added = [t for t in wanted if t not in self._loops]
        for target in added:
            self._loops.start(
                target, partial(self._loop, target), label=f"{target.name}@{target.cluster}"
            )
        return len(added), len(removed)

    async def aclose(self) -> None:
        await self._loops.aclose()

    def _jittered(self, interval: float) -> float:
        return interval * self._jitter * self._rng.random()

    async def _loop(self, target: Target) -> None:
        loop = asyncio.get_running_loop()
        slot = loop.time() + self._rng.uniform(0, target.interval)
        while True:
            # Jitter moves this run only; the slots themselves never drift.
            delay = slot + self._jittered(target.interval) - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            async with self._slots:
                result = await self._run_once(target)
            try:
                self._sink(target, result)
            except Exception:  # a bug in export must not stop probing
                log.exception("result sink failed", target=target.name)
            slot += target.interval
            now = loop.time()
            if slot < now:  # overran: skip the missed slots, keep the phase
                slot += (int((now - slot) // target.interval) + 1) * target.interval

    async def _run_once(self, target: Target) -> ProbeResult:
        loop = asyncio.get_running_loop()
        began = loop.time()
        try:
            async with asyncio.timeout(target.timeout + self._grace):
                return await self._run(target)
        except TimeoutError:
            log.error("probe ignored its timeout", target=target.name, cluster=target.cluster)
            return ProbeResult(
                success=False,
                duration=loop.time() - began,
                reason=Reason.TIMEOUT,
                detail="probe overran its timeout",
            )
