"""The shipped Grafana dashboards: valid, filtered by the `datasource` and `cluster` variables,
querying only names that exist, in PromQL that Prometheus 2.42 parses."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests import dashboards as d

PATHS = d.dashboard_paths()
IDS = [p.name for p in PATHS]
EXPECTED = {"meshprobe-overview.json", "meshprobe-target.json"}
RULES_FILE = d.DASHBOARD_DIR.parent / "deploy" / "prometheus" / "meshprobe-rules.yaml"
DATASOURCE_REF = {"type": "prometheus", "uid": "${datasource}"}
# 0/1 gauges: a stat panel showing one raw must name both states and colour 0 red.
BOOLEAN_METRICS = {
    "meshprobe_probe_success",
    "meshprobe_peer_up",
    "meshprobe_peer_trust_match",
    "meshprobe_tls_verified",
    "meshprobe_config_reload_success",
    "meshprobe_trust_bundle_reload_success",
    "meshprobe_discovery_up",
    "up",
}
# Values that make every expression complete, for the parse check.
SAMPLE_VARIABLES = {"cluster": "cluster1|cluster2", "target_cluster": "cluster2", "target": "a/b"}


def _dashboards() -> list[tuple[str, dict[str, Any]]]:
    return [(p.name, d.load(p)) for p in PATHS]


def _variable(dashboard: dict[str, Any], name: str) -> dict[str, Any]:
    found = [v for v in dashboard["templating"]["list"] if v["name"] == name]
    assert len(found) == 1, f"variable {name!r}: {len(found)} definitions"
    variable: dict[str, Any] = found[0]
    return variable


def _variable_query(variable: dict[str, Any]) -> str:
    query = variable.get("query")
    return str(query.get("query", "") if isinstance(query, dict) else query)


def _walk(node: Any, path: str = "") -> list[tuple[str, Any]]:
    """(json path, value) of every `datasource` key anywhere in the document."""
    found: list[tuple[str, Any]] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "datasource":
                found.append((f"{path}.{key}", value))
            found.extend(_walk(value, f"{path}.{key}"))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found.extend(_walk(value, f"{path}[{i}]"))
    return found


def _query_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in d.iter_panels(dashboard) if p.get("type") not in ("row", "text")]


def test_the_two_dashboards_ship() -> None:
    assert set(IDS) >= EXPECTED


@pytest.mark.parametrize("path", PATHS, ids=IDS)
def test_valid_json_with_dashboard_basics(path: Path) -> None:
    dashboard = json.loads(path.read_text(encoding="utf-8"))
    assert isinstance(dashboard, dict)
    assert dashboard["uid"] and len(dashboard["uid"]) <= 40
    assert dashboard["title"].startswith("meshprobe")
    assert dashboard.get("id") is None, "an exported id would clash on import"
    assert 36 <= dashboard["schemaVersion"] <= 39
    assert "meshprobe" in dashboard["tags"]
    assert _query_panels(dashboard), "no panels"


def test_uids_and_titles_are_unique_across_dashboards() -> None:
    dashboards = _dashboards()
    uids = Counter(dash["uid"] for _, dash in dashboards)
    assert [u for u, n in uids.items() if n > 1] == []
    # Panel titles key FAILURE_ONLY_PANELS and CONDITIONAL_PANELS, so they must be unambiguous.
    titles = Counter(p["title"] for _, dash in dashboards for p in _query_panels(dash))
    assert [t for t, n in titles.items() if n > 1] == []


@pytest.mark.parametrize("path", PATHS, ids=IDS)
def test_panel_ids_unique_and_layout_does_not_overlap(path: Path) -> None:
    dashboard = d.load(path)
    panels = list(d.iter_panels(dashboard))
    ids = Counter(p["id"] for p in panels)
    assert [i for i, n in ids.items() if n > 1] == []
    cells: dict[tuple[int, int], str] = {}
    for p in panels:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{p['title']!r} overlaps {cells[(x, y)]!r}"
                cells[(x, y)] = p["title"]


@pytest.mark.parametrize("path", PATHS, ids=IDS)
def test_datasource_and_cluster_variables(path: Path) -> None:
    dashboard = d.load(path)
    ds = _variable(dashboard, "datasource")
    assert ds["type"] == "datasource"
    assert ds["query"] == "prometheus"
    cluster = _variable(dashboard, "cluster")
    assert cluster["type"] == "query"
    assert _variable_query(cluster) == "label_values(meshprobe_probes_total, source_cluster)"
    assert cluster["multi"] is True
    assert cluster["includeAll"] is True
    assert cluster["datasource"] == DATASOURCE_REF


@pytest.mark.parametrize("path", PATHS, ids=IDS)
def test_no_hard_coded_datasource(path: Path) -> None:
    refs = _walk(d.load(path))
    assert refs, "no datasource references at all"
    bad = [(where, ref) for where, ref in refs if ref != DATASOURCE_REF]
    assert bad == []


@pytest.mark.parametrize("path", PATHS, ids=IDS)
def test_every_panel_queries_the_datasource_variable_and_filters_by_cluster(path: Path) -> None:
    dashboard = d.load(path)
    for panel in _query_panels(dashboard):
        targets = panel.get("targets", [])
        assert targets, f"{panel['title']!r} has no query"
        assert panel["datasource"] == DATASOURCE_REF, panel["title"]
        for target in targets:
            where = f"{panel['title']!r} {target.get('refId')}"
            assert target["datasource"] == DATASOURCE_REF, where
            expr = target["expr"]
            assert "cluster" in d.variables_used(expr), f"{where} does not use $cluster: {expr}"
            assert 'source_cluster=~"$cluster"' in expr, where


def test_target_dashboard_filters_every_query_by_target() -> None:
    dashboard = d.load(d.DASHBOARD_DIR / "meshprobe-target.json")
    for name in ("target_cluster", "target"):
        variable = _variable(dashboard, name)
        assert variable["datasource"] == DATASOURCE_REF
        assert "cluster" in d.variables_used(_variable_query(variable)), name
    for panel, target in d.panel_targets(dashboard):
        expr = target["expr"]
        assert 'target="$target"' in expr, panel["title"]
        assert 'target_cluster="$target_cluster"' in expr, panel["title"]


@pytest.mark.parametrize("path", PATHS, ids=IDS)
def test_every_variable_used_is_defined(path: Path) -> None:
    dashboard = d.load(path)
    defined = {v["name"] for v in dashboard["templating"]["list"]} | d.GRAFANA_BUILTINS.keys()
    used: set[str] = set()
    for panel, target in d.panel_targets(dashboard):
        used |= d.variables_used(target["expr"]) | d.variables_used(panel["title"])
        used |= {panel["repeat"]} if "repeat" in panel else set()
    for variable in dashboard["templating"]["list"]:
        used |= d.variables_used(_variable_query(variable))
    assert used - defined == set()


@pytest.mark.parametrize("path", PATHS, ids=IDS)
def test_every_name_queried_exists(path: Path) -> None:
    unknown = {}
    for title, expr in d.dashboard_queries(path, SAMPLE_VARIABLES):
        names = d.metric_names(expr)
        assert names, f"{title!r} selects no series: {expr}"
        bad = sorted(n for n in names if not d.is_known_metric(n))
        bad_functions = sorted(d.functions_called(expr) - d.PROMQL_FUNCTIONS)
        if bad or bad_functions:
            unknown[title] = bad + bad_functions
    assert unknown == {}


def test_recording_rules_used_are_defined_in_the_rules_file() -> None:
    if not RULES_FILE.is_file():
        pytest.skip(f"{RULES_FILE} not written yet")
    rules = yaml.safe_load(RULES_FILE.read_text(encoding="utf-8"))
    recorded = {r["record"] for g in rules["groups"] for r in g["rules"] if "record" in r}
    used = {
        name
        for path in PATHS
        for _, expr in d.dashboard_queries(path, SAMPLE_VARIABLES)
        for name in d.metric_names(expr)
        if ":" in name
    }
    assert used, "the dashboards use no recording rule"
    assert used - recorded == set()


@pytest.mark.parametrize("path", PATHS, ids=IDS)
def test_every_panel_has_a_unit(path: Path) -> None:
    missing = [
        p["title"]
        for p in _query_panels(d.load(path))
        if not p["fieldConfig"]["defaults"].get("unit")
    ]
    assert missing == []


@pytest.mark.parametrize("path", PATHS, ids=IDS)
def test_boolean_stats_name_both_states_and_colour_zero_red(path: Path) -> None:
    checked = 0
    for panel in _query_panels(d.load(path)):
        if panel["type"] != "stat" or len(panel["targets"]) != 1:
            continue
        expr = panel["targets"][0]["expr"]
        if not (d.metric_names(expr) & BOOLEAN_METRICS) or expr.startswith("count("):
            continue
        checked += 1
        options = {
            value: option
            for mapping in panel["fieldConfig"]["defaults"]["mappings"]
            for value, option in mapping["options"].items()
        }
        assert {"0", "1"} <= options.keys(), panel["title"]
        assert options["0"]["color"] == "red", panel["title"]
        assert options["1"]["color"] == "green", panel["title"]
    assert checked, "no 0/1 stat panel found"


def test_ca_match_panel_turns_red_on_zero() -> None:
    overview = d.load(d.DASHBOARD_DIR / "meshprobe-overview.json")
    (panel,) = [p for p in _query_panels(overview) if p["title"] == "CA match per peer"]
    assert d.metric_names(panel["targets"][0]["expr"]) == {"meshprobe_peer_trust_match"}
    steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert steps[0] == {"color": "red", "value": None}
    assert steps[1]["value"] == 1


def test_failure_only_and_conditional_panels_exist() -> None:
    titles = {p["title"] for _, dash in _dashboards() for p in _query_panels(dash)}
    assert d.FAILURE_ONLY_PANELS - titles == set()
    assert d.CONDITIONAL_PANELS.keys() - titles == set()
    assert d.FAILURE_ONLY_PANELS.isdisjoint(d.CONDITIONAL_PANELS)


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
def test_every_expression_parses_with_promtool(tmp_path: Path) -> None:
    """promtool (Debian's 2.42, what scripts/test.sh installs) parses each query as a rule."""
    rules = [
        {"record": f"dashboard_query_{i}", "expr": expr}
        for i, (_, expr) in enumerate(
            q for path in PATHS for q in d.dashboard_queries(path, SAMPLE_VARIABLES)
        )
    ]
    assert len(rules) > 20
    file = tmp_path / "dashboards.rules.yaml"
    file.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    result = subprocess.run(
        ["promtool", "check", "rules", str(file)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


# The helpers themselves: each check above is only as good as these.


def test_substitute_fills_each_form_and_keeps_label_replace_groups() -> None:
    text = 'x{a=~"$cluster", b="${cluster}", c="${cluster:regex}", t="$target_cluster"}[$__range]'
    out = d.substitute(text, {"cluster": "c1|c2", "target_cluster": "c3"})
    assert out == 'x{a=~"c1|c2", b="c1|c2", c="c1|c2", t="c3"}[1h]'
    assert d.substitute('label_replace(x, "a", "$1", "b", "(.*)")', {}) == (
        'label_replace(x, "a", "$1", "b", "(.*)")'
    )
    assert d.substitute("rate(x[$__rate_interval])", {"__rate_interval": "20s"}) == "rate(x[20s])"


def test_substitute_refuses_a_variable_without_value() -> None:
    with pytest.raises(ValueError, match="target"):
        d.substitute('x{target="$target"}', {"cluster": "c1"})


def test_metric_names_ignore_labels_functions_and_keywords() -> None:
    expr = (
        'sum by (source_cluster, le) (rate(meshprobe_event_loop_lag_seconds_bucket{a="up"}[5m]))'
        " / on (instance) group_left (source_cluster) topk by (job) (1, up offset 5m)"
        ' or vector(0) * label_replace(edge:x:y, "a", "$1", "b", "(.*)") > 1e3'
    )
    assert d.metric_names(expr) == {"meshprobe_event_loop_lag_seconds_bucket", "up", "edge:x:y"}
    assert d.functions_called(expr) == {"sum", "rate", "topk", "vector", "label_replace"}


def test_the_name_checks_reject_what_they_should() -> None:
    assert d.is_known_metric("meshprobe_probe_failures_total")
    assert d.is_known_metric("meshprobe_event_loop_lag_seconds_bucket")
    assert d.is_known_metric("process_resident_memory_bytes")
    assert d.is_known_metric("edge:meshprobe_probe_success:ratio_rate6h")
    assert not d.is_known_metric("meshprobe_probe_failure_total")
    assert not d.is_known_metric("edge:meshprobe_probe_success:ratio_rate2h")
    assert not d.is_known_metric("node_cpu_seconds_total")
    assert "sort_by_label" not in d.PROMQL_FUNCTIONS  # Prometheus 2.49+


def test_dashboard_queries_returns_titles_as_written(tmp_path: Path) -> None:
    dash = {
        "panels": [
            {"type": "row", "title": "r", "panels": [
                {"title": "Phases from $cluster", "targets": [{"expr": 'x{c=~"$cluster"}'}]},
            ]},
            {"title": "No query", "targets": [{"refId": "A"}]},
        ]
    }  # fmt: skip
    path = tmp_path / "d.json"
    path.write_text(json.dumps(dash))
    assert d.dashboard_queries(path, {"cluster": "c1"}) == [("Phases from $cluster", 'x{c=~"c1"}')]


# The trickiest queries, evaluated by promtool's PromQL engine on synthetic series.

PROMTOOL_VARIABLES = {
    "cluster": "cluster1",
    "target_cluster": "cluster1",
    "target": "t",
    "__rate_interval": "5m",
}


def _query(title: str) -> str:
    (expr,) = [
        e for path in PATHS for t, e in d.dashboard_queries(path, PROMTOOL_VARIABLES) if t == title
    ]
    return expr


def _promtool_eval(tmp_path: Path, series: dict[str, str], tests: list[dict[str, Any]]) -> None:
    if shutil.which("promtool") is None:
        pytest.skip("promtool not installed")
    spec = {
        "rule_files": [],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [{"series": s, "values": v} for s, v in series.items()],
                "promql_expr_test": tests,
            }
        ],
    }
    file = tmp_path / "dashboards.test.yaml"
    file.write_text(yaml.safe_dump(spec, sort_keys=False))
    result = subprocess.run(
        ["promtool", "test", "rules", str(file)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_failover_share_counts_answers_from_other_clusters_on_local_targets(
    tmp_path: Path,
) -> None:
    edge = 'source_cluster="cluster1", target_cluster="cluster1", probe="http", job="mp"'
    served = "meshprobe_served_total{" + edge
    series = {
        # t: 1 answer/s from its own cluster, 3/s from cluster2 -> 75% failover.
        f'{served}, target="t", scope="local", served_by_cluster="cluster1"}}': "0+60x10",
        f'{served}, target="t", scope="local", served_by_cluster="cluster2"}}': "0+180x10",
        # t2: only its own cluster -> 0, still shown.
        f'{served}, target="t2", scope="local", served_by_cluster="cluster1"}}': "0+60x10",
        # remote edges are not failover, whoever answers.
        f'{served}, target="r", scope="remote", served_by_cluster="cluster3"}}': "0+60x10",
        # another source cluster is filtered out by $cluster.
        'meshprobe_served_total{source_cluster="cluster9", target_cluster="cluster9", probe="http",'
        ' job="mp", target="t", scope="local", served_by_cluster="cluster2"}': "0+60x10",
    }
    labels = '{source_cluster="cluster1", target_cluster="cluster1", target="%s"}'
    _promtool_eval(
        tmp_path,
        series,
        [
            {
                "expr": _query("Failover share (local targets)"),
                "eval_time": "10m",
                "exp_samples": [
                    {"labels": labels % "t", "value": 0.75},
                    {"labels": labels % "t2", "value": 0},
                ],
            }
        ],
    )


def test_scrape_up_keeps_a_down_target_under_its_cluster(tmp_path: Path) -> None:
    target = 'instance="10.0.0.1:9942", job="meshprobe"'
    # A failed scrape sets up to 0 and marks every series of the target stale.
    series = {
        f"up{{{target}}}": "1 1 1 0 0 0",
        f'meshprobe_build_info{{{target}, source_cluster="cluster1", version="0.1.0"}}': (
            "1 1 1 stale"
        ),
        'up{instance="10.0.0.2:9942", job="meshprobe"}': "1 1 1 1 1 1",
        'meshprobe_build_info{instance="10.0.0.2:9942", job="meshprobe",'
        ' source_cluster="cluster9", version="0.1.0"}': "1 1 1 1 1 1",
    }
    _promtool_eval(
        tmp_path,
        series,
        [
            {
                "expr": _query("Scrape up"),
                "eval_time": "5m",
                "exp_samples": [
                    {"labels": f'{{{target}, source_cluster="cluster1"}}', "value": 0},
                ],
            }
        ],
    )


def test_failures_by_reason_hides_reasons_without_failures(tmp_path: Path) -> None:
    edge = (
        'source_cluster="cluster1", target_cluster="cluster1", target="t", scope="local",'
        ' probe="http"'
    )
    series = {
        f'meshprobe_probe_failures_total{{{edge}, reason="timeout"}}': "0+30x10",
        f'meshprobe_probe_failures_total{{{edge}, reason="dns"}}': "0+0x10",
    }
    _promtool_eval(
        tmp_path,
        series,
        [
            {
                "expr": _query("Failures by reason"),
                "eval_time": "10m",
                "exp_samples": [
                    {"labels": '{source_cluster="cluster1", reason="timeout"}', "value": 0.5}
                ],
            }
        ],
    )
