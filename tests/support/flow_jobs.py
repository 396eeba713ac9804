"""Job types for the flow-control tests, loaded by every process of a test stack with
JOB_MODULES=tests.support.flow_jobs. Each records what it did in the stack's private Redis
(keys under `flowtest:`), which is what the tests read: the receiver of these jobs."""

from __future__ import annotations

import time
from typing import Any

from pydantic import BaseModel, ConfigDict

from app.errors import JobCanceled
from app.jobs import JobContext, RateLimit, job_type
from tests.support.flow_log import MOST_AT_ONCE, RUNNING, STARTS

FLOW_QUEUE = "flow"

# Counts the jobs running now and keeps the highest count seen, atomically.
_ENTER = """
local now = redis.call('INCR', KEYS[1])
if now > tonumber(redis.call('GET', KEYS[2]) or '0') then redis.call('SET', KEYS[2], now) end
return now
"""


class FlowData(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sleepMs: int = 0
    host: str = ""


def _started(name: str, job_id: str, context: JobContext) -> None:
    context.client.rpush(STARTS, f"{name}|{job_id}|{int(time.time() * 1000)}")


def _hold(job_id: str, data: dict[str, Any], context: JobContext) -> None:
    """Sleep in small steps, stopping when the job is canceled."""
    deadline = time.monotonic() + data.get("sleepMs", 0) / 1000
    while time.monotonic() < deadline:
        if context.job.cancelled():
            raise JobCanceled("it saw its cancel")
        time.sleep(0.01)


@job_type("orderJob", schema=FlowData, queue=FLOW_QUEUE)
def order_job(job_id: str, data: dict[str, Any], context: JobContext) -> None:
    _started("orderJob", job_id, context)


@job_type("limitedJob", schema=FlowData, queue=FLOW_QUEUE, concurrency=3)
def limited_job(job_id: str, data: dict[str, Any], context: JobContext) -> None:
    _started("limitedJob", job_id, context)
    context.client.eval(_ENTER, 2, RUNNING, MOST_AT_ONCE)
    try:
        _hold(job_id, data, context)
    finally:
        context.client.decr(RUNNING)


@job_type("singleJob", schema=FlowData, queue=FLOW_QUEUE, concurrency=1)
def single_job(job_id: str, data: dict[str, Any], context: JobContext) -> None:
    _started("singleJob", job_id, context)
    _hold(job_id, data, context)


@job_type("rateJob", schema=FlowData, queue=FLOW_QUEUE, rate_limit=RateLimit(10, per_seconds=1.0))
def rate_job(job_id: str, data: dict[str, Any], context: JobContext) -> None:
    _started("rateJob", job_id, context)


@job_type(
    "hostRateJob",
    schema=FlowData,
    queue=FLOW_QUEUE,
    rate_limit=RateLimit(2, per_seconds=1.0, key=lambda data: str(data.get("host", ""))),
)
def host_rate_job(job_id: str, data: dict[str, Any], context: JobContext) -> None:
    _started("hostRateJob", job_id, context)


@job_type("slowJob", schema=FlowData, queue=FLOW_QUEUE)
def slow_job(job_id: str, data: dict[str, Any], context: JobContext) -> None:
    _started("slowJob", job_id, context)
    _hold(job_id, data, context)


@job_type("stubbornJob", schema=FlowData, queue=FLOW_QUEUE)
def stubborn_job(job_id: str, data: dict[str, Any], context: JobContext) -> None:
    """Ignores its cancel: only a forced one stops it."""
    _started("stubbornJob", job_id, context)
    deadline = time.monotonic() + data.get("sleepMs", 0) / 1000
    while time.monotonic() < deadline:
        time.sleep(0.01)
