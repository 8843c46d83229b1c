"""The last N results of every edge, for the status page: a live view, not the cumulative truth.

`/metrics` holds counters and histograms since start; a person looking at a prober during an
incident wants "how is it doing right now": the success ratio, p50 and p99 over the last
minutes, the last results as a chart, and the last failures with their details. This keeps
exactly that, per edge, in a fixed ring fed from the same place `ProbeState.record` is fed.

Memory is what bounds it. A result is kept as 17 bytes (wall-clock time and duration as doubles,
so "over budget" here is exactly what `ProbeState` counted, and a one-byte outcome code) in arrays
made once per edge, instead of a reference to the `ProbeResult` (whose phases dict and detail
would cost 20 times more). The last few failures keep their reason and a shortened detail; a failure
that repeats itself only counts up, so a target down for hours holds one entry, not N.
Everything runs on the event loop thread, like `ProbeState`.
"""

from __future__ import annotations

import math
from array import array
from bisect import bisect_right
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import compress

from meshprobe.model import ProbeResult, Reason, Target

__all__ = [
    "FAILURES_KEPT",
    "FAILURE_DETAIL_LIMIT",
    "Failure",
    "RecentResults",
    "Ring",
    "Window",
    "nearest_rank",
]

FAILURES_KEPT = 5  # distinct failures kept per edge, newest last
FAILURE_DETAIL_LIMIT = 256  # characters of a kept failure's detail (the last result keeps all)

# Outcome codes: 0 is success, i + 1 is the i-th Reason. One byte per result.
_REASONS: tuple[Reason, ...] = tuple(Reason)
_CODE = {reason: i + 1 for i, reason in enumerate(_REASONS)}
_SUCCESS = (0).__eq__


def nearest_rank(sorted_values: Sequence[float], q: float) -> float | None:
    """The q-quantile by nearest rank: an observed value, never an interpolation, so "p99 under
    budget" over 60 results means that at most 1 % of them (none of 60) were over it."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[rank - 1]


@dataclass(frozen=True, slots=True)
class Failure:
    """One failure, or a run of identical ones (same reason and detail) in a row."""

    first_at: float  # unix seconds
    last_at: float
    count: int
    reason: Reason
    detail: str


@dataclass(frozen=True, slots=True)
class Window:
    """What the ring holds now, reduced to what the page shows."""

    results: int
    successes: int
    durations: Sequence[float]  # successful probes' durations, ascending
    since: float | None  # unix seconds of the oldest result kept

    def over(self, budget: float) -> int:
        """Successful probes slower than `budget`."""
        return len(self.durations) - bisect_right(self.durations, budget)


class Ring:
    """The last `size` results of one edge, oldest overwritten first."""

    __slots__ = ("_at", "_code", "_count", "_duration", "_next", "failures")

    def __init__(self, size: int) -> None:
        self._at = array("d", bytes(8 * size))
        self._duration = array("d", bytes(8 * size))
        self._code = bytearray(size)
        self._next = 0
        self._count = 0
        self.failures: list[Failure] = []

    @property
    def size(self) -> int:
        return len(self._code)

    def __len__(self) -> int:
        return self._count

    def add(self, at: float, result: ProbeResult) -> None:
        i = self._next
        self._at[i] = at
        self._duration[i] = result.duration
        self._code[i] = 0 if result.reason is None else _CODE[result.reason]
        self._next = (i + 1) % len(self._code)
        self._count = min(self._count + 1, len(self._code))
        if result.reason is not None:
            self._note_failure(at, result.reason, result.detail)

    def _note_failure(self, at: float, reason: Reason, detail: str) -> None:
        if len(detail) > FAILURE_DETAIL_LIMIT:
            detail = detail[: FAILURE_DETAIL_LIMIT - 1] + "…"
        last = self.failures[-1] if self.failures else None
        if last is not None and last.reason is reason and last.detail == detail:
            self.failures[-1] = Failure(last.first_at, at, last.count + 1, reason, last.detail)
            return
        self.failures.append(Failure(at, at, 1, reason, detail))
        if len(self.failures) > FAILURES_KEPT:
            del self.failures[0]

    def last_at(self) -> float | None:
        """Unix seconds of the newest result, None before the first."""
        return self._at[self._next - 1] if self._count else None

    def _order(self) -> Iterator[int]:
        size = len(self._code)
        start = (self._next - self._count) % size
        return ((start + k) % size for k in range(self._count))

    def entries(self) -> list[tuple[float, float, Reason | None]]:
        """(unix seconds, duration, reason or None), oldest first."""
        at, duration, code = self._at, self._duration, self._code
        return [
            (at[i], duration[i], _REASONS[code[i] - 1] if code[i] else None) for i in self._order()
        ]

    def window(self) -> Window:
        """Slots fill from 0 and wrap, so the first `count` slots are exactly the results kept,
        in some order; only `since` needs to know where the oldest one is."""
        n = self._count
        if not n:
            return Window(0, 0, (), None)
        full = n == len(self._code)
        codes = self._code if full else self._code[:n]
        durations = self._duration if full else self._duration[:n]
        if codes.count(0) == n:  # no failure kept: the common case, all in C
            ok = sorted(durations)
        else:
            ok = sorted(compress(durations, map(_SUCCESS, codes)))
        return Window(n, len(ok), ok, self._at[self._next] if full else self._at[0])

    def resized(self, size: int) -> Ring:
        """The same edge's newest `size` results in a ring of that size; failures are kept."""
        ring = Ring(size)
        for i in list(self._order())[-size:]:
            ring._at[ring._next] = self._at[i]
            ring._duration[ring._next] = self._duration[i]
            ring._code[ring._next] = self._code[i]
            ring._next = (ring._next + 1) % size
            ring._count += 1
        ring.failures = self.failures
        return ring


class RecentResults:
    """One ring per edge of the current target set, keyed like `ProbeState` (`Target.key`).

    Rings are made when an edge appears, not at its first result, so memory follows the target
    set (17 bytes per result kept, per edge) and a late result of a removed target is ignored
    instead of bringing its ring back."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._rings: dict[tuple[str, str, str], Ring] = {}

    @property
    def size(self) -> int:
        return self._size

    def set_targets(self, targets: Iterable[Target]) -> None:
        wanted = {t.key for t in targets}
        for key in list(self._rings):
            if key not in wanted:
                del self._rings[key]
        for key in wanted:
            if key not in self._rings:
                self._rings[key] = Ring(self._size)

    def record(self, target: Target, result: ProbeResult, at: float) -> None:
        """`at`: the wall-clock time the result arrived (unix seconds)."""
        ring = self._rings.get(target.key)
        if ring is not None:
            ring.add(at, result)

    def get(self, target: Target) -> Ring | None:
        return self._rings.get(target.key)

    def resize(self, size: int) -> None:
        """A reload changed `status.recent_results`: keep each edge's newest results."""
        if size == self._size:
            return
        self._size = size
        self._rings = {key: ring.resized(size) for key, ring in self._rings.items()}

    def __len__(self) -> int:
        return len(self._rings)
