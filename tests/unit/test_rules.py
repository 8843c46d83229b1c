"""The shipped Prometheus rules: promtool's own checks and unit tests, plus the conventions promtool
does not know about (annotations, runbook anchors, test coverage, metric names)."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from meshprobe.metrics import names as m
from meshprobe.metrics.edges import FAMILIES
from meshprobe.metrics.instance import MeshprobeCollector
from meshprobe.model import DURATION_BUCKETS
from meshprobe.state.edges import ProbeState
from meshprobe.state.instance import InstanceStatus

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "meshprobe-rules.yaml"
RULE_TESTS = sorted((ROOT / "tests" / "rules").glob("*.yaml"))
RUNBOOKS = ROOT / "docs" / "runbooks.md"
RUNBOOK_BASE = "https://github.com/meshprobe/meshprobe/blob/main/docs/runbooks.md#"

ALERTS = {
    "MeshprobeCrossClusterLatencyBudgetBurn",
    "MeshprobeLocalLatencyBudgetBurn",
    "MeshprobeTargetDown",
    "MeshprobeCAMismatch",
    "MeshprobeTLSVerificationFailing",
    "MeshprobeCertificateExpiringSoon",
    "MeshprobeClientCertificateExpiring",
    "MeshprobeClientCertificateReloadFailing",
    "MeshprobePeerUnreachable",
    "MeshprobeFailoverActive",
    "MeshprobeDiscoveryFailing",
    "MeshprobeEventLoopLagHigh",
    "MeshprobeAbsent",
}
# The dashboards query these names: renaming one breaks them.
RECORDS = {
    *(f"edge:meshprobe_probe_duration_seconds:{q}_rate5m" for q in ("p50", "p90", "p99")),
    *(
        f"edge:meshprobe_probe_{ratio}:ratio_rate{w}"
        for ratio in ("success", "slo_errors")
        for w in ("5m", "30m", "1h", "6h")
    ),
    "cluster_pair:meshprobe_probe_duration_seconds:p99_rate5m",
    "cluster_pair:meshprobe_probe_success:ratio_rate5m",
}
EDGE_LABELS = set(m.EDGE_LABELS)


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(
            "promtool not found on PATH: install Debian's `prometheus` package "
            "(scripts/test.sh does) to check and unit-test deploy/prometheus/meshprobe-rules.yaml"
        )
    return path


def run_promtool(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def rules() -> list[dict[str, Any]]:
    return [rule for group in load(RULES)["groups"] for rule in group["rules"]]


def alerting_rules() -> list[dict[str, Any]]:
    return [rule for rule in rules() if "alert" in rule]


def recording_rules() -> list[dict[str, Any]]:
    return [rule for rule in rules() if "record" in rule]


def alert_cases() -> Iterator[tuple[str, dict[str, Any]]]:
    for path in RULE_TESTS:
        for group in load(path)["tests"]:
            for case in group.get("alert_rule_test", []):
                yield path.name, case


# --- promtool ---------------------------------------------------------------------------------


def test_promtool_check_rules() -> None:
    result = run_promtool("check", "rules", str(RULES.relative_to(ROOT)))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_unit_tests_pass() -> None:
    assert RULE_TESTS, "no promtool unit tests in tests/rules/"
    result = run_promtool("test", "rules", *(str(p.relative_to(ROOT)) for p in RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(RULE_TESTS), result.stdout


def test_unit_tests_evaluate_recording_groups_before_alerts() -> None:
    """Without `group_eval_order` promtool evaluates groups in random order, and an alert reading
    a recording rule of another group sees the previous evaluation's value: flaky tests."""
    groups = [group["name"] for group in load(RULES)["groups"]]
    assert groups[-1] == "meshprobe.alerts"
    assert all(
        "alert" not in rule for group in load(RULES)["groups"][:-1] for rule in group["rules"]
    )
    for path in RULE_TESTS:
        assert load(path).get("group_eval_order") == groups, path.name


