"""Grafana dashboards and provisioning: units, datasource, metric contract, valid PromQL."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.prometheus import PrometheusQueryError, PrometheusServer, dashboard_queries, iter_panels

REPO = Path(__file__).resolve().parents[2]
GRAFANA = REPO / "deploy" / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
DASHBOARD_UIDS = {"overview.json": "taskqueue-overview", "job-type.json": "taskqueue-job-type"}
DATASOURCE_UID = "prometheus"
DASHBOARDS_CONTAINER_PATH = "/var/lib/grafana/dashboards"

# The public metric contract (app/ exports these; seconds as unit).
CONTRACT = {
    "taskqueue_jobs_processed_total",
    "taskqueue_job_duration_seconds",
    "taskqueue_job_wait_seconds",
    "taskqueue_jobs_in_progress",
    "taskqueue_outcome_log_errors_total",
    "taskqueue_jobs_enqueued_total",
    "taskqueue_queue_depth",
    "taskqueue_queue_oldest_job_age_seconds",
    "taskqueue_queue_paused",
    "taskqueue_workers_alive",
    "taskqueue_cleanup_last_run_timestamp_seconds",
    "taskqueue_http_requests_total",
    "taskqueue_http_request_duration_seconds",
}
#: The contract's metrics with a `queue` label: the overview shows them for the queues `$queue` picks.
PER_QUEUE = CONTRACT - {
    "taskqueue_outcome_log_errors_total",
    "taskqueue_workers_alive",
    "taskqueue_cleanup_last_run_timestamp_seconds",
    "taskqueue_http_requests_total",
    "taskqueue_http_request_duration_seconds",
}
#: Values for every dashboard variable.
VARIABLES = {"job": "emailJob", "queue": ".*"}
HISTOGRAMS = {"taskqueue_job_duration_seconds", "taskqueue_job_wait_seconds", "taskqueue_http_request_duration_seconds"}

RANGE_FUNCTION = re.compile(r"\b(rate|irate|increase|delta|idelta|\w+_over_time)\s*\(")
RANGE_SELECTOR = re.compile(r"\[([^\]]*)\]")
# A metric selector: a name followed by `{` or `[`, or any name with our prefix.
SELECTOR = re.compile(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*[{\[]|\b(taskqueue_[a-z0-9_]+)")


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def panels_of(path: Path) -> list[Any]:
    return list(iter_panels(load(path)["panels"]))


def all_panels() -> list[Any]:
    return [pytest.param(panel, id=f"{path.stem}:{panel['title']}") for path in DASHBOARDS for panel in panels_of(path)]


def metric_names(expr: str) -> set[str]:
    names = {match.group(1) or match.group(2) for match in SELECTOR.finditer(expr)}
    return {re.sub(r"_(bucket|sum|count)$", "", name) if name.startswith("taskqueue_") else name for name in names} - {
        ""
    }


def test_dashboards_present_with_stable_uids() -> None:
    assert {path.name for path in DASHBOARDS} == set(DASHBOARD_UIDS)
    for path in DASHBOARDS:
        dashboard = load(path)
        assert dashboard["uid"] == DASHBOARD_UIDS[path.name]
        assert dashboard["schemaVersion"] >= 36
        ids = [panel["id"] for panel in panels_of(path)]
        assert len(ids) == len(set(ids)), f"{path.name}: duplicate panel ids"


@pytest.mark.parametrize("panel", all_panels())
def test_panel_is_complete(panel: dict[str, Any]) -> None:
    assert panel["type"] in {"timeseries", "stat", "gauge", "bargauge", "table"}
    assert panel["fieldConfig"]["defaults"].get("unit"), "panel has no unit"
    assert panel["datasource"]["uid"] == DATASOURCE_UID
    assert panel["targets"], "panel has no query"
    for target in panel["targets"]:
        assert target.get("datasource", {"uid": DATASOURCE_UID})["uid"] == DATASOURCE_UID
        expr = target["expr"]
        if RANGE_FUNCTION.search(expr):
            ranges = RANGE_SELECTOR.findall(expr)
            assert ranges, f"range function without a range selector: {expr}"
            assert set(ranges) == {"$__rate_interval"}, f"use [$__rate_interval]: {expr}"
        unknown = metric_names(expr) - CONTRACT
        assert not unknown, f"metrics outside the contract: {sorted(unknown)} in {expr}"


def test_overview_shows_every_contract_metric() -> None:
    exprs = " ".join(expr for _, expr in dashboard_queries(GRAFANA / "dashboards" / "overview.json", VARIABLES))
    assert CONTRACT - metric_names(exprs) == set()


def test_overview_filters_every_queue_figure_by_queue() -> None:
    dashboard = load(GRAFANA / "dashboards" / "overview.json")
    [variable] = [v for v in dashboard["templating"]["list"] if v["name"] == "queue"]
    assert variable["type"] == "query" and variable["datasource"]["uid"] == DATASOURCE_UID
    assert variable["query"] == "label_values(taskqueue_queue_depth, queue)"
    assert variable["multi"] and variable["includeAll"] and variable["allValue"] == ".*"
    for title, expr in dashboard_queries(GRAFANA / "dashboards" / "overview.json", {"queue": "QUEUE"}):
        for match in re.finditer(r"(taskqueue_\w+)(\{[^}]*\})?", expr):
            if re.sub(r"_(bucket|sum|count)$", "", match.group(1)) in PER_QUEUE:
                assert 'queue=~"QUEUE"' in (match.group(2) or ""), f"{title}: not filtered by $queue: {expr}"


def test_overview_shows_which_queues_are_paused() -> None:
    panels = {panel["title"]: panel for panel in panels_of(GRAFANA / "dashboards" / "overview.json")}
    [target] = panels["Paused queues"]["targets"]
    assert "taskqueue_queue_paused" in target["expr"] and "by (queue)" in target["expr"]


def test_job_type_dashboard_filters_by_job() -> None:
    dashboard = load(GRAFANA / "dashboards" / "job-type.json")
    [variable] = [v for v in dashboard["templating"]["list"] if v["name"] == "job"]
    assert variable["type"] == "query"
    assert variable["datasource"]["uid"] == DATASOURCE_UID
    assert variable["query"] == "label_values(taskqueue_jobs_processed_total, job)"
    for title, expr in dashboard_queries(GRAFANA / "dashboards" / "job-type.json", {"job": "JOB"}):
        selectors = re.findall(r"taskqueue_\w+(\{[^}]*\})?", expr)
        assert selectors and all('job="JOB"' in s for s in selectors), f"{title}: not filtered by $job: {expr}"


def test_datasource_provisioning_matches_dashboards() -> None:
    provisioning = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
    [datasource] = provisioning["datasources"]
    assert datasource["uid"] == DATASOURCE_UID
    assert datasource["type"] == "prometheus"
    assert datasource["url"] == "http://prometheus:9090"
    assert datasource["isDefault"] is True


def test_dashboard_provider_points_at_the_dashboards_mount() -> None:
    provisioning = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "taskqueue.yml").read_text())
    [provider] = provisioning["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == DASHBOARDS_CONTAINER_PATH


def test_compose_mounts_what_the_deploy_files_expect() -> None:
    compose_file = REPO / "docker-compose.yml"
    services = yaml.safe_load(compose_file.read_text())["services"]

    def mounts(service: str) -> set[tuple[str, str]]:
        pairs = set()
        for volume in services[service].get("volumes", []):
            if isinstance(volume, dict):
                source, target = volume.get("source", ""), volume["target"]
            else:
                source, target = volume.split(":")[:2]
            pairs.add((str(source).removeprefix("./").rstrip("/"), target.rstrip("/")))
        return pairs

    assert {
        ("deploy/prometheus.yml", "/etc/prometheus/prometheus.yml"),
        ("deploy/alerts", "/etc/prometheus/alerts"),
    } <= mounts("prometheus")
    assert {
        ("deploy/grafana/provisioning", "/etc/grafana/provisioning"),
        ("deploy/grafana/dashboards", DASHBOARDS_CONTAINER_PATH),
    } <= mounts("grafana")


def test_dashboard_queries_substitutes_every_variable() -> None:
    for path in DASHBOARDS:
        for title, expr in dashboard_queries(path, VARIABLES):
            assert "$" not in expr, f"{path.name}: {title}: {expr}"
    with pytest.raises(KeyError, match=r"\$job"):
        dashboard_queries(GRAFANA / "dashboards" / "job-type.json")


def test_every_query_is_valid_promql() -> None:
    errors = []
    with PrometheusServer() as prometheus:
        for path in DASHBOARDS:
            for title, expr in dashboard_queries(path, VARIABLES):
                try:
                    prometheus.query(expr)
                except PrometheusQueryError as error:
                    errors.append(f"{path.name}: {title}: {error}")
    assert not errors, "\n".join(errors)
