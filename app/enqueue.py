"""Turning accepted jobs into Dramatiq messages and the Redis commands that enqueue them.

Every way in (the API, the batch endpoint, the producer, `actor.send()` through the broker)
ends here, so a job is validated, written and counted the same way, in one round trip.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

import dramatiq

from app.jobs import JobRegistry
from app.keys import Keys, canonical_queue, delay_queue
from app.outcomes import Command, OutcomeLog, now_ms

#: Dramatiq caps delays at 7 days.
MAX_DELAY_MS = 7 * 86_400_000
#: Wake-up lists are trimmed: enough tokens to wake every idle consumer, never a growing list.
WAKEUP_TOKENS = 64
WAKEUP_TTL_SECONDS = 60

# Options our broker stamps on a message the first time it is enqueued.
ENQUEUED_AT = "enqueued_at"
RUNNABLE_AT = "runnable_at"


@dataclass(frozen=True)
class Enqueuer:
    """Builds messages and their enqueue commands for registered job types."""

    registry: JobRegistry
    keys: Keys
    log: OutcomeLog
    max_retries: int

    def message(
        self, job_name: object, data: Any, *, delay_ms: int | None = None, job_id: str | None = None
    ) -> tuple[dramatiq.Message[Any], int | None]:
        """Validate a job and make its message; UnknownJob or InvalidJobData otherwise."""
        job_type = self.registry.get(job_name)
        clean = job_type.validate(data)
        message = dramatiq.Message(
            queue_name=job_type.queue,
            actor_name=job_type.name,
            args=(job_id or new_job_id(), clean),
            kwargs={},
            options={},
        )
        message = message.copy(message_id=message.args[0])
        return message, delay_ms

    def commands(
        self,
        message: dramatiq.Message[Any],
        delay_ms: int | None,
        *,
        at_ms: int | None = None,
        sequence: int = 0,
    ) -> tuple[dramatiq.Message[Any], list[Command]]:
        """The message as stored, and the commands that enqueue it (and log it when it is new)."""
        at_ms = now_ms() if at_ms is None else at_ms
        is_new = ENQUEUED_AT not in message.options
        if delay_ms:
            runnable_at = at_ms + delay_ms
        else:
            # A delayed message moved to its queue became runnable at its eta, not now.
            runnable_at = int(message.options.get(RUNNABLE_AT, at_ms))
        options: dict[str, Any] = {"redis_message_id": str(uuid.uuid4()), RUNNABLE_AT: runnable_at}
        if is_new:
            options[ENQUEUED_AT] = at_ms
        queue = canonical_queue(message.queue_name)
        target = queue
        if delay_ms is not None:
            target = delay_queue(queue)
            options["eta"] = runnable_at
        stored = message.copy(queue_name=target, options=options)
        redis_id = options["redis_message_id"]
        commands: list[Command] = [
            ("HSET", self.keys.queue_messages(target), redis_id, stored.encode()),
            ("RPUSH", self.keys.queue(target), redis_id),
            *wakeup_commands(self.keys, target),
        ]
        if is_new:
            commands += self.log.queued(
                job_id=message.message_id,
                job_name=message.actor_name,
                queue=queue,
                max_retries=self.max_retries_of(message),
                data_json=json.dumps(job_data(message), separators=(",", ":")),
                at_ms=at_ms,
                run_at_ms=runnable_at if delay_ms else None,
                sequence=sequence,
                new=not message.options.get("requeue"),
            )
        return stored, commands

    def max_retries_of(self, message: dramatiq.Message[Any]) -> int:
        if "max_retries" in message.options:
            return int(message.options["max_retries"])
        try:
            actor_retries = self.registry.get(message.actor_name).actor.options.get("max_retries")
        except Exception:
            actor_retries = None
        return int(actor_retries) if actor_retries is not None else self.max_retries


def wakeup_commands(keys: Keys, queue: str) -> list[Command]:
    key = keys.wakeup(queue)
    return [
        ("LPUSH", key, 1),
        ("LTRIM", key, 0, WAKEUP_TOKENS - 1),
        ("EXPIRE", key, WAKEUP_TTL_SECONDS),
    ]


def job_data(message: dramatiq.Message[Any] | Any) -> Any:
    """The `data` a job was sent with (our actors take `(job_id, data)`)."""
    args = message.args
    return args[1] if len(args) > 1 else {}


def new_job_id() -> str:
    return uuid.uuid4().hex


def check_delay(delay_ms: object) -> int | None:
    """None, or a delay in ms within Dramatiq's limit; ValueError with a reason otherwise."""
    if delay_ms is None:
        return None
    if isinstance(delay_ms, bool) or not isinstance(delay_ms, int):
        raise ValueError("delayMs must be a whole number of milliseconds")
    if delay_ms < 0 or delay_ms > MAX_DELAY_MS:
        raise ValueError(f"delayMs must be between 0 and {MAX_DELAY_MS} (7 days)")
    return delay_ms or None
