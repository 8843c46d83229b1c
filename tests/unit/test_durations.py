from __future__ import annotations

import pytest

from meshprobe.config.durations import format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("250ms", 0.25),
        ("10s", 10.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("1m30s", 90.0),
        ("1.5s", 1.5),
        ("500us", 0.0005),
        ("500µs", 0.0005),
        ("100ns", 1e-7),
        ("1h2m3s4ms", 3723.004),
        (" 2s ", 2.0),
        ("10", 10.0),
        ("0.5", 0.5),
        ("0s", 0.0),
        (3, 3.0),
        (0.25, 0.25),
    ],
)
def test_parse_accepts(text: str | int | float, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("-5s", "negative"),
        (-1, "negative"),
        ("10 parsecs", "units ns, us, ms, s, m, h"),
        ("5d", "units ns, us, ms, s, m, h"),
        ("s", "units ns, us, ms, s, m, h"),
        ("1.2.3s", "units ns, us, ms, s, m, h"),
        ("1e3", "units ns, us, ms, s, m, h"),
        ("nan", "units ns, us, ms, s, m, h"),
        (float("inf"), "finite"),
        (True, "units ns, us, ms, s, m, h"),
    ],
)
def test_parse_rejects_with_accepted_syntax(text: str | int | float, why: str) -> None:
    with pytest.raises(ValueError, match="invalid duration") as info:
        parse_duration(text)
    assert why in str(info.value)
    assert "e.g. 250ms" in str(info.value)


def test_minutes_are_not_milliseconds() -> None:
    assert parse_duration("5m") == 300.0
    assert parse_duration("5ms") == pytest.approx(0.005)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.25, "250ms"),
        (10, "10s"),
        (90, "1m30s"),
        (3600, "1h"),
        (3661, "1h1m1s"),
        (1.5, "1.5s"),
        (0.0005, "500us"),
        (0.0015, "1.5ms"),
        (0, "0s"),
        (0.1 + 0.2, "300ms"),
    ],
)
def test_format(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize("seconds", [0.000001, 0.05, 0.15, 2.0, 59.999, 90.5, 7322.25])
def test_format_round_trips(seconds: float) -> None:
    assert parse_duration(format_duration(seconds)) == pytest.approx(seconds)


def test_format_rejects_negative() -> None:
    with pytest.raises(ValueError, match="non-negative"):
        format_duration(-1)
