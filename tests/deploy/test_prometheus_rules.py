"""deploy/prometheus: promtool checks and unit tests, and rules that match the real metrics."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fixtures.prometheus import exposed_metric_names
from tests.fixtures.servers import ROOT
from tests.fixtures.tools import tool

PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
ALERTS = PROMETHEUS_DIR / "alerts.yml"
ALERTS_TEST = PROMETHEUS_DIR / "alerts_test.yml"
CONFIG = PROMETHEUS_DIR / "prometheus.yml"
METRIC_NAME = re.compile(r"\bstream_projector_[a-z_]+")


def promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool("promtool"), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_promtool_accepts_the_alert_rules() -> None:
    result = promtool("check", "rules", ALERTS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_rule_unit_tests_pass() -> None:
    # alerts_test.yml fires the iterator-age alert on a lagging series and not on healthy ones.
    result = promtool("test", "rules", ALERTS_TEST)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_accepts_the_config_and_finds_its_rule_file() -> None:
    result = promtool("check", "config", CONFIG)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 rule files found" in result.stdout


def test_config_scrapes_the_daemon_on_its_compose_service_and_port() -> None:
    config = yaml.safe_load(CONFIG.read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}

    targets = [t for group in jobs["stream-projector"]["static_configs"] for t in group["targets"]]
    assert targets == ["stream-projector:9102"]
    assert config["global"]["scrape_interval"]
    assert (CONFIG.parent / config["rule_files"][0]).resolve() == ALERTS.resolve()


def test_the_issue_alerts_exist_each_with_severity_summary_and_description() -> None:
    by_name = {rule["alert"]: rule for rule in rules()}

    for name in (
        "StreamProjectorIteratorAgeHigh",
        "StreamProjectorShardStalled",
        "StreamProjectorDeadLetters",
        "StreamProjectorNoLeasesHeld",
        "StreamProjectorLeaseChurn",
    ):
        assert name in by_name, name
    for name, rule in by_name.items():
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        assert rule["annotations"]["summary"], name
        assert rule["annotations"]["description"], name


def test_iterator_age_alert_is_the_common_60_second_alarm_per_shard() -> None:
    rule = next(r for r in rules() if r["alert"] == "StreamProjectorIteratorAgeHigh")
    expr = " ".join(rule["expr"].split())
    assert expr == "max by (stream, shard) (stream_projector_iterator_age_seconds) > 60"
    assert rule["for"] == "5m"


@pytest.mark.parametrize("path", [ALERTS, ALERTS_TEST], ids=lambda p: p.name)
def test_rules_only_name_metrics_the_daemon_exposes(path: Path) -> None:
    names = set(METRIC_NAME.findall(path.read_text()))
    # Annotations may name a family in prose; every name must still be one we expose.
    assert names
    assert names <= exposed_metric_names(), names - exposed_metric_names()
