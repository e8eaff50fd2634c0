"""deploy/grafana/dashboard.json: a valid dashboard whose queries name only real metrics."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.fixtures.prometheus import exposed_metric_names
from tests.fixtures.servers import ROOT
from tests.fixtures.tools import tool

DASHBOARD = ROOT / "deploy" / "grafana" / "dashboard.json"
METRIC_NAME = re.compile(r"\bstream_projector_[a-z_]+")
# What Grafana substitutes before it sends a query to Prometheus.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__range": "1h", "$stream": ".*"}


def load() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, including those nested in collapsed rows."""
    found = []
    for panel in dashboard["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found


def queries(dashboard: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in panels(dashboard) for t in p.get("targets", [])]


def test_dashboard_is_a_grafana_model_with_a_uid_title_and_unique_panel_ids() -> None:
    dashboard = load()

    assert dashboard["uid"] == "stream-projector"
    assert dashboard["title"]
    assert isinstance(dashboard["schemaVersion"], int)
    ids = [p["id"] for p in panels(dashboard)]
    assert len(ids) == len(set(ids))
    for panel in panels(dashboard):
        assert {"h", "w", "x", "y"} <= panel["gridPos"].keys(), panel["title"]
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24, panel["title"]


def test_every_graph_panel_queries_a_metric_that_metrics_registers() -> None:
    exposed = exposed_metric_names()
    for panel in panels(load()):
        if panel["type"] == "row":
            continue
        exprs = [t["expr"] for t in panel["targets"]]
        assert exprs, f"panel {panel['title']!r} has no query"
        for expr in exprs:
            names = set(METRIC_NAME.findall(expr))
            assert names, f"{panel['title']!r}: {expr} names no stream_projector_ metric"
            assert names <= exposed, f"{panel['title']!r}: unknown {names - exposed}"


def test_dashboard_covers_lag_throughput_outcomes_errors_leases_and_latency() -> None:
    used = {name for expr in queries(load()) for name in METRIC_NAME.findall(expr)}

    assert {
        "stream_projector_iterator_age_seconds",
        "stream_projector_get_records_iterator_age_seconds",
        "stream_projector_records_pending",
        "stream_projector_records_total",
        "stream_projector_retries_total",
        "stream_projector_dead_letters_total",
        "stream_projector_leases_held",
        "stream_projector_batch_duration_seconds_bucket",
    } <= used


def test_stream_variable_and_datasource_are_templated() -> None:
    variables = {v["name"]: v for v in load()["templating"]["list"]}

    assert variables["datasource"]["query"] == "prometheus"
    assert set(METRIC_NAME.findall(variables["stream"]["definition"])) <= exposed_metric_names()


def test_every_query_is_valid_promql(tmp_path: Path) -> None:
    # promtool parses each query as a recording rule: a typo in PromQL fails here, not in Grafana.
    exprs = []
    for expr in queries(load()):
        for variable, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, value)
        exprs.append(expr)
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query_{i}", "expr": e} for i, e in enumerate(exprs)
                ],
            }
        ]
    }
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump(rules))

    result = subprocess.run(
        [tool("promtool"), "check", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(exprs)} rules found" in result.stdout


def test_every_panel_uses_the_templated_datasource() -> None:
    for panel in panels(load()):
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
