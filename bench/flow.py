"""A no-op job type with a concurrency limit, for the flow-control throughput figure: loaded by the
worker processes of `dramatiq bench.ours` with JOB_MODULES=bench.flow (every process imports it).

The limit is BENCH_CONCURRENCY (default 1000: more than any benchmark configuration runs at once,
so that the figure is the cost of checking the limit, not of waiting for a slot).
"""

from __future__ import annotations

import os
from typing import Any

from app.jobs import JobContext, job_type
from bench.keys import BENCH_QUEUE, CONCURRENCY_ENV, LIMITED_NOOP
from bench.registry import BENCH_JOBS, NoData

CONCURRENCY = int(os.environ.get(CONCURRENCY_ENV, "1000"))


@job_type(LIMITED_NOOP, schema=NoData, queue=BENCH_QUEUE, concurrency=CONCURRENCY, into=BENCH_JOBS)
def limited_noop(job_id: str, data: dict[str, Any], context: JobContext) -> None:
    """Does nothing, within its type's concurrency limit."""
