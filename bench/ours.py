"""Our full worker stack (broker, every middleware) with no-op job types: `dramatiq bench.ours`.

It starts the worker as app/actors/ does (app/worker.py), so the benchmark measures exactly what
production runs, without adding benchmark job types to the production actors. The modules named
by JOB_MODULES (bench.flow) are imported before the worker starts, as app/actors/ does: they
declare more job types into the benchmark's registry.
"""

from __future__ import annotations

import importlib
import time
from typing import Any

from app.jobs import JobContext, job_type
from app.settings import Settings
from app.worker import start
from bench.keys import BACKLOG, BACKLOG_STARTED, BENCH_QUEUE, HIGH_PROBE, HIGH_STARTS, NOOP, PROBE, STARTS
from bench.registry import BENCH_JOBS, NoData


@job_type(NOOP, schema=NoData, queue=BENCH_QUEUE, into=BENCH_JOBS)
def noop(job_id: str, data: dict[str, Any], context: JobContext) -> None:
    """Does nothing: what is left is the cost of the queue itself."""


@job_type(PROBE, schema=NoData, queue=BENCH_QUEUE, into=BENCH_JOBS)
def probe(job_id: str, data: dict[str, Any], context: JobContext) -> None:
    """Records when it started, for the enqueue-to-start latency."""
    context.client.rpush(STARTS, f"{job_id} {time.time()}")


@job_type(BACKLOG, schema=NoData, queue=BENCH_QUEUE, into=BENCH_JOBS)
def backlog(job_id: str, data: dict[str, Any], context: JobContext) -> None:
    """Counts that it started: the backlog a high job is measured behind."""
    context.client.incr(BACKLOG_STARTED)


@job_type(HIGH_PROBE, schema=NoData, queue=BENCH_QUEUE, into=BENCH_JOBS)
def high_probe(job_id: str, data: dict[str, Any], context: JobContext) -> None:
    """Records when it started and how many backlog jobs had started by then."""
    at = time.time()
    context.client.rpush(HIGH_STARTS, f"{job_id} {at} {int(context.client.get(BACKLOG_STARTED) or 0)}")


settings = Settings.from_env()
for module in settings.job_modules:
    importlib.import_module(module)
broker = start(settings, BENCH_JOBS)
