"""The scheduler with a fake probe function: loops, bounds, reconcile. Real asyncio time, but every
wait is on an event or a count, never a fixed sleep."""

import asyncio
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import replace

from meshprobe.daemon.scheduler import Scheduler
from meshprobe.model import ProbeResult, Target
from tests.unit.test_state import target


class Recorder:
    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.changed = asyncio.Event()

    def sink(self, t: Target, _: ProbeResult) -> None:
        self.counts[t.name] += 1
        self.changed.set()

    async def until(self, predicate: Callable[[], bool]) -> None:
        async with asyncio.timeout(5.0):
            while not predicate():
                self.changed.clear()
                await self.changed.wait()


async def ok(_: Target) -> ProbeResult:
    return ProbeResult(success=True, duration=0.001)


async def test_each_target_runs_repeatedly_and_removed_ones_stop() -> None:
    rec = Recorder()
    sched = Scheduler(run=ok, sink=rec.sink, concurrency=10, rng=random.Random(1))
    a, b = target("a", interval=0.02), target("b", interval=0.02)
    assert sched.reconcile([a, b]) == (2, 0)
    await rec.until(lambda: rec.counts["a"] >= 3 and rec.counts["b"] >= 3)
    assert sched.reconcile([a]) == (0, 1)
    frozen_b = rec.counts["b"]
    target_a = rec.counts["a"] + 5
    await rec.until(lambda: rec.counts["a"] >= target_a)
    assert rec.counts["b"] == frozen_b
    await sched.aclose()


async def test_unchanged_target_keeps_its_loop_and_changed_target_restarts() -> None:
    sched = Scheduler(run=ok, sink=lambda *_: None, concurrency=1)
    a, b = target("a", interval=60.0), target("b", interval=60.0)
    sched.reconcile([a, b])
    before = {name: loop_task(name) for name in ("a", "b")}
    b2 = replace(b, budget=0.9)
    assert sched.reconcile([a, b2]) == (1, 1)
    assert loop_task("a") is before["a"]
    assert before["b"].cancelling()
    assert loop_task("b") is not before["b"]
    await sched.aclose()
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("scheduler: ")]


def loop_task(name: str) -> asyncio.Task[object]:
    """The running loop of target `name`, found the way a debugger would: by its task name."""
    (task,) = [
        t
        for t in asyncio.all_tasks()
        if t.get_name().startswith(f"scheduler: {name}@") and not t.cancelling()
    ]
    return task


async def test_concurrency_bound_is_never_exceeded() -> None:
    running = 0
    peak = 0
    release = asyncio.Event()
    saturated = asyncio.Event()
    rec = Recorder()

    async def slow(_: Target) -> ProbeResult:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        if running == 3:
            saturated.set()
        await release.wait()
        running -= 1
        return ProbeResult(success=True, duration=0.0)

    sched = Scheduler(run=slow, sink=rec.sink, concurrency=3)
    sched.reconcile([target(f"t{i}", interval=0.01, timeout=5.0) for i in range(10)])
    async with asyncio.timeout(5):
        await saturated.wait()
    release.set()
    await rec.until(lambda: sum(rec.counts.values()) >= 10)
    assert peak == 3
    await sched.aclose()


async def test_a_probe_that_ignores_its_timeout_is_cut_and_reported() -> None:
    results: list[ProbeResult] = []
    got = asyncio.Event()

    async def stuck(_: Target) -> ProbeResult:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    def sink(_: Target, r: ProbeResult) -> None:
        results.append(r)
        got.set()

    sched = Scheduler(run=stuck, sink=sink, concurrency=1, grace=0.0)
    try:
        sched.reconcile([target("x", interval=0.05, timeout=0.05)])
        async with asyncio.timeout(5):
            await got.wait()
    finally:
        await sched.aclose()
    assert results[0].success is False
    assert results[0].reason is not None and results[0].reason.value == "timeout"


async def test_a_failing_sink_does_not_kill_the_loop() -> None:
    calls = 0
    done = asyncio.Event()

    def sink(_: Target, __: ProbeResult) -> None:
        nonlocal calls
        calls += 1
        if calls >= 3:
            done.set()
        raise RuntimeError("export bug")

    sched = Scheduler(run=ok, sink=sink, concurrency=1)
    sched.reconcile([target("x", interval=0.01)])
    async with asyncio.timeout(5):
        await done.wait()
    await sched.aclose()
    assert calls >= 3
