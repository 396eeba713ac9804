"""Our own errors. Redis connection errors become BrokerUnavailable once, where they are caught."""

from __future__ import annotations

from dramatiq.errors import ConnectionClosed

#: Messages show at most this many characters of a value a client sent.
MAX_SHOWN = 100
#: A reason a field is invalid is ours, but it may quote the value (a URL's host, an address's characters).
MAX_REASON = 400


def shown(value: object, *, quoted: bool = False, limit: int = MAX_SHOWN) -> str:
    """A value a client sent, as a message shows it: cut to `limit` characters, saying how long it was.
    A string is in quotes (its repr) when `quoted`; anything else is shown as its repr."""
    text = value if isinstance(value, str) else repr(value)
    cut = repr(text[:limit]) if quoted and isinstance(value, str) else text[:limit]
    return cut if len(text) <= limit else f"{cut}… ({len(text)} characters)"


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


class ReplicasBehind(BrokerUnavailable):
    """An enqueue Redis ran, but fewer replicas than REDIS_WAIT_REPLICAS acknowledged it within
    REDIS_WAIT_TIMEOUT_MS: the job is kept while the master lives, and may be lost if it fails."""


class UnknownJob(TaskQueueError):
    """A jobName that no registered job type has."""

    def __init__(self, job_name: object, known: list[str]) -> None:
        self.job_name = job_name
        self.known = known
        super().__init__(f"unknown jobName {shown(job_name, quoted=True)}: use one of {', '.join(known)}")


class InvalidJobData(TaskQueueError):
    """A job's data failed its schema; `problems` maps a field path to what is wrong.

    Paths name the fields a client sent and reasons may quote their values: both are cut (`shown`)."""

    def __init__(self, job_name: str, problems: dict[str, str]) -> None:
        self.job_name = job_name
        self.problems = {shown(path): shown(reason, limit=MAX_REASON) for path, reason in problems.items()}
        detail = "; ".join(f"{path}: {reason}" for path, reason in self.problems.items())
        super().__init__(f"invalid data for {shown(job_name)}: {detail}")


class PermanentJobError(TaskQueueError):
    """Raised by a job when trying again cannot help; the job fails at once without retries."""


class JobCanceled(TaskQueueError):
    """Raised in a running job whose cancel was forced (or by a job that sees `context.job.cancelled()`
    and stops): the job ends as canceled, without retries."""


class JobNotFound(TaskQueueError):
    """No record of that job (never existed, deleted, or past the retention)."""


class JobStateConflict(TaskQueueError):
    """The job is not in a state that allows the requested action."""
