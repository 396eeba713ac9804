"""Records every state change of every job in the outcome log.

The verdict of an attempt is known in `after_process_message` (this middleware sits before the
retries middleware, so it runs after it), but it is written with the ack or nack of the message
(built in `before_ack` / `before_nack`, sent by our consumer in the same transaction as the ack):
a Redis outage or a killed worker cannot leave a job's final state unwritten while its message
is settled. A failed start is logged and counted; it never fails the job.
"""

from __future__ import annotations

import socket
import threading
import traceback as tb
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis
from dramatiq.broker import Broker, MessageProxy
from dramatiq.logging import get_logger
from dramatiq.middleware import Middleware, SkipMessage

from app.broker.enqueue import COMPACT_JSON, job_data
from app.broker.messages import FetchedMessage, delivery_key, job_queue
from app.connection.commands import Command
from app.connection.worker_writes import ShardedWrites
from app.errors import BrokerUnavailable, JobCanceled
from app.middleware.retries import NEXT_RETRY_AT, RETRY_LOST
from app.outcomes.log import OutcomeLog
from app.outcomes.record import CANCELED, FAILED, RETRYING, SKIPPED, SUCCEEDED, now_ms
from app.outcomes.result import InvalidResult, encode_result
from app.pid import current_pid

MAX_TRACEBACK_LINES = 12


class CrashLoop(SkipMessage):
    """Raised (and the message failed) when an attempt keeps killing its worker process."""


@dataclass
class _Verdict:
    state: str
    attempt: int
    duration_ms: int | None
    error: str = ""
    traceback: str = ""
    next_retry_at_ms: int = 0
    #: What a successful attempt returned, as JSON ('' for none).
    result_json: str = ""
    #: When the attempt started (None if it never ran).
    started_at_ms: int | None = None
    # When the attempt ended: the ack (and so the write) can come much later if Redis is down.
    finished_at_ms: int = field(default_factory=now_ms)


