"""cleanupJob: every day, remove outcome records older than LOG_RETENTION_SECONDS."""

from __future__ import annotations

from typing import Any

from periodiq import cron
from pydantic import BaseModel, ConfigDict

from app import cleanup
from app.actors import broker, settings
from app.jobs import job_type, registry


class CleanupData(BaseModel):
    model_config = ConfigDict(extra="forbid")


# periodiq sends it with no arguments; the API and the producer with (job_id, data).
@job_type("cleanupJob", schema=CleanupData, periodic=cron("@daily"), max_retries=2)
def cleanup_job(job_id: str | None = None, data: dict[str, Any] | None = None) -> None:
    run_now()


def run_now() -> cleanup.CleanupReport:
    """One cleanup with this process's settings (also `python -m app.cleanup`)."""
    return cleanup.run(
        broker.client,
        broker.keys,
        job_names=registry.names(),
        queues=sorted(broker.get_declared_queues()),
        retention_seconds=settings.log_retention_seconds,
        batch_size=settings.cleanup_batch_size,
    )
