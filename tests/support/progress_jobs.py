"""Job types that report progress and return results, for tests of `context.job` and results:
load them in every process with JOB_MODULES=tests.support.progress_jobs."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from app.jobs import JobContext, job_type
from tests.support.flow_log import release_key


class ProgressData(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: Report progress and wait for the release (else: return at once, reporting nothing).
    report: bool = True
    #: Return this many bytes of filler in the result (None: return no result).
    result_bytes: int | None = 10


@job_type("progressJob", schema=ProgressData, max_retries=3, min_backoff_ms=50, max_backoff_ms=100)
def progress_job(job_id: str, data: dict[str, Any], context: JobContext) -> Any:
    job = context.job
    if data.get("report", True):
        job.progress(50, "half way")
        # Waits on a condition the test sets (with a deadline: a broken test does not hang a worker).
        if context.client.blpop([release_key(job_id)], timeout=30) is None:
            raise TimeoutError("never released")
        job.progress(100, "done")
    size = data.get("result_bytes")
    if size is None:
        return None
    return {"jobId": job.id, "attempt": job.attempt, "filler": "x" * size}
