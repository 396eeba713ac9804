"""Turning accepted jobs into Dramatiq messages and the Redis commands that enqueue them.

Every way in (the API, the batch endpoint, the producer, `actor.send()` through the broker)
ends here, so a job is validated, written and counted the same way, in one round trip.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

import dramatiq

from app.connection.commands import Command, coalesce
from app.connection.scripts import lua
from app.errors import InvalidJobData, UnknownJob
from app.job_ids import new_job_id, new_redis_id
from app.jobs import JobRegistry
from app.keys import (
    DEFAULT_PRIORITY,
    PRIORITY_LEVELS,
    Keys,
    canonical_queue,
    delay_queue,
    is_delay_queue,
    names_queue,
)
from app.outcomes.log import ENQUEUE_ONCE_SCRIPT, ENQUEUE_SCRIPT, SCHEDULE_RUN_SCRIPT, OutcomeLog
from app.outcomes.record import CANCELED, index_score, now_ms
from app.settings import Settings

#: The fields of a job as the API and the producer take it.
JOB_REQUEST_FIELDS = ("jobName", "data", "delayMs", "priority", "maxRetries", "queue")
#: The most retries an enqueue may ask for (as MAX_RETRIES allows).
MAX_RETRIES_LIMIT = 100
#: Dramatiq caps delays at 7 days.
MAX_DELAY_MS = 7 * 86_400_000
#: Wake-up lists are trimmed: enough tokens to wake every idle consumer, never a growing list.
WAKEUP_TOKENS = 64
WAKEUP_TTL_SECONDS = 60

# Options our broker stamps on a message the first time it is enqueued.
ENQUEUED_AT = "enqueued_at"
RUNNABLE_AT = "runnable_at"
#: Option of a message that puts a finished job back on its queue (its record is rewritten).
REQUEUE = "requeue"
#: Options of a message: its priority level (absent: normal) and the key its rate limit counts by.
PRIORITY = "priority"
RATE_KEY = "rate_key"

PUT_MESSAGE_SCRIPT = lua("wake_up", "message", CANCELED=CANCELED)


@dataclass(frozen=True)
class Enqueuer:
    """Builds messages and their enqueue commands for declared job types."""

    registry: JobRegistry
    keys: Keys
    log: OutcomeLog
    settings: Settings
    #: The enqueue script's group headers (what the jobs of one type, list and priority share),
    #: by (list's queue, job type, queue, priority): built once.
    _groups: dict[tuple[str, str, str, str], tuple[Any, ...]] = field(default_factory=dict, compare=False, repr=False)

    def message(
        self,
        job_name: object,
        data: Any,
        *,
        delay_ms: int | None = None,
        job_id: str | None = None,
        priority: str | None = None,
        max_retries: int | None = None,
        queue: str | None = None,
    ) -> tuple[dramatiq.Message[Any], int | None]:
        """Validate a job and make its message; UnknownJob or InvalidJobData otherwise.
        `priority`, `max_retries`, `queue`: this job's own, instead of its type's."""
        job_type = self.registry.get(job_name)
        clean = job_type.validate(data, self.settings)
        queue = queue or job_type.queue
        job_id = job_id or self.new_job_id(queue)
        options: dict[str, Any] = {}
        level = priority or job_type.priority
        if level != DEFAULT_PRIORITY:
            options[PRIORITY] = level  # absent means normal: most bodies stay as they were
        if max_retries is not None:
            options["max_retries"] = max_retries
        rate_key = job_type.rate_key(clean)
        if rate_key:
            options[RATE_KEY] = rate_key
        message: dramatiq.Message[Any] = dramatiq.Message(
            queue_name=queue,
            actor_name=job_type.name,
            args=(job_id, clean),
            kwargs={},
            options=options,
            message_id=job_id,
        )
        return message, delay_ms

    def from_request(self, item: dict[str, Any]) -> tuple[dramatiq.Message[Any], int | None]:
        """A job as the API and the producer take it (JOB_REQUEST_FIELDS; the caller checks
        there are no others): its message and delay, or InvalidJobData naming each bad field."""
        job_name = item.get("jobName")
        problems: dict[str, str] = {}
        try:
            delay = check_delay(item.get("delayMs"))
        except ValueError as error:
            problems["delayMs"] = str(error)
        priority = item.get("priority")
        if priority is not None and priority not in PRIORITY_LEVELS:
            problems["priority"] = f"must be one of {', '.join(PRIORITY_LEVELS)} (or left out for the job type's)"
        max_retries = item.get("maxRetries")
        if isinstance(max_retries, float) and max_retries.is_integer():
            max_retries = int(max_retries)  # JSON has one number type: 3.0 is the integer 3
        whole = isinstance(max_retries, int) and not isinstance(max_retries, bool)
        if max_retries is not None and not (whole and 0 <= max_retries <= MAX_RETRIES_LIMIT):
            problems["maxRetries"] = f"must be a whole number from 0 to {MAX_RETRIES_LIMIT}"
        queue = item.get("queue")
        declared = self.registry.queues()
        if queue is not None and queue not in declared:
            problems["queue"] = f"must be a declared queue: {', '.join(declared)}"
        if problems:
            self.registry.get(job_name)  # an unknown job name is the first thing to say
            raise InvalidJobData(str(job_name), problems)
        return self.message(
            job_name, item.get("data"), delay_ms=delay, priority=priority, max_retries=max_retries, queue=queue
        )

    def commands(
        self, message: dramatiq.Message[Any], delay_ms: int | None, *, at_ms: int | None = None, sequence: int = 0
    ) -> tuple[dramatiq.Message[Any], list[Command]]:
        """The message as stored, and the commands that enqueue it: a new job is one call of the
        enqueue script (which `coalesce` merges with its neighbours'), a job put back on its
        queue also rewrites its record, and a message already enqueued once (a retry, a delayed
        message now due) is only put on its queue."""
        stored, block = self._stored(message, delay_ms, at_ms, sequence)
        if block is not None:
            return stored, [("EVAL", ENQUEUE_SCRIPT, 0, *block)]
        queue = canonical_queue(stored.queue_name)
        commands: list[Command] = []
        if message.options.get(REQUEUE):
            # The record first: the put checks it (a canceled job's message is not put back).
            commands += self.log.requeued(
                job_id=stored.message_id,
                job_name=stored.actor_name,
                queue=queue,
                max_retries=self.max_retries_of(stored),
                data_json=COMPACT_JSON.encode(job_data(stored)),
                at_ms=int(stored.options[ENQUEUED_AT]),
                priority=stored.options.get(PRIORITY, DEFAULT_PRIORITY),
            )
        commands.append(self._put(stored))
        return stored, commands

    def requeue_commands(
        self, job_name: object, data: Any, job_id: str, *, queue: str | None = None, priority: str | None = None
    ) -> tuple[str, list[Command]]:
        """A finished job back on its queue with the same id (validated again), on the queue and
        at the priority it had: its queue, and the commands that put it there and rewrite its record."""
        declared = self.registry.queues()
        message, _ = self.message(
            job_name,
            data,
            job_id=job_id,
            queue=queue if queue in declared else None,
            priority=priority if priority in PRIORITY_LEVELS else None,
        )
        stored, commands = self.commands(message.copy(options={REQUEUE: True}), None)
        return stored.queue_name, commands

    def command_once(
        self, message: dramatiq.Message[Any], delay_ms: int | None, idempotency_key: str, ttl_seconds: int
    ) -> tuple[dramatiq.Message[Any], Command]:
        """A new job's enqueue under an idempotency key: the call's reply is the id of the job
        already enqueued under that key, or nothing once this one is."""
        stored, block = self._stored(message, delay_ms, None, 0)
        assert block is not None, "only a new job is enqueued under an idempotency key"
        idempotency = self.keys.for_queue(stored.queue_name).idempotency(idempotency_key)
        return stored, ("EVAL", ENQUEUE_ONCE_SCRIPT, 0, idempotency, ttl_seconds, *block)

    def command_scheduled(
        self,
        message: dramatiq.Message[Any],
        *,
        run_key: str,
        ttl_seconds: int,
        last_runs: str,
        schedule: str,
        last_run_json: str,
    ) -> tuple[dramatiq.Message[Any], Command]:
        """A schedule's run as a new job, enqueued at most once under `run_key` (which expires
        after `ttl_seconds`), and recorded as the schedule's last run in the hash `last_runs`: the
        call's reply is the id of the job already enqueued for this run, or nothing once this one is."""
        stored, block = self._stored(message, None, None, 0)
        assert block is not None, "a schedule's run is a new job"
        return stored, (
            "EVAL", SCHEDULE_RUN_SCRIPT, 0, run_key, ttl_seconds, last_runs, schedule, last_run_json, *block,
        )  # fmt: skip

    def _stored(
        self, message: dramatiq.Message[Any], delay_ms: int | None, at_ms: int | None, sequence: int
    ) -> tuple[dramatiq.Message[Any], list[Any] | None]:
        """The message as stored, and, for a new job, its block of the enqueue script."""
        at_ms = now_ms() if at_ms is None else at_ms
        is_new = ENQUEUED_AT not in message.options
        if delay_ms:
            runnable_at = at_ms + delay_ms
        else:
            # A delayed message moved to its queue became runnable at its eta, not now.
            runnable_at = int(message.options.get(RUNNABLE_AT, at_ms))
        options: dict[str, Any] = {"redis_message_id": new_redis_id(), RUNNABLE_AT: runnable_at}
        if is_new:
            options[ENQUEUED_AT] = at_ms
        queue = canonical_queue(message.queue_name)
        target = queue
        if delay_ms is not None:
            target = delay_queue(queue)
            options["eta"] = runnable_at
        message_id = message.message_id
        if is_new and self.keys.cluster and not names_queue(message_id):
            # Sent by Dramatiq's own `actor.send()` (periodiq's schedules among them): on a cluster
            # its id must name its queue, or its record could not be found from it.
            message_id = self.new_job_id(queue)
        # What message.copy() makes, without dataclasses.replace's cost (bulk enqueues add up).
        stored: dramatiq.Message[Any] = dramatiq.Message(
            queue_name=target,
            actor_name=message.actor_name,
            args=message.args,
            kwargs=message.kwargs,
            options={**message.options, **options},
            message_id=message_id,
            message_timestamp=message.message_timestamp,
        )
        if not is_new or message.options.get(REQUEUE):
            return stored, None
        job_id, job_name = stored.message_id, stored.actor_name
        level = stored.options.get(PRIORITY, DEFAULT_PRIORITY)
        group = self._groups.get((target, job_name, queue, level))
        if group is None:
            keys = self.keys.for_queue(queue)
            group = self._groups[(target, job_name, queue, level)] = (
                "g", keys.queue_messages(target), self.list_of(stored), keys.wakeup(target), WAKEUP_TOKENS,
                WAKEUP_TTL_SECONDS, *self.log.new_job_group(job_name, queue, level),
            )  # fmt: skip
        # The layout of a group and of a job: app/connection/lua/enqueue_jobs.lua.
        block = [
            *group, "j", options["redis_message_id"], encode(stored), index_score(at_ms, sequence),
            *self.log.new_job_values(
                job_id=job_id, max_retries=self.max_retries_of(stored), data_json=COMPACT_JSON.encode(job_data(stored)),
                at_ms=at_ms, run_at_ms=runnable_at if delay_ms else None,
            ),
        ]  # fmt: skip
        return stored, block

    def list_of(self, stored: dramatiq.Message[Any]) -> str:
        """The list a stored message's id goes on: its delay queue, or its priority level's list."""
        keys = self.keys.for_queue(stored.queue_name)
        if is_delay_queue(stored.queue_name):
            return keys.queue(stored.queue_name)
        return keys.priority_queue(stored.queue_name, stored.options.get(PRIORITY, DEFAULT_PRIORITY))

    def _put(self, stored: dramatiq.Message[Any]) -> Command:
        """Put a stored message on its queue (or delayed queue), waking an idle consumer."""
        target = stored.queue_name
        keys = self.keys.for_queue(target)
        return (
            "EVAL", PUT_MESSAGE_SCRIPT, 4, keys.queue_messages(target), self.list_of(stored),
            keys.wakeup(target), keys.job(stored.message_id), stored.options["redis_message_id"],
            encode(stored), WAKEUP_TOKENS, WAKEUP_TTL_SECONDS,
        )  # fmt: skip

    def commands_many(
        self, items: list[tuple[dramatiq.Message[Any], int | None]], *, at_ms: int | None = None
    ) -> tuple[list[dramatiq.Message[Any]], list[Command]]:
        """The messages as stored, and the commands that enqueue them all in one call."""
        at_ms = now_ms() if at_ms is None else at_ms
        stored: list[dramatiq.Message[Any]] = []
        commands: list[Command] = []
        for sequence, (message, delay_ms) in enumerate(items):
            one, job_commands = self.commands(message, delay_ms, at_ms=at_ms, sequence=sequence)
            stored.append(one)
            commands += job_commands
        return stored, coalesce(commands)

    def new_job_id(self, queue: str) -> str:
        """A new job's id (on a cluster, naming its queue)."""
        return new_job_id(queue=canonical_queue(queue)) if self.keys.cluster else new_job_id()

    def max_retries_of(self, message: dramatiq.Message[Any]) -> int:
        if "max_retries" in message.options:
            return int(message.options["max_retries"])
        try:
            declared = self.registry.get(message.actor_name).options.get("max_retries")
        except UnknownJob:
            declared = None
        return int(declared) if declared is not None else self.settings.max_retries


