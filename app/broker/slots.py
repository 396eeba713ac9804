"""The concurrency slots a worker process holds: taken by its fetch (in Redis), renewed by its
liveness thread while it holds the job, given back with the job's ack or nack."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable

import redis

from app.broker.enqueue import WAKEUP_TOKENS, WAKEUP_TTL_SECONDS
from app.connection.commands import Command
from app.connection.scripts import lua
from app.keys import Keys, canonical_queue

_WAKE_UP = {"WAKEUP_TOKENS": WAKEUP_TOKENS, "WAKEUP_TTL": WAKEUP_TTL_SECONDS}
RELEASE_SLOT_SCRIPT = lua("wake_up", "release_slot", **_WAKE_UP)
ACK_RELEASE_SCRIPT = lua("wake_up", "ack_release", **_WAKE_UP)


class SlotHolds:
    """Redis id -> job type of each slot this process holds, per queue (on a Redis Cluster a
    queue's slots are in its own keyspace).

    Each method does one dict operation, atomic on its own, so that a job's way through the
    worker takes no lock for its slot; `renew` reads a copy."""

    def __init__(self, keys: Keys) -> None:
        self.keys = keys
        self._holds: dict[str, dict[str, str]] = {}
        #: The release's arguments per (queue, job type): built once.
        self._args: dict[tuple[str, str], tuple[object, ...]] = {}

    def take(self, queue_name: str, held: Iterable[tuple[str, str]]) -> None:
        """The slots a fetch of `queue_name` took: (redis id, job type) pairs."""
        holds = self._holds.get(queue_name)
        if holds is None:
            holds = self._holds.setdefault(queue_name, {})
        holds.update(held)

    def drop(self, queue_name: str, redis_id: str) -> None:
        holds = self._holds.get(queue_name)
        if holds is not None:
            holds.pop(redis_id, None)

    def release_command(self, queue_name: str, redis_id: str) -> Command | None:
        """The command that gives the slot back (None when this id holds none)."""
        release = self._release_args(queue_name, redis_id)
        return None if release is None else ("EVAL", RELEASE_SLOT_SCRIPT, 0, redis_id, *release)

    def ack_release_command(self, ack_set: str, messages: str, queue_name: str, redis_id: str) -> Command | None:
        """The ack of a delivery and the slot it held given back, in one call (None when it holds none)."""
        release = self._release_args(queue_name, redis_id)
        return None if release is None else ("EVAL", ACK_RELEASE_SCRIPT, 2, ack_set, messages, redis_id, *release)

    def _release_args(self, queue_name: str, redis_id: str) -> tuple[object, ...] | None:
        holds = self._holds.get(queue_name)
        job_name = None if holds is None else holds.get(redis_id)
        if job_name is None:
            return None
        args = self._args.get((queue_name, job_name))
        if args is None:
            queue = canonical_queue(queue_name)
            keys = self.keys.for_queue(queue)
            args = self._args[(queue_name, job_name)] = (
                keys.slots(job_name), keys.slot_waiting(queue, job_name), keys.wakeup(queue),
            )  # fmt: skip
        return args

    def renew(self, client_of: Callable[[str], redis.Redis], until_ms: int) -> None:
        """Extend every held slot's lease (only those still in Redis: XX), on the Redis of each
        queue's keyspace (`client_of(queue)`; one call per queue)."""
        for queue_name, holds in list(self._holds.items()):
            by_job: dict[str, list[str]] = defaultdict(list)
            for redis_id, job_name in holds.copy().items():
                by_job[job_name].append(redis_id)
            if not by_job:
                continue
            keys = self.keys.for_queue(queue_name)
            with client_of(queue_name).pipeline(transaction=False) as pipeline:
                for job_name, ids in by_job.items():
                    pipeline.zadd(keys.slots(job_name), dict.fromkeys(ids, until_ms), xx=True)
                pipeline.execute()
