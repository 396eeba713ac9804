"""The client's errors: one class per kind of answer a caller acts on differently."""

from __future__ import annotations

from typing import Any


class TaskQueueError(Exception):
    """Base of every error the client raises: `status` is the HTTP status (None if no answer came),
    `message` the service's explanation and `details` what it added (field problems, for one)."""

    def __init__(self, message: str, *, status: int | None = None, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.details = details

    def __str__(self) -> str:
        return self.message if self.status is None else f"{self.message} (HTTP {self.status})"


class Unauthorized(TaskQueueError):
    """401: the API key is missing or wrong."""


class Forbidden(Unauthorized):
    """403: the key is read-only and the call changes something."""


class BadRequest(TaskQueueError):
    """400 or 413: the request is malformed (a bad filter, an empty Idempotency-Key, a body too large)."""


class InvalidJob(BadRequest):
    """The job was refused: an unknown jobName (400) or data failing its schema (422). Nothing was enqueued."""

    @property
    def fields(self) -> dict[str, str]:
        """Field path -> what is wrong, for one job (`{"email": "value is not a valid email address"}`)."""
        if isinstance(self.details, dict) and isinstance(self.details.get("fields"), dict):
            return dict(self.details["fields"])
        return {}

    @property
    def jobs(self) -> list[dict[str, Any]]:
        """For a batch: one entry per invalid job, `{"index", "error", "fields"?}`."""
        return [dict(problem) for problem in self.details] if isinstance(self.details, list) else []


class NotFound(TaskQueueError):
    """404: no such job (it never existed, was deleted, or is older than the retention), or no such queue."""


class Conflict(TaskQueueError):
    """409: the job is not in a state that allows this (retrying a job that has not failed, deleting a
    running one, canceling a finished one)."""


class Unavailable(TaskQueueError):
    """The service could not be reached or answered 503 for longer than the client retries.
    `retry_after` is the server's last hint in seconds. For a call that is not safe to resend,
    `maybe_applied` says that the request may have reached the server before the connection broke."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        details: Any = None,
        retry_after: float | None = None,
        maybe_applied: bool = False,
    ) -> None:
        super().__init__(message, status=status, details=details)
        self.retry_after = retry_after
        self.maybe_applied = maybe_applied


class ServerError(TaskQueueError):
    """Any other answer the client did not expect (a 500, a proxy's error page)."""


class WaitTimeout(TaskQueueError, TimeoutError):
    """`wait()` ran out of time before the job reached a final state; `job` is its last record."""

    def __init__(self, message: str, *, job: Any) -> None:
        super().__init__(message)
        self.job = job
