"""TaskSet: every long-lived loop has an owner that logs a crash and starts the loop again."""

from __future__ import annotations

import asyncio

from structlog.testing import capture_logs

from meshprobe.tasks import TaskSet


async def test_a_crashed_task_is_logged_and_started_again() -> None:
    runs = 0
    second_run = asyncio.Event()

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            raise RuntimeError("bug in a loop")
        second_run.set()
        await asyncio.Event().wait()  # a loop runs until cancelled

    tasks: TaskSet[str] = TaskSet("unit", restart_delay=0.0)
    with capture_logs() as logs:
        tasks.start("k", flaky, label="edge a@c1")
        async with asyncio.timeout(5):
            await second_run.wait()
    await tasks.aclose()
    (crash,) = [e for e in logs if e["log_level"] == "error"]
    assert crash["subsystem"] == "unit" and crash["task"] == "edge a@c1"
    assert crash["exc_info"] is True
    assert runs == 2


async def test_a_task_that_returns_is_not_restarted() -> None:
    runs = 0

    async def once() -> None:
        nonlocal runs
        runs += 1

    tasks: TaskSet[str] = TaskSet("unit", restart_delay=0.0)
    tasks.start("k", once, label="once")
    (task,) = [t for t in asyncio.all_tasks() if t.get_name() == "unit: once"]
    await task
    assert runs == 1
    await tasks.aclose()


async def test_aclose_and_cancel_end_every_task_and_forget_it() -> None:
    started = asyncio.Event()

    async def forever() -> None:
        started.set()
        await asyncio.Event().wait()

    tasks: TaskSet[int] = TaskSet("unit")
    for key in range(3):
        tasks.start(key, forever, label=str(key))
    await started.wait()
    tasks.cancel(0)
    assert sorted(tasks) == [1, 2] and 0 not in tasks
    await tasks.aclose()
    assert len(tasks) == 0
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("unit: ")]


async def test_starting_a_running_key_replaces_its_task() -> None:
    async def forever() -> None:
        await asyncio.Event().wait()

    tasks: TaskSet[str] = TaskSet("unit")
    tasks.start("k", forever, label="first")
    (first,) = [t for t in asyncio.all_tasks() if t.get_name() == "unit: first"]
    tasks.start("k", forever, label="second")
    async with asyncio.timeout(5):
        await asyncio.wait([first])
    assert first.cancelled()
    assert len(tasks) == 1
    await tasks.aclose()
