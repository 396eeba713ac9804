"""Our full worker stack (broker, every middleware) with no-op job types: `dramatiq bench.ours`.

It mirrors app/actors/__init__.py, so the benchmark measures exactly what production runs,
without adding benchmark job types to the production actors.
"""

from __future__ import annotations

import time
from typing import Any

import dramatiq
from pydantic import BaseModel, ConfigDict

from app.broker import create_broker
from app.jobs import job_type
from app.logs import configure_logging
from app.settings import Settings
from bench.keys import BENCH_QUEUE, NOOP, PROBE, STARTS

settings = Settings.from_env()
configure_logging(settings)
broker = create_broker(settings)
dramatiq.set_broker(broker)


class NoData(BaseModel):
    model_config = ConfigDict(extra="forbid")


@job_type(NOOP, schema=NoData, queue=BENCH_QUEUE)
def noop(job_id: str, data: dict[str, Any]) -> None:
    """Does nothing: what is left is the cost of the queue itself."""


@job_type(PROBE, schema=NoData, queue=BENCH_QUEUE)
def probe(job_id: str, data: dict[str, Any]) -> None:
    """Records when it started, for the enqueue-to-start latency."""
    broker.client.rpush(STARTS, f"{job_id} {time.time()}")
