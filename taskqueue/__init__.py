"""The taskqueue client: enqueue jobs, wait for them and act on them from Python (`Client`,
`AsyncClient`) or from the shell (`tq`). Install with `pip install 'taskqueue[client]'` (or
`'taskqueue[cli]'` for the command line); it does not need the service's dependencies."""

from __future__ import annotations

from taskqueue._errors import (
    BadRequest,
    Conflict,
    Forbidden,
    InvalidJob,
    NotFound,
    ServerError,
    TaskQueueError,
    Unauthorized,
    Unavailable,
    WaitTimeout,
)
from taskqueue._metrics import Metrics, QueueFigures
from taskqueue._models import (
    FINAL_STATES,
    PRIORITIES,
    STATES,
    CancelResult,
    Job,
    JobPage,
    NewJob,
    QueueState,
    Schedule,
    ScheduleRun,
)
from taskqueue.client import AsyncClient, Client

__all__ = [
    "FINAL_STATES",
    "PRIORITIES",
    "STATES",
    "AsyncClient",
    "BadRequest",
    "CancelResult",
    "Client",
    "Conflict",
    "Forbidden",
    "InvalidJob",
    "Job",
    "JobPage",
    "Metrics",
    "NewJob",
    "NotFound",
    "QueueFigures",
    "QueueState",
    "Schedule",
    "ScheduleRun",
    "ServerError",
    "TaskQueueError",
    "Unauthorized",
    "Unavailable",
    "WaitTimeout",
]
