"""Prometheus config and alert rules: promtool checks, rule unit tests, and rule hygiene."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.prometheus import require_binary

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "deploy" / "prometheus.yml"
RULE_FILES = sorted((REPO / "deploy" / "alerts").glob("*.yml"))
RULE_TESTS = sorted((REPO / "deploy" / "alerts" / "tests").glob("*.yml"))


def alert_rules() -> list[dict[str, Any]]:
    """Every alerting rule in deploy/alerts/*.yml."""
    return [
        rule
        for path in RULE_FILES
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    ]


def alert_cases() -> list[dict[str, Any]]:
    """Every alert_rule_test case in deploy/alerts/tests/*.yml."""
    return [
        case
        for path in RULE_TESTS
        for test in yaml.safe_load(path.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
    ]


def promtool(*args: str) -> None:
    command = [require_binary("promtool"), *args]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"{' '.join(command)} exited {result.returncode}:\n{result.stdout}{result.stderr}"


def relative(paths: list[Path]) -> list[str]:
    return [str(path.relative_to(REPO)) for path in paths]


def test_files_exist() -> None:
    assert RULE_FILES, "no rule files in deploy/alerts/"
    assert RULE_TESTS, "no promtool tests in deploy/alerts/tests/"


def test_prometheus_config_is_valid() -> None:
    promtool("check", "config", str(CONFIG.relative_to(REPO)))


def test_rules_are_valid() -> None:
    promtool("check", "rules", *relative(RULE_FILES))


def test_rule_unit_tests_pass() -> None:
    promtool("test", "rules", *relative(RULE_TESTS))


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda rule: rule["alert"])
def test_rule_has_severity_summary_and_description(rule: dict[str, Any]) -> None:
    assert rule.get("labels", {}).get("severity") in {"critical", "warning", "info"}
    assert rule.get("annotations", {}).get("summary")
    assert rule.get("annotations", {}).get("description")


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda rule: rule["alert"])
def test_rule_is_tested_firing_and_quiet(rule: dict[str, Any]) -> None:
    cases = [case for case in alert_cases() if case["alertname"] == rule["alert"]]
    assert any(case.get("exp_alerts") for case in cases), f"no promtool test where {rule['alert']} fires"
    assert any(not case.get("exp_alerts") for case in cases), f"no promtool test where {rule['alert']} is quiet"


def test_scrape_config_matches_the_deployment() -> None:
    config = yaml.safe_load(CONFIG.read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert config["rule_files"] == ["alerts/*.yml"], "rules are mounted next to prometheus.yml"
    # Our metrics' `job` label is the job type: without honor_labels it would become `exported_job`.
    assert jobs["api"].get("honor_labels") is True
    assert jobs["worker"].get("honor_labels") is True
    assert jobs["api"]["static_configs"] == [{"targets": ["api:3002"]}]
    assert jobs["worker"]["dns_sd_configs"][0] == {
        "names": ["worker"],
        "type": "A",
        "port": 9191,
        "refresh_interval": "30s",
    }
