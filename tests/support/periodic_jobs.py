"""A job type declared with periodiq's own `periodic=` option, for the worker of a test to load
(JOB_MODULES=tests.support.periodic_jobs): the schedules of schedules.toml enqueue ordinary jobs,
so this is what still meets periodiq's skip of a late tick."""

from __future__ import annotations

from typing import Any

from periodiq import cron
from pydantic import BaseModel, ConfigDict

from app.jobs import JobContext, job_type


class NoData(BaseModel):
    model_config = ConfigDict(extra="forbid")


@job_type("periodicJob", schema=NoData, periodic=cron("0 0 1 1 *"), max_retries=0)
def periodic_job(job_id: str, data: dict[str, Any], context: JobContext) -> None:
    """Does nothing."""
