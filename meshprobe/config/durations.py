"""Human durations (`250ms`, `1m30s`) for config files and environment variables.

The syntax follows Go's `time.ParseDuration` because that is what Kubernetes and Prometheus users
already write; bare numbers are seconds so that YAML integers and `MESHPROBE_..._INTERVAL=10` work.
"""

from __future__ import annotations

import math
import re

_UNIT_SECONDS: dict[str, float] = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}

_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)"
_BARE = re.compile(rf"{_NUMBER}")
# Longer units first so `ms` is not read as `m` followed by garbage.
_UNITS = "|".join(sorted(_UNIT_SECONDS, key=len, reverse=True))
_TERM = re.compile(rf"({_NUMBER})({_UNITS})")

ACCEPTED = (
    "expected a non-negative number of seconds or a sequence of <number><unit> terms "
    "with units ns, us, ms, s, m, h (e.g. 250ms, 10s, 5m, 1h, 1m30s)"
)


def parse_duration(text: str | int | float) -> float:
    """Return seconds; raise ValueError naming the accepted syntax so config errors are fixable."""
    if isinstance(text, bool):  # bool is an int subclass, but `interval: yes` is surely a mistake
        raise ValueError(f"invalid duration {text!r}: {ACCEPTED}")
    if isinstance(text, int | float):
        return _check_number(float(text), text)
    if not isinstance(text, str):
        raise ValueError(f"invalid duration {text!r}: {ACCEPTED}")
    raw = text.strip()
    if not raw:
        raise ValueError(f"invalid duration {text!r}: empty; {ACCEPTED}")
    if raw.startswith("-"):
        raise ValueError(f"invalid duration {text!r}: negative; {ACCEPTED}")
    if raw.startswith("+"):
        raw = raw[1:]
    if _BARE.fullmatch(raw):
        return _check_number(float(raw), text)
    total = 0.0
    pos = 0
    while pos < len(raw):
        match = _TERM.match(raw, pos)
        if match is None:
            raise ValueError(f"invalid duration {text!r}: {ACCEPTED}")
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    return total


def _check_number(value: float, original: object) -> float:
    if math.isnan(value) or math.isinf(value):
        raise ValueError(f"invalid duration {original!r}: not a finite number; {ACCEPTED}")
    if value < 0:
        raise ValueError(f"invalid duration {original!r}: negative; {ACCEPTED}")
    return value


def format_duration(seconds: float) -> str:
    """Render seconds the way a user would write them, so logs and `check` echo config syntax.

    Microsecond precision: the result parses back to the same value for any whole number of
    microseconds, and float noise such as 0.1 + 0.2 does not leak into the text.
    """
    if math.isnan(seconds) or math.isinf(seconds) or seconds < 0:
        raise ValueError(f"cannot format duration {seconds!r}: must be finite and non-negative")
    micros = round(seconds * 1_000_000)
    if micros == 0:
        return "0s"
    if micros < 1_000:
        return f"{micros}us"
    if micros < 1_000_000:
        return f"{_trim(micros / 1_000)}ms"
    hours, rest = divmod(micros, 3_600_000_000)
    minutes, rest = divmod(rest, 60_000_000)
    parts = []
    if hours:
        parts.append(f"{hours}h")
    if minutes:
        parts.append(f"{minutes}m")
    if rest:
        parts.append(f"{_trim(rest / 1_000_000)}s")
    return "".join(parts)


def _trim(value: float) -> str:
    """Fixed-point text without trailing zeros: 1.5 not 1.500000, 30 not 30.0."""
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    return text or "0"
