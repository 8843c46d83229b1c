"""The `status:` section: what the status page (`GET /`, `GET /v1/status`) keeps in memory.

Its own module so the status page's one setting does not touch the sections other work edits;
`Settings` only names it.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, field_validator

__all__ = ["RECENT_RESULTS_MAX", "StatusSettings"]

# Each result kept costs 18 bytes per edge, plus about 560 bytes per edge for the ring itself
# (bench/status_memory.py, tracemalloc): the default 60 at 10,000 edges is 16 MB; the bound, 1,000
# at 10,000 edges, would be 180 MB, past anything a prober should hold for a page.
RECENT_RESULTS_MAX = 1000


class StatusSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # The ring of recent results per edge that the page's percentiles, success ratio and chart
    # are computed from: the window is the last N results (at a 10 s interval, 60 are 10 min).
    recent_results: int = 60

    @field_validator("recent_results", mode="before")
    @classmethod
    def _bounded(cls, value: object) -> object:
        # `mode="before"`: pydantic would turn `true` into 1 and `"60"` (the environment's
        # spelling) is the only text accepted, so both are decided here with our wording.
        if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
            value = int(value.strip())
        if isinstance(value, bool) or not isinstance(value, int):
            shown = repr(value) if isinstance(value, str | float) else f"a {type(value).__name__}"
            raise ValueError(f"must be a whole number of results, got {shown[:40]}")
        if not 1 <= value <= RECENT_RESULTS_MAX:
            raise ValueError(
                f"must be 1..{RECENT_RESULTS_MAX}, got {value if value.bit_length() < 64 else '?'}"
                ": each result kept costs 18 bytes per edge (60 at 10,000 edges: 16 MB)"
            )
        return value
