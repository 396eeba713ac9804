"""What a worker's fetch decides in Redis, in one call: which jobs of a queue it may start.

A fetch (app/connection/lua/fetch.lua) hands out nothing from a paused queue, takes the
priority levels in turn (of every 10 jobs, while several levels have some: 6 high, 3 normal,
1 low), drops a job canceled before any worker had it, and parks a job over its type's limit:
over its concurrency, on a waiting list until a slot is free (the next fetch after a slot is
given back takes it); over its rate, in a throttled set until its window has room. A parked
job uses no retry and is not a failure; it goes back to the head of its level. Slots are leases
(the heartbeat timeout) renewed by the worker's liveness thread while it holds the job, so that
a worker that dies holding one gives it back within the heartbeat timeout.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis

from app.connection.scripts import lua
from app.jobs import JobRegistry
from app.keys import LEVEL_SUFFIXES, PRIORITY_LEVELS, Keys
from app.outcomes.record import CANCELED

#: Slot leases written by one ZADD of a fetch (two values each: well within Lua's stack of 8,000).
LEASES_PER_ZADD = 1_000
FETCH_SCRIPT = lua("fetch", CANCELED=CANCELED, LEASES_PER_ZADD=LEASES_PER_ZADD)
FETCH_DELAYED_SCRIPT = lua("fetch_delayed")
#: A fetch examines at most this many jobs beyond those it may hand out (parked or dropped ones).
SCAN_EXTRA = 100
#: A level as fetch.lua writes it in a parked entry (`<level>|<redis id>`): its rank, from 1.
LEVEL_RANK = {level: str(rank) for rank, level in enumerate(PRIORITY_LEVELS, start=1)}
assert tuple(LEVEL_SUFFIXES) == PRIORITY_LEVELS


@dataclass(frozen=True)
class Fetched:
    """What one fetch handed out: (body, prior deliveries) pairs, and when the next throttled
    job is due (ms; 0 when none is)."""

    jobs: list[tuple[bytes, int]]
    next_due_ms: int


class Fetcher:
    """Builds and runs the fetch of one queue for one worker process."""

    def __init__(
        self, *, client: redis.Redis, keys: Keys, registry: JobRegistry, queue: str, broker_id: str, lease_ms: int
    ) -> None:
        self.client = client
        self.script = client.register_script(FETCH_SCRIPT)
        limits: list[Any] = []
        for job_type in registry.limited():
            rate = job_type.rate_limit
            limits += [
                job_type.name, job_type.concurrency or 0, keys.slots(job_type.name),
                keys.slot_waiting(queue, job_type.name), rate.limit if rate else 0, rate.window_ms if rate else 0,
                int(bool(rate and rate.key)), keys.rate_window(job_type.name),
            ]  # fmt: skip
        self.head: list[Any] = [
            keys.paused(), queue, keys.acks(broker_id, queue), keys.queue_messages(queue),
            *keys.priority_queues(queue), keys.fetch_turns(queue), keys.throttled(queue), keys.job_prefix(), lease_ms,
        ]  # fmt: skip
        self.limits = limits

    def fetch(self, count: int) -> Fetched:
        reply = self.script(args=[count, *self.head, count + SCAN_EXTRA, *self.limits])
        jobs = [(reply[i], int(reply[i + 1])) for i in range(1, len(reply), 2)]
        return Fetched(jobs=jobs, next_due_ms=int(reply[0]))


class DelayedFetcher:
    """The fetch of a delay queue: Dramatiq's, as one call of our own."""

    def __init__(self, *, client: redis.Redis, keys: Keys, queue: str, broker_id: str) -> None:
        self.script = client.register_script(FETCH_DELAYED_SCRIPT)
        self.args = [keys.queue(queue), keys.acks(broker_id, queue), keys.queue_messages(queue)]

    def fetch(self, count: int) -> list[bytes | None]:
        return list(self.script(args=[count, *self.args]))
