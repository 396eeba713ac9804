"""What the client returns: job records and pages, cancel answers, queues and schedules; and the
jobs it sends."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

#: The states of a job, and those it does not leave by itself (the service's app/outcomes/record.py).
STATES = ("queued", "running", "retrying", "succeeded", "failed", "skipped", "canceled")
FINAL_STATES = ("succeeded", "failed", "skipped", "canceled")
#: The priority levels of a job, highest first (the service's app/keys.py PRIORITY_LEVELS).
PRIORITIES = ("high", "normal", "low")


def _time(value: Any) -> datetime | None:
    return datetime.fromtimestamp(value / 1000, tz=UTC) if isinstance(value, int | float) else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


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
    #: "high", "normal" or "low".
    priority: str = "normal"
    #: When a cancel was asked for (of a running job: its cancel requested), and when it ended canceled.
    cancel_requested_at: datetime | None = None
    canceled_at: datetime | None = None
    #: The running attempt's last reported progress (a percentage), its message and when it came.
    progress: float | None = None
    progress_message: str | None = None
    progress_at: datetime | None = None
    #: What the job returned (JSON), once it has succeeded; None otherwise, or when it returned None.
    result: Any = None
    #: The worker process of the current (last) attempt, as host:pid.
    worker: str | None = None
    #: The earlier attempts, oldest first: each retried attempt as the service sent it (a dict of
    #: attempt, startedAt, finishedAt, durationMs, error, traceback, worker; times in ms since
    #: the epoch). Empty if no attempt was retried.
    history: list[dict[str, Any]] = field(default_factory=list)
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
            priority=_str(record.get("priority")) or "normal",
            cancel_requested_at=_time(record.get("cancelRequestedAt")),
            canceled_at=_time(record.get("canceledAt")),
            progress=_number(record.get("progress")),
            progress_message=_str(record.get("progressMessage")),
            progress_at=_time(record.get("progressAt")),
            result=record.get("result"),
            worker=_str(record.get("worker")),
            history=[dict(entry) for entry in record.get("history") or () if isinstance(entry, Mapping)],
            raw=dict(record),
        )

    @property
    def finished(self) -> bool:
        """The job reached a final state: succeeded, failed (retries spent, dead-lettered), skipped or canceled."""
        return self.state in FINAL_STATES

    @property
    def succeeded(self) -> bool:
        return self.state == "succeeded"

    @property
    def failed(self) -> bool:
        return self.state == "failed"

    @property
    def canceled(self) -> bool:
        return self.state == "canceled"


@dataclass(frozen=True)
class CancelResult:
    """The answer of `cancel()`. `canceled`: the job will never run (HTTP 200; `job.state` is
    "canceled"). Otherwise (202) the job had started: its cancel is requested (the job sees it in
    `context.job.cancelled()`), with `force` it is being interrupted, or the worker that fetched it
    did not confirm in time; `message` says which. `wait()` on the job tells how it ended."""

    job: Job
    canceled: bool
    message: str
    status: int

    @property
    def requested(self) -> bool:
        """Only requested: the job was running (or may have been) when the cancel came."""
        return not self.canceled


@dataclass(frozen=True)
class QueueState:
    """One declared queue as `GET /queues` answers it: jobs ready (per priority too), delayed (and
    waiting for a retry), waiting (held by a rate limit or for a concurrency slot), running, failed
    (dead letters), how long the oldest ready job has waited, and whether the queue is paused."""

    name: str
    ready: int = 0
    ready_by_priority: Mapping[str, int] = field(default_factory=dict)
    delayed: int = 0
    waiting: int = 0
    running: int = 0
    failed: int = 0
    oldest_age_seconds: float = 0.0
    paused: bool = False
    paused_at: datetime | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_api(cls, body: Mapping[str, Any]) -> QueueState:
        by_priority = body.get("readyByPriority")
        return cls(
            name=str(body["name"]),
            ready=_int(body.get("ready")) or 0,
            ready_by_priority={str(k): int(v) for k, v in by_priority.items()} if isinstance(by_priority, dict) else {},
            delayed=_int(body.get("delayed")) or 0,
            waiting=_int(body.get("waiting")) or 0,
            running=_int(body.get("running")) or 0,
            failed=_int(body.get("failed")) or 0,
            oldest_age_seconds=_number(body.get("oldestAgeSeconds")) or 0.0,
            paused=bool(body.get("paused")),
            paused_at=_time(body.get("pausedAt")),
            raw=dict(body),
        )


@dataclass(frozen=True)
class ScheduleRun:
    """The last run of a schedule: when it was due, the job it enqueued and when."""

    run_at: datetime | None
    job_id: str
    enqueued_at: datetime | None


@dataclass(frozen=True)
class Schedule:
    """A recurring job of the service's schedules file, as `GET /schedules` answers it."""

    name: str
    cron: str
    timezone: str
    job_name: str
    data: Any = None
    next_run_at: datetime | None = None
    last_run: ScheduleRun | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_api(cls, body: Mapping[str, Any]) -> Schedule:
        last = body.get("lastRun")
        return cls(
            name=str(body["name"]),
            cron=str(body.get("cron") or ""),
            timezone=str(body.get("timezone") or ""),
            job_name=str(body.get("jobName") or ""),
            data=body.get("data"),
            next_run_at=_time(body.get("nextRunAt")),
            last_run=(
                ScheduleRun(_time(last.get("runAt")), str(last.get("jobId") or ""), _time(last.get("enqueuedAt")))
                if isinstance(last, dict)
                else None
            ),
            raw=dict(body),
        )


@dataclass(frozen=True)
class JobPage:
    """A page of `list()`, newest first; pass `next_cursor` back for the next page (None: the last page)."""

    jobs: list[Job]
    next_cursor: str | None


@dataclass(frozen=True)
class NewJob:
    """A job to enqueue with `enqueue_many` (a `(job_name, data)` tuple works too); the options
    are those of `enqueue` (None: the job type's own)."""

    job_name: str
    data: Any
    delay: float | timedelta | None = None
    priority: str | None = None
    max_retries: int | None = None
    queue: str | None = None


def delay_ms(delay: float | timedelta | None) -> int | None:
    """A delay in seconds (or a timedelta) as the API's delayMs."""
    if delay is None:
        return None
    seconds = delay.total_seconds() if isinstance(delay, timedelta) else float(delay)
    if not seconds >= 0:
        raise ValueError(f"delay must be zero or more seconds, not {delay!r}")
    return round(seconds * 1000)
