"""Job types that take any data and do nothing: for tests of the enqueue and the outcome log that
need a registry but no job's own behaviour."""

from __future__ import annotations

import pydantic

from app.jobs import JobRegistry, JobType


class AnyData(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="allow")


def any_registry(*names: str) -> JobRegistry:
    """A registry of these job types (default aJob and bJob), each taking any data."""
    job_types = JobRegistry()
    for name in names or ("aJob", "bJob"):
        job_types.add(JobType(name=name, schema=AnyData, fn=lambda job_id, data, context: None))
    return job_types
