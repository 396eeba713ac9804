"""The API's /metrics figures of the whole system, read from Redis at scrape time.

Figures read from Redis are the same whichever API replica is scraped, so they never double
count: they describe the queue, not the process.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import redis
from prometheus_client import disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from app.api.queue_state import QueueReader, QueueState
from app.keys import Keys
from app.outcomes.record import now_ms

# `_created` series double every counter's output for little use.
disable_created_metrics()

#: The states of taskqueue_queue_depth (attributes of a QueueState).
DEPTH_STATES = ("ready", "delayed", "waiting", "running", "failed")


class QueueCollector(Collector):
    """taskqueue_jobs_enqueued_total, queue depth, oldest-job age, paused queues, live workers,
    last cleanup."""

    def __init__(
        self,
        *,
        client: redis.Redis,
        keys: Keys,
        jobs: Iterable[tuple[str, str]],
        heartbeat_timeout_ms: int,
        limited: Iterable[tuple[str, str]] = (),
    ) -> None:
        self.client = client
        self.keys = keys
        self.jobs = sorted(set(jobs))
        self.reader = QueueReader.for_jobs(keys, self.jobs, limited, heartbeat_timeout_ms=heartbeat_timeout_ms)
        self.heartbeat_timeout_ms = heartbeat_timeout_ms

    def collect(self) -> Iterator[Metric]:
        enqueued = CounterMetricFamily(
            "taskqueue_jobs_enqueued",
            "New jobs accepted from any producer (retries not counted).",
            labels=("job", "queue"),
        )
        depth = GaugeMetricFamily(
            "taskqueue_queue_depth",
            "Jobs of a queue by state: ready (every priority level), delayed (also awaiting a retry), waiting "
            "(for a rate limit or a concurrency slot), running (fetched by live workers), failed (dead letters).",
            labels=("queue", "state"),
        )
        oldest = GaugeMetricFamily(
            "taskqueue_queue_oldest_job_age_seconds",
            "Age of the oldest ready job of any priority level (0 when none).",
            labels=("queue",),
        )
        paused = GaugeMetricFamily("taskqueue_queue_paused", "1 while a queue is paused, else 0.", labels=("queue",))
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
        for queue in figures["queues"]:
            for state in DEPTH_STATES:
                depth.add_metric([queue.name, state], getattr(queue, state))
            oldest.add_metric([queue.name], queue.oldest_age_seconds)
            paused.add_metric([queue.name], 1 if queue.paused else 0)
        workers.add_metric([], figures["workers"])
        cleanup.add_metric([], figures["cleanup"])
        yield from (enqueued, depth, oldest, paused, workers, cleanup, up)

    def _read(self) -> dict[str, Any]:
        now = now_ms()
        with self.client.pipeline(transaction=False) as pipeline:
            pipeline.hgetall(self.keys.enqueued_counts())
            pipeline.zcount(self.keys.heartbeats(), now - self.heartbeat_timeout_ms, "+inf")
            pipeline.hget(self.keys.cleanup_status(), "lastRunAt")
            pipeline.execute_command(*self.reader.command(now))
            enqueued, workers, last_cleanup, queues = pipeline.execute()
        counts: dict[tuple[str, str], int] = {}
        for field, value in enqueued.items():
            counts[self.keys.parse_enqueued_count_field(field.decode())] = int(value)
        states: list[QueueState] = self.reader.parse(queues, now)
        return {
            "enqueued": counts,
            "queues": states,
            "workers": int(workers),
            "cleanup": int(last_cleanup) / 1000 if last_cleanup else 0,
        }
