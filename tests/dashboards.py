"""Reading the shipped Grafana dashboards (grafana/*.json) the way Grafana would query Prometheus.

Used by tests/unit/test_dashboards.py (structure, names, PromQL parse) and by the end-to-end tests,
which run every panel expression against a real Prometheus:

    for title, expr in dashboard_queries(path, {"cluster": "cluster1", ...}):
        ...  # instant query; expect data unless title is in FAILURE_ONLY_PANELS/CONDITIONAL_PANELS

Titles are returned as written in the JSON (a repeated panel keeps its `$cluster`), so they match
the keys of FAILURE_ONLY_PANELS and CONDITIONAL_PANELS. No tests live here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from meshprobe.metrics import names as metricnames

DASHBOARD_DIR = Path(__file__).resolve().parents[1] / "grafana"

# The recording rules dashboards may use (deploy/prometheus/meshprobe-rules.yaml defines them).
RECORDING_RULES: frozenset[str] = frozenset(
    {
        "edge:meshprobe_probe_duration_seconds:p50_rate5m",
        "edge:meshprobe_probe_duration_seconds:p90_rate5m",
        "edge:meshprobe_probe_duration_seconds:p99_rate5m",
        *(f"edge:meshprobe_probe_success:ratio_rate{w}" for w in ("5m", "30m", "1h", "6h")),
        *(f"edge:meshprobe_probe_slo_errors:ratio_rate{w}" for w in ("5m", "30m", "1h", "6h")),
        "cluster_pair:meshprobe_probe_duration_seconds:p99_rate5m",
        "cluster_pair:meshprobe_probe_success:ratio_rate5m",
    }
)

# Series Prometheus or prometheus-client produce for every target, not meshprobe's own names.
STANDARD_METRICS: frozenset[str] = frozenset({"up"})
STANDARD_PREFIXES: tuple[str, ...] = ("process_",)
_SUFFIXES = ("", "_total", "_bucket", "_sum", "_count")

# Grafana's built-in variables, with values that suit a Prometheus scraping every few seconds.
GRAFANA_BUILTINS: dict[str, str] = {"__rate_interval": "1m", "__interval": "15s", "__range": "1h"}

# Panels whose queries return nothing while every probe succeeds: check them in a failure scenario.
FAILURE_ONLY_PANELS: frozenset[str] = frozenset(
    {
        "Failures by reason",  # `> 0`: reasons with no failures in the window are hidden
    }
)

# Panels that return data only when the setup has what they show (title -> what it needs).
_PEERS = "peers configured (with trust.bundle_file for the CA match)"
_BUNDLE = "trust.bundle_file configured"
_TLS = "https/tls targets (on the target dashboard: $target is one)"
_DISCOVERY = "Kubernetes discovery enabled (meshprobe_discovery_* exist only then)"
_SERVED_LOCAL = "a local-scope target answering with X-Meshprobe-Cluster (a meshprobe /v1/echo)"
CONDITIONAL_PANELS: dict[str, str] = {
    "CA match per peer": _PEERS,
    "Peer reachable": _PEERS,
    "Trust bundle reload": _BUNDLE,
    "Earliest trust-root expiry": _BUNDLE,
    "Trust bundle roots": _BUNDLE,
    "Earliest certificate expiry per role": _TLS,
    "Certificates expiring first": _TLS,
    "Chain verified": _TLS,
    "Certificate expiry by role": _TLS,
    "Presented chain": _TLS,
    "Certificate expiry over time": _TLS,
    "Failover share (local targets)": _SERVED_LOCAL,
    "Answers by serving cluster (local targets)": _SERVED_LOCAL,
    "Answers by serving cluster": "$target answers with X-Meshprobe-Cluster (a meshprobe /v1/echo)",
    "Discovery up": _DISCOVERY,
    "Discovery errors": _DISCOVERY,
}

# PromQL as of Prometheus 2.42: aggregation operators and functions (nothing newer).
# fmt: off
PROMQL_FUNCTIONS: frozenset[str] = frozenset({
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk",
    "topk", "quantile",
    "abs", "absent", "absent_over_time", "ceil", "changes", "clamp", "clamp_max", "clamp_min",
    "day_of_month", "day_of_week", "day_of_year", "days_in_month", "delta", "deriv", "exp",
    "floor", "histogram_quantile", "holt_winters", "hour", "idelta", "increase", "irate",
    "label_join", "label_replace", "ln", "log2", "log10", "minute", "month", "predict_linear",
    "rate", "resets", "round", "scalar", "sgn", "sort", "sort_desc", "sqrt", "time", "timestamp",
    "vector", "year", "avg_over_time", "min_over_time", "max_over_time", "sum_over_time",
    "count_over_time", "quantile_over_time", "stddev_over_time", "stdvar_over_time",
    "last_over_time", "present_over_time", "acos", "acosh", "asin", "asinh", "atan", "atanh",
    "cos", "cosh", "sin", "sinh", "tan", "tanh", "deg", "rad", "pi",
})
_KEYWORDS = frozenset({
    "and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left",
    "group_right", "inf", "nan", "atan2",
})
# fmt: on

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGES = re.compile(r"\[[^\[\]]*\]")
_LABEL_LISTS = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_IDENT = re.compile(r"(?<![\w.:$])([A-Za-z_:][\w:]*)(\s*\()?")
# $name, ${name}, ${name:format}; `$1` (a label_replace group) is not a variable.
_VARIABLE = re.compile(r"\$\{([A-Za-z_]\w*)(?::[^}]*)?\}|\$([A-Za-z_]\w*)")


def dashboard_paths() -> list[Path]:
    return sorted(DASHBOARD_DIR.glob("*.json"))


def load(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path.name}: a dashboard is a JSON object")
    return data


def iter_panels(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, rows included, also those nested inside collapsed rows."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def panel_targets(dashboard: Mapping[str, Any]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(panel, target) for every query target of every panel."""
    for panel in iter_panels(dashboard):
        for target in panel.get("targets", []):
            yield panel, target


