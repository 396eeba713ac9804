"""The job each worker thread is running, as a handle its function reaches through
`context.job`: its id, name and attempt, `progress()` to report how far it got, `cancelled()` to
learn it should stop.

Progress goes to the job's record through the process's coalesced writes (WorkerWrites): it
never waits on Redis and takes no round trip of its own. At most one progress write per job is
on its way at a time; values reported meanwhile replace one another, and the latest goes once
that write has landed (or when the job ends), so a job reporting in a tight loop costs Redis
about one small write per round trip, not one per call.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from typing import Any

from dramatiq.broker import Broker, MessageProxy
from dramatiq.logging import get_logger
from dramatiq.middleware import Middleware

from app.connection.worker_writes import ShardedWrites, WorkerWrites
from app.errors import shown
from app.outcomes.log import OutcomeLog
from app.outcomes.record import now_ms

#: Progress is a percentage: a finite number from 0 to this.
MAX_PROGRESS = 100
MAX_PROGRESS_MESSAGE_CHARS = 200


def checked_progress(value: object, message: object) -> tuple[float, str]:
    """The progress as written, or ValueError saying what is wrong with it."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or not 0 <= value <= MAX_PROGRESS
    ):
        raise ValueError(
            f"progress takes a percentage, a finite number from 0 to {MAX_PROGRESS}, not {shown(value, quoted=True)}"
        )
    if not isinstance(message, str) or len(message) > MAX_PROGRESS_MESSAGE_CHARS:
        raise ValueError(
            f"a progress message is text of at most {MAX_PROGRESS_MESSAGE_CHARS} characters, "
            f"not {shown(message, quoted=True)}"
        )
    return float(value), message


class RunningJob:
    """A job running in this process: what its function sees as `context.job`."""

    def __init__(
        self,
        *,
        job_id: str,
        name: str,
        attempt: int,
        log: OutcomeLog,
        writes: WorkerWrites,
        on_write_error: Callable[[BaseException], None],
    ) -> None:
        self.id = job_id
        self.name = name
        #: 1 for the first run, 2 for the first retry, ...
        self.attempt = attempt
        #: The thread running it (`threading.get_ident()`).
        self.thread_id = threading.get_ident()
        self._log = log
        self._writes = writes
        self._on_write_error = on_write_error
        self._cancel = threading.Event()
        self._lock = threading.Lock()
        self._sending = False  # a progress write is on its way
        self._latest: tuple[float, str, int] | None = None  # reported since: sent once it lands
        self._ended = False

    def progress(self, value: float, message: str = "") -> None:
        """Report how far the job got: `value` a percentage (0 to 100), `message` at most 200
        characters. Shown by `GET /jobs/{id}` while the attempt runs and after; never waits."""
        reported = (*checked_progress(value, message), now_ms())
        with self._lock:
            if self._ended:
                return  # reported by a thread the job left behind: its record is final
            if self._sending:
                self._latest = reported
                return
            self._sending = True
        self._send(reported)

    def cancelled(self) -> bool:
        """Whether the job was asked to stop: a long job checks it between steps and stops early."""
        return self._cancel.is_set()

    def request_cancel(self) -> None:
        self._cancel.set()

    def end(self) -> None:
        """The job's function returned or raised: the latest progress not sent yet goes now,
        ahead of the final write (units go out in the order they were submitted)."""
        with self._lock:
            self._ended = True
            latest, self._latest = self._latest, None
        if latest is not None:
            self._send(latest)

    def _send(self, reported: tuple[float, str, int]) -> None:
        value, message, at_ms = reported
        command = self._log.progress(job_id=self.id, attempt=self.attempt, value=value, message=message, at_ms=at_ms)
        self._writes.defer([command], on_done=self._landed, on_failure=self._failed)

    def _landed(self, _: Any = None) -> None:
        with self._lock:
            latest, self._latest = self._latest, None
            if latest is None or self._ended:
                self._sending = False
                return
        self._send(latest)

    def _failed(self, error: BaseException) -> None:
        self._on_write_error(error)
        self._landed()

    def __repr__(self) -> str:
        return f"RunningJob(id={self.id!r}, name={self.name!r}, attempt={self.attempt})"


class CurrentJob(Middleware):
    """Gives each worker thread the handle of the job it runs (`current()`), and keeps the jobs
    running in this process by id, for a cancel request to reach (`request_cancel`).

    Place it early in the stack: its before-hook then runs before the others' and its after-hooks
    after theirs (they run in reverse), so the handle is there for the whole of a message's
    processing, and the last progress goes out after the verdict, before the ack's final write.
    """

    def __init__(
        self, *, log: OutcomeLog, writes: ShardedWrites, on_write_error: Callable[[], None] = lambda: None
    ) -> None:
        self.logger = get_logger(__name__, type(self))
        self.log = log
        self.writes = writes
        self.on_write_error = on_write_error
        self._local = threading.local()
        self._running: dict[str, RunningJob] = {}
        self._lock = threading.Lock()

    def current(self) -> RunningJob:
        """The job this thread runs; RuntimeError outside a job."""
        job: RunningJob | None = getattr(self._local, "job", None)
        if job is None:
            raise RuntimeError("context.job is only there while a job runs, in the thread running it")
        return job

    def running(self, job_id: str) -> RunningJob | None:
        """The job with this id if it runs in this process."""
        with self._lock:
            return self._running.get(job_id)

    def request_cancel(self, job_id: str) -> bool:
        """Ask the job with this id to stop; whether it runs in this process."""
        job = self.running(job_id)
        if job is None:
            return False
        job.request_cancel()
        return True

    def before_process_message(self, broker: Broker, message: MessageProxy) -> None:
        job = RunningJob(
            job_id=message.message_id,
            name=message.actor_name,
            attempt=int(message.options.get("retries", 0)) + 1,
            log=self.log,
            writes=self.writes.for_job(message.message_id),
            on_write_error=self._write_failed,
        )
        self._local.job = job
        with self._lock:
            self._running[job.id] = job

    def after_process_message(
        self,
        broker: Broker,
        message: MessageProxy,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        self._clear()

    def after_skip_message(self, broker: Broker, message: MessageProxy) -> None:
        self._clear()

    def _clear(self) -> None:
        job: RunningJob | None = getattr(self._local, "job", None)
        if job is None:
            return  # skipped before this middleware's before-hook ran
        self._local.job = None
        with self._lock:
            if self._running.get(job.id) is job:
                del self._running[job.id]
        job.end()

    def _write_failed(self, error: BaseException) -> None:
        self.on_write_error()
        self.logger.warning("Could not write a job's progress (%s); the job itself is unaffected.", error)


def current_jobs(broker: Broker) -> CurrentJob | None:
    """The broker's CurrentJob middleware, if it has one."""
    return next((m for m in broker.middleware if isinstance(m, CurrentJob)), None)