# Small edits to the rules, each of which some promtool test case must notice:
# (id, text in the rules file, its replacement everywhere, the test file that must fail).
MUTATIONS = [
    (
        "1h page threshold",
        'rate1h{scope="remote"} > (14.4',
        'rate1h{scope="remote"} > (10',
        "latency_burn",
    ),
    (
        "5m page threshold",
        'rate5m{scope="remote"} > (14.4',
        'rate5m{scope="remote"} > (13',
        "latency_burn",
    ),
    (
        "6h ticket threshold",
        'rate6h{scope="local"} > (6',
        'rate6h{scope="local"} > (5',
        "latency_burn",
    ),
    (
        "30m ticket threshold",
        'rate30m{scope="local"} > (6',
        'rate30m{scope="local"} > (4',
        "latency_burn",
    ),
    ("burn scope", 'scope="remote"', 'scope=~".+"', "latency_burn"),
    (
        "target down for",
        "success == 0\n        for: 5m",
        "success == 0\n        for: 4m",
        "target_down",
    ),
    ("top reason window", "probe=%q}[5m]", "probe=%q}[1h]", "target_down"),
    ("ca mismatch for", "match == 0\n        for: 5m", "match == 0\n        for: 6m", "trust"),
    ("28d threshold", "< 28 * 86400", "< 27 * 86400", "trust"),
    ("leaf horizon", "< 2 * 3600", "< 3 * 3600", "trust"),
    ("leaf excluded", '{role=~"intermediate|root"}', '{role=~".+"}', "trust"),
    (
        "peer for",
        "peer_up == 0\n        for: 10m",
        "peer_up == 0\n        for: 5m",
        "peers_failover",
    ),
    ("failover of the own cluster", '"$1", "target_cluster"', '"$1", "scope"', "peers_failover"),
    ("client fifth", "< 0.2 * (", "< 0.1 * (", "client_cert"),
    ("client hour", "time() < 3600", "time() < 1800", "client_cert"),
    (
        "client reload for",
        "success == 0\n        for: 15m",
        "success == 0\n        for: 20m",
        "client_cert",
    ),
    ("discovery errors", ">= 10", "> 10", "self_health"),
    ("lag threshold", "> 0.025", "> 0.04", "self_health"),
    ("absent job", 'job=~".*meshprobe.*"', 'job="meshprobe"', "self_health"),
    ("p99 quantile", "histogram_quantile(0.99,", "histogram_quantile(0.95,", "recording"),
    ("success window", "count[30m]", "count[1h]", "recording"),
    (
        "slo good events",
        "-\n                  sum by",
        "+\n                  sum by",
        "latency_burn",
    ),
]


