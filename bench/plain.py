"""Stock Dramatiq for comparison: RedisBroker with its default middleware: `dramatiq bench.plain`."""

from __future__ import annotations

import time
from typing import Any

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from app.settings import Settings
from bench.keys import BENCH_QUEUE, NOOP, PROBE, STARTS

settings = Settings.from_env()
broker = RedisBroker(url=settings.redis_url)
dramatiq.set_broker(broker)


@dramatiq.actor(actor_name=NOOP, queue_name=BENCH_QUEUE)
def noop(job_id: str, data: dict[str, Any]) -> None:
    """Does nothing."""


@dramatiq.actor(actor_name=PROBE, queue_name=BENCH_QUEUE)
def probe(job_id: str, data: dict[str, Any]) -> None:
    """Records when it started, for the enqueue-to-start latency."""
    broker.client.rpush(STARTS, f"{job_id} {time.time()}")
