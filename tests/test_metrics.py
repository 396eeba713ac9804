"""The monitor, end to end: exact counters from 2 worker processes, lint-free exposition, and every
dashboard panel answered by a real Prometheus that scraped the real API and worker."""

from __future__ import annotations

import math
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.fixed_receiver import Receiver
from tests.support.prometheus import PrometheusServer, dashboard_queries, require_binary
from tests.support.services import ROOT, Stack, free_port, running_redis, wait_until

pytestmark = pytest.mark.slow

SUCCEEDING = 10
DASHBOARDS = sorted((ROOT / "deploy" / "grafana" / "dashboards").glob("*.json"))


class Workload:
    def __init__(
        self, stack: Stack, api_base: str, worker_metrics: str, ids: list[str], prometheus: PrometheusServer
    ) -> None:
        self.stack = stack
        self.api_base = api_base
        self.worker_metrics = worker_metrics
        self.ids = ids
        self.prometheus = prometheus


@pytest.fixture(scope="module")
def workload(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workload]:
    """10 emails that succeed and 1 webhook that fails 6 times, run by 2 worker processes."""
    tmp = tmp_path_factory.mktemp("metrics")
    receiver = Receiver(500)
    with running_redis(tmp / "redis", appendonly=True) as redis_server:
        stack = Stack(redis_server, tmp, RETRY_MIN_BACKOFF_MS="20", RETRY_MAX_BACKOFF_MS="200")
        try:
            _, base = stack.api()
            metrics_port = free_port()
            stack.worker(processes=2, threads=4, METRICS_PORT=str(metrics_port), METRICS_HOST="127.0.0.1")
            worker_metrics = f"http://127.0.0.1:{metrics_port}/metrics"
            wait_until(lambda: httpx.get(worker_metrics).status_code == 200, message="the worker metrics listener")
            targets = {"api": [base.removeprefix("http://")], "worker": [f"127.0.0.1:{metrics_port}"]}
            with PrometheusServer(targets) as prometheus:
                # Scraped before, during and after the workload, as a live dashboard would be.
                api = stack.client(base)
                ids = [api.enqueue("emailJob", {"email": f"user{n}@example.com"}) for n in range(SUCCEEDING)]
                ids.append(api.enqueue("webhookJob", {"url": receiver.url, "payload": {"n": 1}}))
                for job_id in ids:
                    wait_until(lambda job_id=job_id: api.state(job_id) in ("succeeded", "failed"), timeout=60)
                yield Workload(stack, base, worker_metrics, ids, prometheus)
        finally:
            stack.discard_all()
            receiver.close()


def samples(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = httpx.get(url).text
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(found: dict[Any, float], name: str, **labels: str) -> float:
    return found[(name, frozenset(labels.items()))]


def test_worker_counters_are_exact_across_two_processes(workload: Workload) -> None:
    def settled() -> dict[Any, float] | None:
        # Workers write their metric updates every fraction of a second: wait for the last ones.
        found = samples(workload.worker_metrics)
        email = {"job": "emailJob", "queue": "default"}
        hook = {"job": "webhookJob", "queue": "default"}
        done = (
            value(found, "taskqueue_jobs_processed_total", **email, outcome="succeeded") == SUCCEEDING
            and value(found, "taskqueue_jobs_processed_total", **hook, outcome="failed") == 1
            and value(found, "taskqueue_job_duration_seconds_count", **hook) == 6
        )
        return found if done else None

    found = wait_until(settled, message="the worker counters")
    processed = "taskqueue_jobs_processed_total"
    email = {"job": "emailJob", "queue": "default"}
    hook = {"job": "webhookJob", "queue": "default"}
    assert value(found, processed, **email, outcome="succeeded") == SUCCEEDING
    assert value(found, processed, **email, outcome="retried") == 0
    assert value(found, processed, **email, outcome="failed") == 0
    assert value(found, processed, **hook, outcome="retried") == 5
    assert value(found, processed, **hook, outcome="failed") == 1
    assert value(found, processed, **hook, outcome="succeeded") == 0
    # Known job types and outcomes start at 0, so alerts and panels see series before any event.
    assert value(found, processed, job="cleanupJob", queue="default", outcome="skipped") == 0
    assert value(found, "taskqueue_job_duration_seconds_count", **email) == SUCCEEDING
    assert value(found, "taskqueue_job_duration_seconds_count", **hook) == 6
    assert value(found, "taskqueue_job_wait_seconds_count", **email) == SUCCEEDING
    assert value(found, "taskqueue_jobs_in_progress", **email) == 0
    assert value(found, "taskqueue_jobs_in_progress", **hook) == 0


def test_api_metrics_agree_with_the_outcome_records(workload: Workload) -> None:
    found = samples(workload.api_base + "/metrics")
    assert value(found, "taskqueue_jobs_enqueued_total", job="emailJob", queue="default") == SUCCEEDING
    assert value(found, "taskqueue_jobs_enqueued_total", job="webhookJob", queue="default") == 1
    assert value(found, "taskqueue_jobs_enqueued_total", job="cleanupJob", queue="default") == 0
    assert value(found, "taskqueue_queue_depth", queue="default", state="failed") == 1
    assert value(found, "taskqueue_queue_depth", queue="default", state="ready") == 0
    assert value(found, "taskqueue_queue_oldest_job_age_seconds", queue="default") == 0
    assert value(found, "taskqueue_queue_depth", queue="default", state="waiting") == 0
    assert value(found, "taskqueue_queue_depth", queue="default", state="running") == 0
    assert value(found, "taskqueue_queue_paused", queue="default") == 0
    assert value(found, "taskqueue_workers_alive") == 2
    assert value(found, "taskqueue_cleanup_last_run_timestamp_seconds") == 0
    api = workload.stack.client(workload.api_base)
    states = [api.state(job_id) for job_id in workload.ids]
    assert states.count("succeeded") == SUCCEEDING and states.count("failed") == 1
    # HTTP metrics are labelled by route template, never by a raw path or id.
    routes = {dict(labels).get("route") for name, labels in found if name == "taskqueue_http_requests_total"}
    assert "/jobs/{job_id}" in routes and "/enqueue" in routes
    assert not any(job_id in str(routes) for job_id in workload.ids)


@pytest.mark.parametrize("endpoint", ["worker", "api"])
def test_promtool_finds_nothing_to_lint(workload: Workload, endpoint: str) -> None:
    promtool = require_binary("promtool")
    url = workload.worker_metrics if endpoint == "worker" else workload.api_base + "/metrics"
    result = subprocess.run(
        [promtool, "check", "metrics"], input=httpx.get(url).text, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0 and not result.stdout.strip() and not result.stderr.strip(), (
        result.stdout + result.stderr
    )


@pytest.mark.parametrize("dashboard", DASHBOARDS, ids=[path.stem for path in DASHBOARDS])
def test_every_dashboard_panel_returns_data_from_a_real_prometheus(workload: Workload, dashboard: Path) -> None:
    prometheus = workload.prometheus
    # Two scrapes after the last job, so that every rate() window holds the workload.
    wait_until(
        lambda: prometheus.query("count_over_time(taskqueue_workers_alive[1m]) >= 4"), timeout=30, message="scrapes"
    )
    for title, expr in dashboard_queries(dashboard, {"job": "webhookJob", "queue": "default"}, rate_interval="1m"):
        result = prometheus.wait_for_data(expr, timeout=20)
        values = [float(series["value"][1]) for series in result]
        assert values and not all(math.isnan(v) for v in values), f"panel {title!r} is empty: {expr} -> {values}"
