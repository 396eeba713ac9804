"""A job type on a queue of its own, for the worker tests on a Redis Cluster: load it in every
process with JOB_MODULES=tests.support.cluster_jobs. Its queue, "reports", hashes to another
master than "default" (the built-in job types' queue) on a cluster whose slots redis-cli spread
evenly; tests/faults/test_cluster.py checks that before relying on it.

`shardJob` is limited to one at a time, so its concurrency slot lives in its queue's keyspace and
is taken, renewed and given back there; it sleeps `sleepMs` (stopping when it sees its cancel,
which reaches its worker through its queue's keyspace), and fails for good with `fail`."""

from __future__ import annotations

import time
from typing import Any

from pydantic import BaseModel, ConfigDict

from app.errors import JobCanceled, PermanentJobError
from app.jobs import JobContext, job_type

QUEUE = "reports"


class ShardData(BaseModel):
    model_config = ConfigDict(extra="forbid")

    n: int = 0
    sleepMs: int = 0
    fail: bool = False


@job_type("shardJob", schema=ShardData, queue=QUEUE, concurrency=1)
def shard_job(job_id: str, data: dict[str, Any], context: JobContext) -> dict[str, Any]:
    deadline = time.monotonic() + data.get("sleepMs", 0) / 1000
    while time.monotonic() < deadline:
        if context.job.cancelled():
            raise JobCanceled("it saw its cancel")
        time.sleep(0.01)
    if data.get("fail"):
        raise PermanentJobError(f"shardJob {data.get('n', 0)} failed on purpose")
    return {"n": data.get("n", 0)}
