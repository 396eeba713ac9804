"""The concurrency slots a worker process holds: taken by its fetch (in Redis), renewed by its
liveness thread while it holds the job, given back with the job's ack or nack."""

from __future__ import annotations

import threading
from collections import defaultdict

import redis

from app.broker.enqueue import WAKEUP_TOKENS, WAKEUP_TTL_SECONDS
from app.connection.commands import Command
from app.connection.scripts import lua
from app.keys import Keys, canonical_queue

RELEASE_SLOT_SCRIPT = lua("wake_up", "release_slot")
ACK_RELEASE_SCRIPT = lua("wake_up", "ack_release")


class SlotHolds:
    """Redis id -> job type of each slot this process holds."""

    def __init__(self, keys: Keys) -> None:
        self.keys = keys
        self._holds: dict[str, str] = {}
        #: The release's arguments per (queue, job type): built once.
        self._args: dict[tuple[str, str], tuple[object, ...]] = {}
        self._lock = threading.Lock()

    def take(self, redis_id: str, job_name: str) -> None:
        with self._lock:
            self._holds[redis_id] = job_name

    def drop(self, redis_id: str) -> None:
        with self._lock:
            self._holds.pop(redis_id, None)

    def release_command(self, queue_name: str, redis_id: str) -> Command | None:
        """The command that gives the slot back (None when this id holds none)."""
        release = self._release_args(queue_name, redis_id)
        return None if release is None else ("EVAL", RELEASE_SLOT_SCRIPT, 0, redis_id, *release)

    def ack_release_command(self, ack_set: str, messages: str, queue_name: str, redis_id: str) -> Command | None:
        """The ack of a delivery and the slot it held given back, in one call (None when it holds none)."""
        release = self._release_args(queue_name, redis_id)
        return None if release is None else ("EVAL", ACK_RELEASE_SCRIPT, 2, ack_set, messages, redis_id, *release)

    def _release_args(self, queue_name: str, redis_id: str) -> tuple[object, ...] | None:
        with self._lock:
            job_name = self._holds.get(redis_id)
        if job_name is None:
            return None
        args = self._args.get((queue_name, job_name))
        if args is None:
            queue = canonical_queue(queue_name)
            args = self._args[(queue_name, job_name)] = (
                self.keys.slots(job_name), self.keys.slot_waiting(queue, job_name), self.keys.wakeup(queue),
                WAKEUP_TOKENS, WAKEUP_TTL_SECONDS,
            )  # fmt: skip
        return args

    def renew(self, client: redis.Redis, until_ms: int) -> None:
        """Extend every held slot's lease (only those still in Redis: XX)."""
        by_job: dict[str, list[str]] = defaultdict(list)
        with self._lock:
            for redis_id, job_name in self._holds.items():
                by_job[job_name].append(redis_id)
        if not by_job:
            return
        with client.pipeline(transaction=False) as pipeline:
            for job_name, ids in by_job.items():
                pipeline.zadd(self.keys.slots(job_name), dict.fromkeys(ids, until_ms), xx=True)
            pipeline.execute()