class OutcomeRecorder(Middleware):
    """Writes queued/running/retrying/succeeded/failed/skipped transitions, one round trip each."""

    def __init__(
        self,
        *,
        log: OutcomeLog,
        writes: ShardedWrites,
        max_crash_deliveries: int,
        on_write_error: Callable[[], None] = lambda: None,
    ) -> None:
        self.logger = get_logger(__name__, type(self))
        #: Writes coalesced with those of the other threads (final ones sent after the ack,
        #: without waiting).
        self.writes = writes
        self.on_write_error = on_write_error
        self.log = log
        self.max_crash_deliveries = max_crash_deliveries
        self.write_errors = 0
        self._started: dict[str, tuple[int, int]] = {}
        self._verdicts: dict[str, _Verdict] = {}
        # Runs whose `running` write did not reach Redis: their final write counts them instead.
        self._uncounted: set[str] = set()
        self._lock = threading.Lock()
        self.worker = worker_name()

    def after_process_boot(self, broker: Broker) -> None:
        # A worker process may have been forked from the one that built this middleware.
        self.worker = worker_name()

    def before_process_message(self, broker: Broker, message: MessageProxy) -> None:
        started = now_ms()
        attempt = int(message.options.get("retries", 0)) + 1
        key = delivery_key(message)
        self._started[key] = (started, attempt)
        running = self.log.running(
            job_id=message.message_id,
            job_name=message.actor_name,
            queue=job_queue(message),
            attempt=attempt,
            at_ms=started,
            worker=self.worker,
        )
        prior = message.prior_deliveries if isinstance(message, FetchedMessage) else None
        if prior is not None:
            # Sent before the job runs (a job that kills its process is counted), but not waited
            # for: the count it returns is known from the fetch. Tried until Redis takes it.
            self.writes.for_job(message.message_id).post(
                [running], on_failure=lambda error: self._start_lost(key, error)
            )
            deliveries = prior + 1
        else:
            # The fetch could not read it: this start waits for its own count.
            try:
                deliveries = int(self.writes.for_job(message.message_id).write([running]))
            except (BrokerUnavailable, redis.RedisError) as error:
                self._start_lost(key, error)
                deliveries = 1
        if deliveries > self.max_crash_deliveries:
            message.fail()
            reason = (
                f"attempt {attempt} was delivered {deliveries} times without finishing: its worker process "
                f"died each time (crash loop), so the job is failed instead of retried"
            )
            self._verdicts[key] = _Verdict(FAILED, attempt, None, f"{CrashLoop.__name__}: {reason}")
            raise CrashLoop(reason)

    def after_process_message(
        self,
        broker: Broker,
        message: MessageProxy,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        key = delivery_key(message)
        started, attempt = self._started.pop(key, (now_ms(), 1))
        duration = now_ms() - started
        if exception is None:
            self._verdicts[key] = _Verdict(SUCCEEDED, attempt, duration, result_json=self._result_json(result))
            return
        error = f"{type(exception).__name__}: {exception}"
        if isinstance(exception, JobCanceled):
            # Stopped on its cancel: not a failure, not a dead letter (our consumer acks it).
            reason = "canceled while running" + (f" ({exception})" if str(exception) else "")
            self._verdicts[key] = _Verdict(CANCELED, attempt, duration, reason)
            if isinstance(message, FetchedMessage):
                message.unstarted = None
                message.settle_as_ack = True
            return
        trace = "".join(tb.format_exception(exception, limit=MAX_TRACEBACK_LINES))
        if message.failed:
            if message.options.get(RETRY_LOST):
                error += " (its retry could not be scheduled: Redis was unavailable)"
            self._verdicts[key] = _Verdict(FAILED, attempt, duration, error, trace)
            return
        next_retry = int(message.options.get(NEXT_RETRY_AT, 0))
        self._verdicts[key] = _Verdict(RETRYING, attempt, duration, error, trace, next_retry, started_at_ms=started)

    def after_skip_message(self, broker: Broker, message: MessageProxy) -> None:
        if isinstance(message, FetchedMessage) and message.unstarted:
            return  # never started here: paused (it goes back) or canceled (its record says so)
        key = delivery_key(message)
        _, attempt = self._started.pop(key, (0, int(message.options.get("retries", 0)) + 1))
        if not message.failed:
            self._verdicts[key] = _Verdict(SKIPPED, attempt, None, "skipped: periodic run too late")

    def before_ack(self, broker: Broker, message: MessageProxy) -> None:
        verdict = self._verdicts.pop(delivery_key(message), None)
        if verdict is None:
            return  # a delayed message moved to its queue: not an attempt
        ids: dict[str, Any] = {
            "job_id": message.message_id,
            "job_name": message.actor_name,
            "at_ms": verdict.finished_at_ms,
        }
        commands: list[Command]
        if verdict.state == SUCCEEDED:
            # Its start not written: the succeeded write counts the execution itself (its record
            # is packed: nothing can be added to it after).
            uncounted = delivery_key(message) in self._uncounted
            self._uncounted.discard(delivery_key(message))
            commands = [
                self.log.succeeded(
                    duration_ms=verdict.duration_ms or 0,
                    queue=job_queue(message),
                    attempt=verdict.attempt,
                    started=not uncounted,
                    uncounted=uncounted,
                    delivery=_delivery(message),
                    result_json=verdict.result_json,
                    **ids,
                ),
            ]
        elif verdict.state == RETRYING:
            commands = [
                self.log.retrying(
                    attempt=verdict.attempt,
                    error=verdict.error,
                    traceback=verdict.traceback,
                    next_retry_at_ms=verdict.next_retry_at_ms,
                    duration_ms=verdict.duration_ms or 0,
                    started_at_ms=verdict.started_at_ms or verdict.finished_at_ms,
                    worker=self.worker,
                    **ids,
                )
            ]
        elif verdict.state == CANCELED:
            commands = self.log.canceled(reason=verdict.error, duration_ms=verdict.duration_ms or 0, **ids)
        else:
            commands = self.log.skipped(reason=verdict.error, **ids)
        self._write_final(message, commands)

    def before_nack(self, broker: Broker, message: MessageProxy) -> None:
        verdict = self._verdicts.pop(delivery_key(message), None)
        if verdict is not None and verdict.state == CANCELED:
            canceled = self.log.canceled(
                job_id=message.message_id,
                job_name=message.actor_name,
                reason=verdict.error,
                duration_ms=verdict.duration_ms or 0,
                at_ms=verdict.finished_at_ms,
            )
            self._write_final(message, canceled)
            return
        if verdict is None:
            # Failed before running, without a verdict of ours (an unknown actor, a message
            # another middleware failed): Dramatiq keeps the error on the message.
            exception = failure_of(message)
            error = f"{type(exception).__name__}: {exception}" if exception else "dead-lettered"
            verdict = _Verdict(FAILED, int(message.options.get("retries", 0)) + 1, None, error, "")
        failed = self.log.failed(
            job_id=message.message_id,
            job_name=message.actor_name,
            queue=job_queue(message),
            error=verdict.error,
            traceback=verdict.traceback,
            attempts=verdict.attempt,
            data_json=COMPACT_JSON.encode(job_data(message)),
            dead_letter_id=message.options.get("redis_message_id", ""),
            duration_ms=verdict.duration_ms,
            at_ms=verdict.finished_at_ms,
        )
        self._write_final(message, failed)

    def _result_json(self, result: Any) -> str:
        """A result as its record keeps it. The worker's actors have checked it (app/worker.py
        fails a job whose result is not JSON or past RESULT_MAX_BYTES); another actor's that is
        not JSON is left out."""
        try:
            return encode_result(result, max_bytes=None)
        except InvalidResult as error:
            self.logger.warning("A job's result is not kept: %s", error)
            return ""

    def _start_lost(self, key: str, error: BaseException) -> None:
        """A start that Redis refused for good: its final write counts the execution."""
        self._uncounted.add(key)
        self._count_failure(error)

    def _write_final(self, message: MessageProxy, commands: list[Command]) -> None:
        """A final write, sent in one transaction with this message's ack or nack (our consumer
        takes it along): a worker killed at any moment leaves both or neither, never a finished
        job whose record still says running. Plus the execution its `running` write could not
        count (Redis was down): a job run while Redis was away still shows in `executions`."""
        key = delivery_key(message)
        if key in self._uncounted:
            self._uncounted.discard(key)
            commands = [*commands, self.log.counted_execution(message.message_id)]
        if isinstance(message, FetchedMessage):
            message.settle_with = commands
        else:  # not our consumer's message (unit tests): queued behind its ack
            self.writes.for_job(message.message_id).defer(commands, on_failure=self._count_failure)

    def _count_failure(self, failure: BaseException) -> None:
        with self._lock:
            self.write_errors += 1
        self.on_write_error()
        self.logger.warning("Could not write the outcome log (%s); the job itself is unaffected.", failure)


def worker_name() -> str:
    """This process as a record names the worker of an attempt: host:pid."""
    return f"{socket.gethostname()}:{current_pid()}"


def failure_of(message: MessageProxy) -> BaseException | None:
    """The exception Dramatiq stuffed into a message (`MessageProxy.stuff_exception`): it has no
    public reader, so this reads its attribute, whose shape tests/broker/test_dramatiq_internals.py
    checks."""
    exception = getattr(message, "_exception", None)
    return exception if isinstance(exception, BaseException) else None


def _delivery(message: MessageProxy) -> int | None:
    """Which delivery of its attempt a run is, when its start was sent without a wait (the fetch
    read the prior deliveries): the succeeded write then checks the start by it."""
    prior = message.prior_deliveries if isinstance(message, FetchedMessage) else None
    return None if prior is None else prior + 1