@pytest.mark.parametrize(
    ("old", "new", "test_file"),
    [pytest.param(old, new, f, id=name) for name, old, new, f in MUTATIONS],
)
def test_unit_tests_catch_a_changed_rule(
    old: str, new: str, test_file: str, tmp_path: Path
) -> None:
    """The promtool tests are not vacuous: each of these small edits to the rules fails them."""
    text = RULES.read_text()
    assert old in text, f"mutation target not found: {old!r}"
    (tmp_path / "deploy" / "prometheus").mkdir(parents=True)
    (tmp_path / "deploy" / "prometheus" / RULES.name).write_text(text.replace(old, new))
    (tmp_path / "tests" / "rules").mkdir(parents=True)
    test = ROOT / "tests" / "rules" / f"{test_file}.yaml"
    (tmp_path / "tests" / "rules" / test.name).write_text(test.read_text())
    checked = run_promtool("check", "rules", f"deploy/prometheus/{RULES.name}", cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr  # still valid rules
    result = run_promtool("test", "rules", f"tests/rules/{test.name}", cwd=tmp_path)
    assert result.returncode != 0, f"{test.name} still passes with {new!r}:\n{result.stdout}"
    assert "FAILED" in result.stdout + result.stderr


# --- conventions --------------------------------------------------------------------------------


def test_alert_names_are_the_documented_set() -> None:
    assert {rule["alert"] for rule in alerting_rules()} == ALERTS


def test_recording_rule_names_are_the_documented_set() -> None:
    names = [rule["record"] for rule in recording_rules()]
    assert len(names) == len(set(names))
    assert set(names) == RECORDS
    for name in names:
        assert re.fullmatch(r"[a-z_]+:[a-z_]+:[a-z0-9_]+", name), name


def test_edge_recording_rules_aggregate_to_edge_labels() -> None:
    for rule in recording_rules():
        level = rule["record"].split(":")[0]
        want = {"edge": EDGE_LABELS, "cluster_pair": {"source_cluster", "target_cluster"}}[level]
        groupings = re.findall(r"\bby \(([^)]*)\)", rule["expr"])
        assert groupings, rule["record"]
        for grouping in groupings:
            labels = {label.strip() for label in grouping.split(",")} - {"le"}
            assert labels == want, (rule["record"], grouping)


def test_every_alert_has_severity_summary_description_runbook_and_for() -> None:
    for rule in alerting_rules():
        name = rule["alert"]
        assert rule.get("labels", {}).get("severity") in {"critical", "warning", "info"}, name
        annotations = rule.get("annotations", {})
        summary = annotations.get("summary", "")
        assert summary.endswith("."), (name, summary)
        assert "{{" not in summary, f"{name}: summary must be static"
        assert "{{" in annotations.get("description", ""), f"{name}: description not templated"
        assert annotations.get("runbook_url") == RUNBOOK_BASE + name.lower(), name
        assert re.fullmatch(r"\d+[mh]", rule.get("for", "")), f"{name}: for: {rule.get('for')}"


def test_descriptions_name_the_clusters_and_target_their_labels_carry() -> None:
    wanted = {
        "edge": ["source_cluster", "target_cluster", "target"],
        "peer": ["source_cluster", "peer_cluster"],
        "instance": ["source_cluster"],
    }
    kinds = {
        "MeshprobeCAMismatch": "peer",
        "MeshprobePeerUnreachable": "peer",
        "MeshprobeDiscoveryFailing": "instance",
        "MeshprobeEventLoopLagHigh": "instance",
        "MeshprobeClientCertificateExpiring": "instance",
        "MeshprobeClientCertificateReloadFailing": "instance",
        "MeshprobeAbsent": None,
    }
    for rule in alerting_rules():
        kind = kinds.get(rule["alert"], "edge")
        if "trust_root_expiry" in rule["expr"]:
            kind = "instance"
        description = rule["annotations"]["description"]
        for label in wanted.get(kind or "", []):
            assert f"$labels.{label} }}}}" in description, (rule["alert"], label)


def github_anchor(heading: str) -> str:
    slug = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return slug.replace(" ", "-")


def test_every_runbook_url_anchor_is_a_heading_of_the_runbooks() -> None:
    headings = re.findall(r"^#{1,6} (.+)$", RUNBOOKS.read_text(), flags=re.MULTILINE)
    anchors = {github_anchor(h) for h in headings}
    for rule in alerting_rules():
        url = rule["annotations"]["runbook_url"]
        assert url.startswith(RUNBOOK_BASE), url
        assert url.removeprefix(RUNBOOK_BASE) in anchors, f"no heading for {url} in {RUNBOOKS}"
    # And no runbook section without an alert.
    sections = {h for h in headings if h.startswith("Meshprobe")}
    assert sections == ALERTS


def test_every_alert_has_a_firing_and_a_quiet_unit_test_case() -> None:
    firing: set[str] = set()
    quiet: set[str] = set()
    severities_firing: set[tuple[str, str]] = set()
    for name, case in alert_cases():
        alerts = case.get("exp_alerts") or []
        (firing if alerts else quiet).add(case["alertname"])
        for alert in alerts:
            labels = alert.get("exp_labels", {})
            annotations = alert.get("exp_annotations", {})
            assert "severity" in labels, (name, case["alertname"], case["eval_time"])
            assert set(annotations) == {"summary", "description", "runbook_url"}, (
                name,
                case["alertname"],
            )
            severities_firing.add((case["alertname"], labels["severity"]))
    assert firing >= ALERTS, f"alerts never seen firing: {sorted(ALERTS - firing)}"
    assert quiet >= ALERTS, f"alerts never tested quiet: {sorted(ALERTS - quiet)}"
    defined = {(rule["alert"], rule["labels"]["severity"]) for rule in alerting_rules()}
    assert severities_firing >= defined, sorted(defined - severities_firing)


def test_every_recording_rule_has_a_promql_expr_test() -> None:
    exprs = [
        case["expr"]
        for path in RULE_TESTS
        for group in load(path)["tests"]
        for case in group.get("promql_expr_test", [])
    ]
    for record in RECORDS:
        assert any(re.search(rf"{re.escape(record)}\b", e) for e in exprs), record


# --- metric names -------------------------------------------------------------------------------

_KEYWORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
    "bool", "offset", "inf", "nan",
}  # fmt: skip


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (a small lexer, enough for our rules)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', " ", expr)  # strings
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges and subqueries
    text = re.sub(
        r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text
    )  # label lists
    names = set()
    for match in re.finditer(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?", text):
        word, call = match.group(1), match.group(2)
        if call is None and word not in _KEYWORDS:
            names.add(word)
    return names


def test_metric_name_lexer() -> None:
    expr = (
        'sum by (a, b) (rate(foo_total{x="y"}[5m])) / on (a) group_left '
        'bar:baz:rate5m > bool 0.5 unless label_replace(up, "l", "$1", "m", "(.*)")'
    )
    assert metric_names(expr) == {"foo_total", "bar:baz:rate5m", "up"}


def exposed_names() -> set[str]:
    """Sample names meshprobe exposes for the names in metrics/names.py, by metric type: the edge
    families of the fast exposition, the instance collector's, and the names of metrics/names.py
    that only appear with peers, discovery or a trust bundle configured."""
    types = {family.name: family.kind for family in FAMILIES}
    collector = MeshprobeCollector(source_cluster="c1", state=ProbeState(), status=InstanceStatus())
    types.update({family.name: family.type for family in collector.collect()})
    types.setdefault(m.DISCOVERY_ERRORS, "counter")
    suffixes = {
        "counter": ["_total"],
        "histogram": ["_bucket", "_sum", "_count"],
        "info": ["_info"],
    }
    names = set()
    for constant in vars(m).values():
        if isinstance(constant, str) and constant.startswith(m.PREFIX) and constant != m.PREFIX:
            kind = types.get(constant, "gauge")
            names.update(constant + s for s in suffixes.get(kind, [""]))
    for name, kind in types.items():
        names.update(name + s for s in suffixes.get(kind, [""]))
    return names


def test_every_metric_in_the_rules_is_one_meshprobe_exports() -> None:
    exposed = exposed_names()
    assert "meshprobe_probes_total" in exposed
    assert "meshprobe_probe_duration_seconds_bucket" in exposed
    assert "meshprobe_event_loop_lag_seconds_bucket" in exposed
    assert "meshprobe_probes" not in exposed
    assert "meshprobe_probe_success_total" not in exposed
    records = {rule["record"] for rule in recording_rules()}
    used: set[str] = set()
    for rule in rules():
        used |= metric_names(rule["expr"])
        for text in rule.get("annotations", {}).values():
            used |= set(re.findall(r"\bmeshprobe_[a-z_]+", text))
    unknown = used - exposed - records - {"up"}
    assert not unknown, f"not exported by meshprobe (see meshprobe/metrics/names.py): {unknown}"
    assert m.DISCOVERY_UP in used
    assert m.DISCOVERY_ERRORS + "_total" in used


# --- bucket layouts -----------------------------------------------------------------------------

PER_MINUTE = 200  # probes per minute of the edge below; all succeed, some slowly
FAST, SLOW, BUDGET = 0.030, 0.400, 0.150


@pytest.mark.parametrize(
    "layout",
    [DURATION_BUCKETS, (0.01, 0.15, 0.5, 2.0)],
    ids=["default-layout", "coarse-layout"],
)
@pytest.mark.parametrize(("slow_per_minute", "p99_over_budget"), [(1, 0), (4, 1)])
def test_rules_give_the_same_verdicts_with_any_layout_that_holds_the_budget(
    layout: tuple[float, ...], slow_per_minute: int, p99_over_budget: int, tmp_path: Path
) -> None:
    """The burn rules read the over-budget counter and the histogram's _count, never a bucket;
    the quantile rules read whatever buckets there are. With the budget among the bounds, p99
    lands on the right side of it with the default layout and with a four-bucket one."""
    assert BUDGET in layout
    edge = 'source_cluster="c1",target_cluster="c2",target="t",scope="remote",probe="http"'
    name = m.PROBE_DURATION
    series = {
        f"{m.PROBES}_total{{{edge}}}": f"0+{PER_MINUTE}x15",
        f"{name}_count{{{edge}}}": f"0+{PER_MINUTE}x15",
        f"{m.PROBE_OVER_BUDGET}_total{{{edge}}}": f"0+{slow_per_minute}x15",
    }
    for bound in (*layout, float("inf")):
        below = (PER_MINUTE - slow_per_minute) * (bound >= FAST) + slow_per_minute * (bound >= SLOW)
        le = "+Inf" if bound == float("inf") else repr(bound)
        series[f'{name}_bucket{{{edge},le="{le}"}}'] = f"0+{below}x15"
    labels = "{" + edge.replace(",", ", ") + "}"
    spec = {
        "rule_files": [str(RULES)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [{"series": s, "values": v} for s, v in series.items()],
                "promql_expr_test": [
                    {
                        "expr": f"edge:{name}:p99_rate5m > bool {BUDGET}",
                        "eval_time": "10m",
                        "exp_samples": [{"labels": labels, "value": p99_over_budget}],
                    },
                    {
                        # promtool compares floats exactly; the ratio is 1/200 or 4/200 up to
                        # rounding, so the test asks for it within 1e-9.
                        "expr": "abs(edge:meshprobe_probe_slo_errors:ratio_rate5m"
                        f" - {slow_per_minute / PER_MINUTE}) < bool 1e-9",
                        "eval_time": "10m",
                        "exp_samples": [{"labels": labels, "value": 1}],
                    },
                ],
            }
        ],
    }
    test = tmp_path / "layout.test.yaml"
    test.write_text(yaml.safe_dump(spec, sort_keys=False))
    result = run_promtool("test", "rules", str(test))
    assert result.returncode == 0, result.stdout + result.stderr
