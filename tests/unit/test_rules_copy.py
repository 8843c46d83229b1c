"""The e2e tests and the demo run the shipped rules with shortened durations; prove that is the
only difference, so what they show holds for the shipped file."""

from pathlib import Path

from meshprobe.demo.stack import durations_normalised, scale_durations

RULES = Path(__file__).parents[2] / "deploy" / "prometheus" / "meshprobe-rules.yaml"


def test_rules_copy_differs_only_in_durations() -> None:
    shipped = RULES.read_text()
    copy = scale_durations(shipped, 60)
    assert copy != shipped
    assert durations_normalised(copy) == durations_normalised(shipped)


def test_scaling_touches_durations_only() -> None:
    text = 'expr: rate(x[5m]) > 0.5\nfor: 15m\nlabels: {le: "0.5s"}\n# 1h30m window, 2xx, 14.4'
    assert scale_durations(text, 60) == (
        'expr: rate(x[5s]) > 0.5\nfor: 15s\nlabels: {le: "0.5s"}\n# 90s window, 2xx, 14.4'
    )
