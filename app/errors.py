"""Our own errors. Redis connection errors become BrokerUnavailable once, where they are caught."""

from __future__ import annotations

from dramatiq.errors import ConnectionClosed


class TaskQueueError(Exception):
    """Base of every error this service raises on purpose."""


class SettingsError(TaskQueueError):
    """A setting is missing or invalid; the message names the variable and the value."""


class BrokerUnavailable(TaskQueueError, ConnectionClosed):
    """Redis did not answer in time; the caller may try again later.

    It is also Dramatiq's ConnectionClosed, so Dramatiq's consumer threads treat it as a lost connection."""

    def __init__(self, message: str) -> None:
        TaskQueueError.__init__(self, message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class UnknownJob(TaskQueueError):
    """A jobName that no registered job type has."""

    def __init__(self, job_name: object, known: list[str]) -> None:
        self.job_name = job_name
        self.known = known
        super().__init__(f"unknown jobName {job_name!r}: use one of {', '.join(known)}")


class InvalidJobData(TaskQueueError):
    """A job's data failed its schema; `problems` maps a field path to what is wrong."""

    def __init__(self, job_name: str, problems: dict[str, str]) -> None:
        self.job_name = job_name
        self.problems = problems
        detail = "; ".join(f"{path}: {reason}" for path, reason in problems.items())
        super().__init__(f"invalid data for {job_name}: {detail}")


class PermanentJobError(TaskQueueError):
    """Raised by a job when trying again cannot help; the job fails at once without retries."""


class JobNotFound(TaskQueueError):
    """No record of that job (never existed, deleted, or past the retention)."""


class JobStateConflict(TaskQueueError):
    """The job is not in a state that allows the requested action."""
