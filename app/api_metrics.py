"""The API's /metrics: system-wide figures read from Redis at scrape time, and its own HTTP metrics.

Figures read from Redis are the same whichever API replica is scraped, so they never double
count: they describe the queue, not the process.
"""

from __future__ import annotations

import bisect
import itertools
import json
import time
from collections.abc import Iterable, Iterator
from typing import Any

import redis
from prometheus_client import CollectorRegistry, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from app.keys import Keys, delay_queue
from app.outcomes import now_ms

# `_created` series double every counter's output for little use.
disable_created_metrics()

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class QueueCollector(Collector):
    """taskqueue_jobs_enqueued_total, queue depth, oldest-job age, live workers, last cleanup."""

    def __init__(
        self,
        *,
        client: redis.Redis,
        keys: Keys,
        jobs: Iterable[tuple[str, str]],
        heartbeat_timeout_ms: int,
    ) -> None:
        self.client = client
        self.keys = keys
        self.jobs = sorted(set(jobs))
        self.queues = sorted({queue for _, queue in self.jobs})
        self.heartbeat_timeout_ms = heartbeat_timeout_ms

    def collect(self) -> Iterator[Metric]:
        enqueued = CounterMetricFamily(
            "taskqueue_jobs_enqueued",
            "New jobs accepted from any producer (retries not counted).",
            labels=("job", "queue"),
        )
        depth = GaugeMetricFamily("taskqueue_queue_depth", "Jobs waiting, by state.", labels=("queue", "state"))
        oldest = GaugeMetricFamily(
            "taskqueue_queue_oldest_job_age_seconds",
            "Age of the oldest ready job (0 when none).",
            labels=("queue",),
        )
        workers = GaugeMetricFamily("taskqueue_workers_alive", "Worker processes with a fresh heartbeat.")
        cleanup = GaugeMetricFamily(
            "taskqueue_cleanup_last_run_timestamp_seconds",
            "When the outcome-log cleanup last ran (0: never).",
        )
        up = GaugeMetricFamily("taskqueue_redis_up", "1 when Redis answered this scrape.")
        try:
            figures = self._read()
        except redis.RedisError:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        counts = figures["enqueued"]
        for job, queue in sorted({*self.jobs, *counts}):
            enqueued.add_metric([job, queue], counts.get((job, queue), 0))
        for queue in self.queues:
            for state in ("ready", "delayed", "failed"):
                depth.add_metric([queue, state], figures["depth"][queue][state])
            oldest.add_metric([queue], figures["oldest"][queue])
        workers.add_metric([], figures["workers"])
        cleanup.add_metric([], figures["cleanup"])
        yield from (enqueued, depth, oldest, workers, cleanup, up)

    def _read(self) -> dict[str, Any]:
        now = now_ms()
        with self.client.pipeline(transaction=False) as pipeline:
            pipeline.hgetall(self.keys.enqueued_counts())
            pipeline.zcount(self.keys.heartbeats(), now - self.heartbeat_timeout_ms, "+inf")
            pipeline.hget(self.keys.cleanup_status(), "lastRunAt")
            for queue in self.queues:
                pipeline.llen(self.keys.queue(queue))
                pipeline.hlen(self.keys.queue_messages(delay_queue(queue)))
                pipeline.zcard(self.keys.dead_letters(queue))
                pipeline.lindex(self.keys.queue(queue), 0)
            results = pipeline.execute()
        counts: dict[tuple[str, str], int] = {}
        for field, value in results[0].items():
            job, _, queue = field.decode().partition("|")
            counts[(job, queue)] = int(value)
        depth: dict[str, dict[str, int]] = {}
        heads: dict[str, bytes | None] = {}
        for i, queue in enumerate(self.queues):
            ready, delayed, failed, head = results[3 + 4 * i : 7 + 4 * i]
            depth[queue] = {"ready": int(ready), "delayed": int(delayed), "failed": int(failed)}
            heads[queue] = head
        oldest = {queue: self._age(queue, head, now) for queue, head in heads.items()}
        last_cleanup = results[2]
        return {
            "enqueued": counts,
            "depth": depth,
            "oldest": oldest,
            "workers": int(results[1]),
            "cleanup": int(last_cleanup) / 1000 if last_cleanup else 0,
        }

    def _age(self, queue: str, head: bytes | None, now: int) -> float:
        if head is None:
            return 0.0
        body = self.client.hget(self.keys.queue_messages(queue), head)
        if not body:
            return 0.0
        options = json.loads(body).get("options", {})
        runnable_at = options.get("runnable_at") or json.loads(body).get("message_timestamp", now)
        return max(0.0, (now - int(runnable_at)) / 1000)


class HttpMetrics(Collector):
    """Requests by route template, method and status; latency by route and method.

    Counted in plain numbers by the event loop's thread, which alone observes, and turned into
    metric families at scrape time: prometheus_client's locked, labelled children cost more per
    request than the rest of this together."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._requests: dict[tuple[str, str, int], int] = {}
        # Per route and method: a count per bucket (the last one past every bound), then the sum.
        self._latency: dict[tuple[str, str], list[float]] = {}
        registry.register(self)

    def observe(self, route: str, method: str, status: int, started: float) -> None:
        elapsed = time.perf_counter() - started
        key = (route, method, status)
        self._requests[key] = self._requests.get(key, 0) + 1
        series = self._latency.get((route, method))
        if series is None:
            series = self._latency[(route, method)] = [0] * (len(LATENCY_BUCKETS) + 1) + [0.0]
        series[bisect.bisect_left(LATENCY_BUCKETS, elapsed)] += 1  # the first bucket with elapsed <= bound
        series[-1] += elapsed

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "taskqueue_http_requests", "HTTP requests answered by the API.", labels=("route", "method", "status")
        )
        for (route, method, status), count in list(self._requests.items()):
            requests.add_metric([route, method, str(status)], count)
        yield requests
        latency = HistogramMetricFamily(
            "taskqueue_http_request_duration_seconds", "Time to answer an HTTP request.", labels=("route", "method")
        )
        for (route, method), series in list(self._latency.items()):
            counts = list(series)  # a copy: the loop's thread may be adding to it
            cumulative = list(itertools.accumulate(counts[:-1]))
            buckets = [(floatToGoString(bound), cumulative[i]) for i, bound in enumerate(LATENCY_BUCKETS)]
            buckets.append(("+Inf", cumulative[-1]))
            latency.add_metric([route, method], buckets, sum_value=counts[-1])
        yield latency
