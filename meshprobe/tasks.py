"""The owner of a subsystem's long-lived tasks: every loop meshprobe runs belongs to one TaskSet.

Why not `asyncio.TaskGroup`: a group cancels all its tasks when one fails and only lives inside
one `async with`. A prober's loops come and go with the target set (one per target, one per peer)
and one loop's bug must not stop the others, nor end its own loop silently. So a TaskSet keys its
tasks, logs a task that ends by an exception (with the traceback, the subsystem and the label the
caller chose: never a URL) and starts it again after a pause; `aclose` cancels everything and waits
for each task, so shutdown takes as long as the slowest task, not the sum.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Hashable, Iterator
from typing import Any, Generic, TypeVar

import structlog

__all__ = ["TaskSet"]

K = TypeVar("K", bound=Hashable)
Run = Callable[[], Coroutine[Any, Any, None]]

log = structlog.get_logger(__name__)


class TaskSet(Generic[K]):
    def __init__(self, subsystem: str, *, restart_delay: float = 1.0) -> None:
        self.subsystem = subsystem
        self._restart_delay = restart_delay
        self._tasks: dict[K, asyncio.Task[None]] = {}

    def __contains__(self, key: object) -> bool:
        return key in self._tasks

    def __len__(self) -> int:
        return len(self._tasks)

    def __iter__(self) -> Iterator[K]:
        return iter(list(self._tasks))

    def start(self, key: K, run: Run, *, label: str) -> None:
        """Run `run()` under `key` until it returns or is cancelled; a running key is replaced."""
        old = self._tasks.pop(key, None)
        if old is not None:
            old.cancel()
        self._tasks[key] = asyncio.get_running_loop().create_task(
            self._supervise(run, label), name=f"{self.subsystem}: {label}"
        )

    def cancel(self, key: K) -> None:
        """Stop `key`'s task without waiting (from synchronous code: a reconcile)."""
        task = self._tasks.pop(key, None)
        if task is not None:
            task.cancel()

    async def aclose(self) -> None:
        tasks = list(self._tasks.values())
        self._tasks.clear()
        await _cancel_and_wait(tasks)

    async def _supervise(self, run: Run, label: str) -> None:
        while True:
            try:
                await run()
                return
            except Exception:
                log.exception(
                    "task failed unexpectedly; restarting it", subsystem=self.subsystem, task=label
                )
            await asyncio.sleep(self._restart_delay)


async def _cancel_and_wait(tasks: list[asyncio.Task[None]]) -> None:
    """`asyncio.wait`, not `await task`: a cancellation of the caller itself still propagates."""
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.wait(tasks)
