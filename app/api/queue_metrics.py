"""The API's /metrics figures of the whole system, read from Redis at scrape time.

Figures read from Redis are the same whichever API replica is scraped, so they never double
count: they describe the queue, not the process.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

import redis
from prometheus_client import disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from app.broker.enqueue import RUNNABLE_AT
from app.keys import Keys, delay_queue
from app.outcomes.record import now_ms

# `_created` series double every counter's output for little use.
disable_created_metrics()


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
            counts[self.keys.parse_enqueued_count_field(field.decode())] = int(value)
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
        message = json.loads(body)
        runnable_at = message.get("options", {}).get(RUNNABLE_AT) or message.get("message_timestamp", now)
        return max(0.0, (now - int(runnable_at)) / 1000)
