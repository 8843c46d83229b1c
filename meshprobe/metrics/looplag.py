"""Event-loop lag: how late a timer fires. Lag inflates every probe timing we take, so it is
exported and alerted on; a probe timing is only as trustworthy as the loop that took it."""

from __future__ import annotations

import asyncio

from meshprobe.state.histogram import Histogram


async def monitor_loop_lag(histogram: Histogram, *, period: float = 0.25) -> None:
    loop = asyncio.get_running_loop()
    while True:
        expected = loop.time() + period
        await asyncio.sleep(period)
        histogram.observe(max(0.0, loop.time() - expected))