_MESSAGE_FIELDS = ("queue_name", "actor_name", "args", "kwargs", "options", "message_id", "message_timestamp")
# Message.encode() builds its dict by walking the dataclass fields on every call; with the fields
# known, the dict is built directly (the same bytes). Checked here, in case Dramatiq changes them.
_FIELDS_KNOWN = tuple(f.name for f in dataclasses.fields(dramatiq.Message)) == _MESSAGE_FIELDS


#: json.dumps(value, separators=(",", ":")) builds an encoder per call; this one is built once.
COMPACT_JSON = json.JSONEncoder(separators=(",", ":"))


def encode(message: dramatiq.Message[Any]) -> bytes:
    """`message.encode()`, for less."""
    if not _FIELDS_KNOWN:
        return message.encode()
    encoder = dramatiq.get_encoder()
    # Dramatiq's default encoder is json.dumps with these separators, encoded to UTF-8.
    encode_fields = _compact_utf8 if type(encoder) is dramatiq.JSONEncoder else encoder.encode
    return encode_fields(
        {
            "queue_name": message.queue_name,
            "actor_name": message.actor_name,
            "args": message.args,
            "kwargs": message.kwargs,
            "options": message.options,
            "message_id": message.message_id,
            "message_timestamp": message.message_timestamp,
        }
    )


def _compact_utf8(value: Any) -> bytes:
    return COMPACT_JSON.encode(value).encode("utf-8")


def job_data(message: dramatiq.Message[Any] | Any) -> Any:
    """The `data` a job was sent with (our actors take `(job_id, data)`)."""
    args = message.args
    return args[1] if len(args) > 1 else {}


def check_delay(delay_ms: object) -> int | None:
    """None, or a delay in ms within Dramatiq's limit; ValueError with a reason otherwise."""
    if delay_ms is None:
        return None
    if isinstance(delay_ms, float) and delay_ms.is_integer():
        delay_ms = int(delay_ms)  # JSON has one number type: 1000.0 is the integer 1000 (as in JSON Schema)
    if isinstance(delay_ms, bool) or not isinstance(delay_ms, int):
        raise ValueError("delayMs must be a whole number of milliseconds")
    if delay_ms < 0 or delay_ms > MAX_DELAY_MS:
        raise ValueError(f"delayMs must be between 0 and {MAX_DELAY_MS} (7 days)")
    return delay_ms or None
