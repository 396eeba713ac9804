"""A job type on a queue of its own ("reports"), for tests of several queues: load it in every
process with JOB_MODULES=tests.support.reports_queue. Not imported by the tests themselves: it
would declare reportJob in the registry of every test in that process."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from app.jobs import JobContext, job_type

QUEUE = "reports"


class ReportData(BaseModel):
    model_config = ConfigDict(extra="forbid")

    n: int = 0


@job_type("reportJob", schema=ReportData, queue=QUEUE)
def report_job(job_id: str, data: dict[str, Any], context: JobContext) -> dict[str, Any]:
    return {"n": data.get("n", 0)}
