"""The API's /metrics figures of the whole system, read from Redis at scrape time.

Figures read from Redis are the same whichever API replica is scraped, so they never double
count: they describe the queue, not the process.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator
from typing import Any

import redis
from prometheus_client import disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from app.api.queue_state import QueueReader, QueueState
from app.connection.shards import Shards
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
        shards: Shards | None = None,
    ) -> None:
        """`shards`: the clients of the keyspaces (on a Redis Cluster, each queue's is on the node
        of its slot, and the figures are gathered from each); default: `client` holds them all."""
        self.client = client
        self.keys = keys
        self.shards = Shards.single(client, keys) if shards is None else shards
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
        if not self.keys.cluster:
            return self._read_one(now)
        counts: dict[tuple[str, str], int] = {}
        states: dict[str, QueueState] = {}
        alive: set[bytes] = set()
        for shard in self.shards.of_queues(self.reader.queues):
            queues = [queue for queue in self.reader.queues if self.keys.for_queue(queue) == shard.keys]
            reader = dataclasses.replace(self.reader, keys=shard.keys)
            with shard.client.pipeline(transaction=False) as pipeline:
                pipeline.hgetall(shard.keys.enqueued_counts())
                # Workers stamp their heartbeat in the keyspace of each queue they serve: one
                # worker is in several, counted once.
                pipeline.zrangebyscore(shard.keys.heartbeats(), now - self.heartbeat_timeout_ms, "+inf")
                pipeline.execute_command(*reader.command(now, queues))
                enqueued, live, figures = pipeline.execute()
            for key, count in _enqueued(self.keys, enqueued).items():
                counts[key] = counts.get(key, 0) + count
            alive.update(live)
            states.update((state.name, state) for state in reader.parse(figures, now, queues))
        root = self.keys.root_keys()
        last_cleanup = self.shards.client(root).hget(root.cleanup_status(), "lastRunAt")
        return {
            "enqueued": counts,
            "queues": [states[queue] for queue in self.reader.queues],
            "workers": len(alive),
            "cleanup": int(last_cleanup) / 1000 if last_cleanup else 0,  # type: ignore[arg-type]
        }

    def _read_one(self, now: int) -> dict[str, Any]:
        """`_read` of one Redis: one round trip."""
        with self.client.pipeline(transaction=False) as pipeline:
            pipeline.hgetall(self.keys.enqueued_counts())
            pipeline.zcount(self.keys.heartbeats(), now - self.heartbeat_timeout_ms, "+inf")
            pipeline.hget(self.keys.cleanup_status(), "lastRunAt")
            pipeline.execute_command(*self.reader.command(now))
            enqueued, workers, last_cleanup, queues = pipeline.execute()
        states: list[QueueState] = self.reader.parse(queues, now)
        return {
            "enqueued": _enqueued(self.keys, enqueued),
            "queues": states,
            "workers": int(workers),
            "cleanup": int(last_cleanup) / 1000 if last_cleanup else 0,
        }


def _enqueued(keys: Keys, reply: dict[bytes, bytes]) -> dict[tuple[str, str], int]:
    return {keys.parse_enqueued_count_field(field.decode()): int(value) for field, value in reply.items()}
