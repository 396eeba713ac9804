"""Records every state change of every job in the outcome log.

The verdict of an attempt is known in `after_process_message` (this middleware sits before the
retries middleware, so it runs after it), but it is written in `after_ack` / `after_nack`:
those run only once Redis has taken the ack, so a Redis outage cannot leave a job's final
state unwritten. A failed write is logged and counted; it never fails the job.
"""

from __future__ import annotations

import json
import threading
import time
import traceback as tb
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import dramatiq
import redis
from dramatiq.broker import Broker, MessageProxy
from dramatiq.logging import get_logger
from dramatiq.middleware import Middleware, SkipMessage

from app import connections
from app.batching import WorkerWrites
from app.broker import FetchedMessage
from app.enqueue import job_data
from app.errors import BrokerUnavailable
from app.middleware.retries import NEXT_RETRY_AT, RETRY_LOST
from app.outcomes import Command, OutcomeLog, now_ms

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
    # When the attempt ended: the ack (and so the write) can come much later if Redis is down.
    finished_at_ms: int = field(default_factory=now_ms)


class OutcomeRecorder(Middleware):
    """Writes queued/running/retrying/succeeded/failed/skipped transitions, one round trip each."""

    def __init__(
        self,
        *,
        log: OutcomeLog,
        client: redis.Redis,
        max_crash_deliveries: int,
        on_write_error: Callable[[], None] = lambda: None,
        writes: WorkerWrites | None = None,
    ) -> None:
        self.logger = get_logger(__name__, type(self))
        #: With our broker, writes are coalesced with those of the other threads (and final
        #: ones sent after the ack, without waiting); without it, each is a pipeline of its own.
        self.writes = writes
        self.on_write_error = on_write_error
        self.log = log
        self.client = client
        self.max_crash_deliveries = max_crash_deliveries
        self.write_errors = 0
        self._started: dict[str, tuple[int, int]] = {}
        self._verdicts: dict[str, _Verdict] = {}
        # Runs whose `running` write did not reach Redis: their final write counts them instead.
        self._uncounted: set[str] = set()
        self._lock = threading.Lock()

    def before_process_message(self, broker: Broker, message: MessageProxy) -> None:
        started = now_ms()
        attempt = int(message.options.get("retries", 0)) + 1
        key = _key(message)
        self._started[key] = (started, attempt)
        running = self.log.running(
            job_id=message.message_id,
            job_name=message.actor_name,
            queue=_queue(message),
            attempt=attempt,
            at_ms=started,
        )
        prior = message.prior_deliveries if isinstance(message, FetchedMessage) else None
        if prior is not None and self.writes is not None:
            # Sent before the job runs (a job that kills its process is counted), but not waited
            # for: the count it returns is known from the fetch. Tried until Redis takes it.
            self.writes.post(running, on_failure=lambda error: self._start_lost(key, error))
            deliveries = prior + 1
        else:
            results = self._write(running)
            if not results:
                self._uncounted.add(key)
            deliveries = int(results[-1]) if results else 1
        if deliveries > self.max_crash_deliveries:
            message.fail()
            raise CrashLoop(
                f"attempt {attempt} was delivered {deliveries} times without finishing: its worker process "
                f"died each time (crash loop), so the job is failed instead of retried"
            )

    def after_process_message(
        self,
        broker: Broker,
        message: MessageProxy,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        started, attempt = self._started.pop(_key(message), (now_ms(), 1))
        duration = now_ms() - started
        if exception is None:
            self._verdicts[_key(message)] = _Verdict("succeeded", attempt, duration)
            return
        error = f"{type(exception).__name__}: {exception}"
        trace = "".join(tb.format_exception(exception, limit=MAX_TRACEBACK_LINES))
        if message.failed:
            if message.options.get(RETRY_LOST):
                error += " (its retry could not be scheduled: Redis was unavailable)"
            self._verdicts[_key(message)] = _Verdict("failed", attempt, duration, error, trace)
            return
        next_retry = int(message.options.get(NEXT_RETRY_AT, 0))
        self._verdicts[_key(message)] = _Verdict("retrying", attempt, duration, error, trace, next_retry)

    def after_skip_message(self, broker: Broker, message: MessageProxy) -> None:
        _, attempt = self._started.pop(_key(message), (0, int(message.options.get("retries", 0)) + 1))
        if not message.failed:
            self._verdicts[_key(message)] = _Verdict("skipped", attempt, None, "skipped: periodic run too late")

    def after_ack(self, broker: Broker, message: MessageProxy) -> None:
        verdict = self._verdicts.pop(_key(message), None)
        if verdict is None:
            return  # a delayed message moved to its queue: not an attempt
        ids: dict[str, Any] = {
            "job_id": message.message_id,
            "job_name": message.actor_name,
            "at_ms": verdict.finished_at_ms,
        }
        commands: list[Command]
        if verdict.state == "succeeded":
            commands = self.log.succeeded(
                duration_ms=verdict.duration_ms or 0,
                attempt=verdict.attempt,
                started=_key(message) not in self._uncounted,
                **ids,
            )
        elif verdict.state == "retrying":
            commands = self.log.retrying(
                attempt=verdict.attempt,
                error=verdict.error,
                traceback=verdict.traceback,
                next_retry_at_ms=verdict.next_retry_at_ms,
                duration_ms=verdict.duration_ms or 0,
                **ids,
            )
        else:
            commands = self.log.skipped(reason=verdict.error, **ids)
        self._write(self._counted(message, commands), retry=True)

    def after_nack(self, broker: Broker, message: MessageProxy) -> None:
        verdict = self._verdicts.pop(_key(message), None)
        if verdict is None:
            # Failed before or instead of running: a crash loop, an unknown actor, a lost retry.
            exception = message._exception
            error = f"{type(exception).__name__}: {exception}" if exception else "dead-lettered"
            attempt = int(message.options.get("retries", 0)) + 1
            verdict = _Verdict("failed", attempt, None, error, "")
        data = job_data(message)
        failed = self.log.failed(
            job_id=message.message_id,
            job_name=message.actor_name,
            queue=_queue(message),
            error=verdict.error,
            traceback=verdict.traceback,
            attempts=verdict.attempt,
            data_json=json.dumps(data, separators=(",", ":"), default=str),
            dead_letter_id=message.options.get("redis_message_id", ""),
            duration_ms=verdict.duration_ms,
            at_ms=verdict.finished_at_ms,
        )
        self._write(self._counted(message, failed), retry=True)

    def _start_lost(self, key: str, error: BaseException) -> None:
        """A posted start that Redis refused for good: its final write counts the execution."""
        self._uncounted.add(key)
        self._count_failure(error)

    def _counted(self, message: MessageProxy, commands: list[Command]) -> list[Command]:
        """A final write, plus the execution its `running` write could not count (Redis was down):
        a job run while Redis was away still shows in `executions`."""
        if _key(message) not in self._uncounted:
            return commands
        self._uncounted.discard(_key(message))
        return [*commands, ("HINCRBY", self.log.keys.job(message.message_id), "executions", 1)]

    def _write(self, commands: list[Command], *, retry: bool = False) -> list[Any]:
        if self.writes is not None:
            return self._write_coalesced(self.writes, commands, final=retry)
        for attempt in range(3 if retry else 1):
            try:
                return connections.execute(self.client, commands)
            except BrokerUnavailable as error:
                failure: Exception = error
            except redis.RedisError as error:
                failure = error
            if attempt < 2 and retry:
                time.sleep(0.2 * (attempt + 1))
        self._count_failure(failure)
        return []

    def _write_coalesced(self, writes: WorkerWrites, commands: list[Command], *, final: bool) -> list[Any]:
        if final:
            # Queued behind this message's ack, and tried until Redis takes it, like the ack.
            writes.defer(commands, on_failure=self._count_failure)
            return []
        try:
            return [writes.write(commands)]  # the reply of the last command is all one needs
        except (BrokerUnavailable, redis.RedisError) as error:
            self._count_failure(error)
            return []

    def _count_failure(self, failure: BaseException) -> None:
        with self._lock:
            self.write_errors += 1
        self.on_write_error()
        self.logger.warning("Could not write the outcome log (%s); the job itself is unaffected.", failure)


def _key(message: MessageProxy | dramatiq.Message[Any]) -> str:
    return str(message.options.get("redis_message_id") or message.message_id)


def _queue(message: MessageProxy) -> str:
    return message.queue_name.removesuffix(".DQ")
