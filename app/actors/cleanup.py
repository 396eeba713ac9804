"""cleanupJob: remove outcome records older than LOG_RETENTION_SECONDS (every day: schedules.toml)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from app.jobs import JobContext, job_type
from app.outcomes import cleanup


class CleanupData(BaseModel):
    model_config = ConfigDict(extra="forbid")


@job_type("cleanupJob", schema=CleanupData, max_retries=2)
def cleanup_job(job_id: str, data: dict[str, Any], context: JobContext) -> None:
    cleanup.run_with(context.settings, context.shards, context.registry)