def variables_used(text: str) -> set[str]:
    return {braced or plain for braced, plain in _VARIABLE.findall(text)}


def substitute(text: str, variables: Mapping[str, str]) -> str:
    """Fill in Grafana variables like Grafana does. The caller's values win over
    GRAFANA_BUILTINS; a variable with no value is an error rather than a query Grafana would not
    send."""
    values = {**GRAFANA_BUILTINS, **variables}
    missing = sorted(variables_used(text) - values.keys())
    if missing:
        raise ValueError(f"no value for variable(s) {', '.join(missing)} in {text!r}")
    return _VARIABLE.sub(lambda m: values[m.group(1) or m.group(2)], text)


def dashboard_queries(path: Path | str, variables: Mapping[str, str]) -> list[tuple[str, str]]:
    """(panel title as written, expression with variables filled in) for every panel target.

    `variables` holds the dashboard's own variables (`cluster`, and `target_cluster`/`target`
    for the target dashboard) and may override GRAFANA_BUILTINS (`__rate_interval`, ...). For a
    multi-value variable pass what Grafana would put in a regex matcher: `cluster1`,
    `cluster1|cluster2` or `.*`.
    """
    dashboard = load(Path(path))
    return [
        (str(panel.get("title", "")), substitute(str(target["expr"]), variables))
        for panel, target in panel_targets(dashboard)
        if target.get("expr")
    ]


def metric_names(expr: str) -> set[str]:
    """The series names a PromQL expression selects (metrics and recording rules)."""
    names, _ = _identifiers(expr)
    return names


def functions_called(expr: str) -> set[str]:
    _, functions = _identifiers(expr)
    return functions


def _identifiers(expr: str) -> tuple[set[str], set[str]]:
    text = _STRING.sub('""', expr)
    text = _MATCHERS.sub(" ", text)
    text = _RANGES.sub(" ", text)
    text = _LABEL_LISTS.sub(" ", text)
    names: set[str] = set()
    functions: set[str] = set()
    for ident, call in _IDENT.findall(text):
        if call:
            functions.add(ident)
        elif ident not in _KEYWORDS:
            names.add(ident)
    return names, functions


def meshprobe_metric_names() -> frozenset[str]:
    """Every name meshprobe exports (meshprobe/metrics/names.py) with the exposition suffixes."""
    bases = {
        value
        for key, value in vars(metricnames).items()
        if key.isupper()
        and isinstance(value, str)
        and value.startswith(metricnames.PREFIX)
        and value != metricnames.PREFIX
    }
    return frozenset(base + suffix for base in bases for suffix in _SUFFIXES)


def is_known_metric(name: str) -> bool:
    return (
        name in meshprobe_metric_names()
        or name in RECORDING_RULES
        or name in STANDARD_METRICS
        or name.startswith(STANDARD_PREFIXES)
    )
