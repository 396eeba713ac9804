"""What the client returns: job records and pages, and the jobs it sends."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

#: The states of a job, and those it does not leave by itself (the service's app/outcomes/record.py).
STATES = ("queued", "running", "retrying", "succeeded", "failed", "skipped")
FINAL_STATES = ("succeeded", "failed", "skipped")


def _time(value: Any) -> datetime | None:
    return datetime.fromtimestamp(value / 1000, tz=UTC) if isinstance(value, int | float) else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) else None


@dataclass(frozen=True)
class Job:
    """One job's outcome record, as `GET /jobs/{jobId}` answers it (times are UTC datetimes).
    `raw` is the record exactly as the service sent it, fields this client does not know included."""

    job_id: str
    job_name: str
    state: str
    queue: str | None = None
    attempts: int = 0
    max_retries: int | None = None
    enqueued_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    duration_ms: int | None = None
    error: str | None = None
    next_retry_at: datetime | None = None
    run_at: datetime | None = None
    executions: int = 0
    redeliveries: int = 0
    requeues: int | None = None
    #: The last error's traceback (cut short by the service), when the job has failed or is retrying.
    traceback: str | None = None
    #: The job's data: only from `get(..., include_data=True)` (and `wait`), else None.
    data: Any = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_api(cls, record: Mapping[str, Any]) -> Job:
        return cls(
            job_id=str(record["jobId"]),
            job_name=str(record.get("jobName") or ""),
            state=str(record.get("state") or ""),
            queue=record.get("queue"),
            attempts=_int(record.get("attempts")) or 0,
            max_retries=_int(record.get("maxRetries")),
            enqueued_at=_time(record.get("enqueuedAt")),
            started_at=_time(record.get("startedAt")),
            finished_at=_time(record.get("finishedAt")),
            duration_ms=_int(record.get("durationMs")),
            error=record.get("error"),
            next_retry_at=_time(record.get("nextRetryAt")),
            run_at=_time(record.get("runAt")),
            executions=_int(record.get("executions")) or 0,
            redeliveries=_int(record.get("redeliveries")) or 0,
            requeues=_int(record.get("requeues")),
            traceback=record.get("traceback"),
            data=record.get("data"),
            raw=dict(record),
        )

    @property
    def finished(self) -> bool:
        """The job reached a final state: succeeded, failed (retries spent, dead-lettered) or skipped."""
        return self.state in FINAL_STATES

    @property
    def succeeded(self) -> bool:
        return self.state == "succeeded"

    @property
    def failed(self) -> bool:
        return self.state == "failed"


@dataclass(frozen=True)
class JobPage:
    """A page of `list()`, newest first; pass `next_cursor` back for the next page (None: the last page)."""

    jobs: list[Job]
    next_cursor: str | None


@dataclass(frozen=True)
class NewJob:
    """A job to enqueue with `enqueue_many` (a `(job_name, data)` tuple works too)."""

    job_name: str
    data: Any
    delay: float | timedelta | None = None


def delay_ms(delay: float | timedelta | None) -> int | None:
    """A delay in seconds (or a timedelta) as the API's delayMs."""
    if delay is None:
        return None
    seconds = delay.total_seconds() if isinstance(delay, timedelta) else float(delay)
    if not seconds >= 0:
        raise ValueError(f"delay must be zero or more seconds, not {delay!r}")
    return round(seconds * 1000)
