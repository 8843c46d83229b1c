"""How discovery paces itself: the backoff between failures and the watch loop's timings.

Apart from `watch` so that the daemon can hold these settings without importing the Kubernetes
client (about 860 generated modules, 40 MB of memory) when no Kubernetes source is configured.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

__all__ = ["Backoff", "WatchSettings"]


@dataclass(frozen=True, slots=True)
class Backoff:
    initial: float = 0.5
    cap: float = 30.0
    factor: float = 2.0
    jitter: float = 0.5  # each delay is shortened by up to this fraction, so peers spread out

    def delay(self, failures: int, rng: random.Random) -> float:
        # The exponent stops growing once the cap is reached: after ~1000 failures (hours of an
        # API server being away) `factor ** failures` would overflow a float and kill the loop.
        steps = min(max(0, failures - 1), self._steps_to_cap())
        base = min(self.cap, self.initial * self.factor**steps)
        return base * (1.0 - self.jitter * rng.random())

    def _steps_to_cap(self) -> int:
        if self.factor <= 1.0 or self.initial <= 0.0 or self.cap <= self.initial:
            return 0
        return math.ceil(math.log(self.cap / self.initial, self.factor))


@dataclass(frozen=True, slots=True)
class WatchSettings:
    resync_period: float = 300.0  # list again after this long; also the longest watch request
    request_timeout: float = 10.0  # connecting, listing, and silence beyond the watch's end
    backoff: Backoff = field(default_factory=Backoff)
    # A watch counts as working once it delivered an event or bookmark, or stayed open this long
    # (or half of what it asked the server for, if less): only then is the backoff reset.
    healthy_after: float = 10.0
    # `up` survives this many failed watches in a row (a dropped stream is routine and resumes at
    # once); after that it is 0 until a watch works again. A failed list sets it to 0 at once.
    down_after_failures: int = 3
