"""What each queue holds right now, read from Redis in one call: what GET /queues answers and what
the API's /metrics exports per queue. Pausing and resuming a queue are here too."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from app.broker.enqueue import WAKEUP_TOKENS, WAKEUP_TTL_SECONDS
from app.connection.commands import Command
from app.connection.scripts import lua
from app.jobs import JobRegistry
from app.keys import PRIORITY_LEVELS, Keys, delay_queue

QUEUE_STATE_SCRIPT = lua("queue_state")
RESUME_SCRIPT = lua("wake_up", "resume")


@dataclass(frozen=True)
class QueueState:
    """One queue's figures at one moment."""

    name: str
    ready_by_priority: dict[str, int]
    #: Delayed jobs and jobs waiting for their next retry.
    delayed: int
    #: Jobs held back by a rate limit or waiting for a concurrency slot.
    waiting: int
    #: Jobs live workers have fetched and not settled yet.
    running: int
    #: Dead letters.
    failed: int
    #: How long the oldest ready job (of any priority level) has been runnable.
    oldest_age_seconds: float
    #: When the queue was paused (ms), None if it is not.
    paused_at: int | None

    @property
    def ready(self) -> int:
        return sum(self.ready_by_priority.values())

    @property
    def paused(self) -> bool:
        return self.paused_at is not None

    def public(self) -> dict[str, Any]:
        """As GET /queues answers it."""
        return {
            "name": self.name,
            "ready": self.ready,
            "readyByPriority": dict(self.ready_by_priority),
            "delayed": self.delayed,
            "waiting": self.waiting,
            "running": self.running,
            "failed": self.failed,
            "oldestAgeSeconds": self.oldest_age_seconds,
            "paused": self.paused,
            "pausedAt": self.paused_at,
        }


@dataclass(frozen=True)
class QueueReader:
    """Builds the one call that reads queues' figures, and reads its reply."""

    keys: Keys
    #: The declared queues.
    queues: tuple[str, ...]
    #: (job type, queue) of each job type whose starts are limited: its jobs can wait for a slot.
    limited: tuple[tuple[str, str], ...] = ()
    heartbeat_timeout_ms: int = 30_000

    @classmethod
    def of(cls, registry: JobRegistry, keys: Keys, *, heartbeat_timeout_ms: int) -> QueueReader:
        """A reader of the queues `registry` declares."""
        return cls.for_jobs(
            keys,
            [(job_type.name, job_type.queue) for job_type in registry],
            [(job_type.name, job_type.queue) for job_type in registry.limited()],
            heartbeat_timeout_ms=heartbeat_timeout_ms,
        )

    @classmethod
    def for_jobs(
        cls,
        keys: Keys,
        jobs: Iterable[tuple[str, str]],
        limited: Iterable[tuple[str, str]] = (),
        *,
        heartbeat_timeout_ms: int,
    ) -> QueueReader:
        """A reader of the queues of these (job type, queue) pairs."""
        return cls(
            keys=keys,
            queues=tuple(sorted({queue for _, queue in jobs})),
            limited=tuple(sorted(set(limited))),
            heartbeat_timeout_ms=heartbeat_timeout_ms,
        )

    def command(self, now: int, queues: Sequence[str] | None = None) -> Command:
        """The call that reads these queues (default: every declared one) at `now` (ms)."""
        keys = self.keys
        args: list[Any] = [now - self.heartbeat_timeout_ms, keys.heartbeats(), keys.acks_prefix(), keys.paused()]
        for queue in self.queues if queues is None else queues:
            levels = keys.priority_queues(queue)
            slot_lists = [keys.slot_waiting(queue, name) for name, of in self.limited if of == queue]
            args += [
                queue, keys.acks_suffix(queue), keys.queue_messages(queue), keys.queue_messages(delay_queue(queue)),
                keys.dead_letters(queue), keys.throttled(queue), len(levels), len(slot_lists), *levels, *slot_lists,
            ]  # fmt: skip
        return ("EVAL", QUEUE_STATE_SCRIPT, 0, *args)

    def parse(self, reply: Sequence[Any], now: int, queues: Sequence[str] | None = None) -> list[QueueState]:
        """The figures in the reply of `command(now, queues)`."""
        states = []
        for queue, figures in zip(self.queues if queues is None else queues, reply, strict=True):
            ready = [int(count) for count in figures[: len(PRIORITY_LEVELS)]]
            delayed, failed, waiting, running, oldest, paused_at = figures[len(PRIORITY_LEVELS) :]
            states.append(
                QueueState(
                    name=queue,
                    ready_by_priority=dict(zip(PRIORITY_LEVELS, ready, strict=True)),
                    delayed=int(delayed),
                    waiting=int(waiting),
                    running=int(running),
                    failed=int(failed),
                    oldest_age_seconds=max(0.0, (now - int(oldest)) / 1000) if int(oldest) else 0.0,
                    paused_at=int(paused_at) if paused_at else None,
                )
            )
        return states

    def pause_command(self, queue: str, now: int) -> Command:
        """Pause a queue; one already paused keeps the time it was first paused."""
        return ("HSETNX", self.keys.paused(), queue, now)

    def resume_command(self, queue: str) -> Command:
        """Resume a queue and wake its idle consumers at once."""
        keys = self.keys
        return ("EVAL", RESUME_SCRIPT, 2, keys.paused(), keys.wakeup(queue), queue, WAKEUP_TOKENS, WAKEUP_TTL_SECONDS)
