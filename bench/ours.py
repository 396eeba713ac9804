"""Our full worker stack (broker, every middleware) with no-op job types: `dramatiq bench.ours`.

It starts the worker as app/actors/ does (app/worker.py), so the benchmark measures exactly what
production runs, without adding benchmark job types to the production actors.
"""

from __future__ import annotations

import time
from typing import Any

from pydantic import BaseModel, ConfigDict

from app.jobs import JobContext, JobRegistry, job_type
from app.settings import Settings
from app.worker import start
from bench.keys import BENCH_QUEUE, NOOP, PROBE, STARTS

BENCH_JOBS = JobRegistry()


class NoData(BaseModel):
    model_config = ConfigDict(extra="forbid")


@job_type(NOOP, schema=NoData, queue=BENCH_QUEUE, into=BENCH_JOBS)
def noop(job_id: str, data: dict[str, Any], context: JobContext) -> None:
    """Does nothing: what is left is the cost of the queue itself."""


@job_type(PROBE, schema=NoData, queue=BENCH_QUEUE, into=BENCH_JOBS)
def probe(job_id: str, data: dict[str, Any], context: JobContext) -> None:
    """Records when it started, for the enqueue-to-start latency."""
    context.client.rpush(STARTS, f"{job_id} {time.time()}")


broker = start(Settings.from_env(), BENCH_JOBS)
