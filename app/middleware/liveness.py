"""Heartbeats and a deterministic sweep that gives a dead worker's jobs back to the queue.

Stock Dramatiq requeues a dead worker's unacked messages only when random "maintenance" fires
on that very queue (about 12 minutes on average). Here every worker process stamps its
heartbeat on a fixed interval (also while its threads are busy with long jobs, and while it
drains on shutdown) and sweeps: any worker silent for longer than the heartbeat timeout has its
unacked messages pushed back onto their queues, on every queue, in one atomic script. A worker
that stops marks itself dead at once, so what it leaves unacked comes back without waiting.

A process judges others dead only after its own heartbeats have gone through for a whole
timeout: after a Redis outage every stamp is old, and the first worker back must not take the
running jobs of workers that simply have not reconnected yet.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import redis
from dramatiq.broker import Broker
from dramatiq.logging import get_logger
from dramatiq.middleware import Middleware

from app.broker.enqueue import WAKEUP_TOKENS, WAKEUP_TTL_SECONDS
from app.broker.slots import SlotHolds
from app.connection.scripts import lua
from app.connection.shards import Shard
from app.keys import LEVEL_PLACEHOLDERS, delay_queue, is_delay_queue
from app.outcomes.record import now_ms

#: Heartbeat score of a worker that has stopped: swept by the next live worker at once.
STOPPED = 0

SWEEP_DEAD_WORKERS = lua("wake_up", "priority_list", "sweep_dead_workers", **LEVEL_PLACEHOLDERS)


class Liveness(Middleware):
    """Stamps this process's heartbeat and sweeps dead workers, on a background thread."""

    def __init__(self, *, heartbeat_timeout_ms: int) -> None:
        self.logger = get_logger(__name__, type(self))
        self.timeout_ms = heartbeat_timeout_ms
        self.interval_s = max(0.1, heartbeat_timeout_ms / 4000)
        self._stop = threading.Event()
        # Held around each beat and sweep, so that no beat lands after the "stopped" mark.
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._healthy_since: float | None = None

    def after_worker_boot(self, broker: Broker, worker: Any) -> None:
        self._stop.clear()
        self._healthy_since = None
        try:
            # Counted among the live workers from the moment it reports ready.
            self.beat(broker)
            self.describe(broker, worker)
        except redis.RedisError as error:
            self.logger.warning("First heartbeat failed (the thread will keep trying): %s", error)
        self._thread = threading.Thread(target=self._run, args=(broker,), name="liveness", daemon=True)
        self._thread.start()

    def after_worker_shutdown(self, broker: Broker, worker: Any) -> None:
        # Beats go on while the worker drains (a long job must not look dead and run twice);
        # they stop only now. Then the process declares itself dead and sweeps itself: whatever
        # it leaves unacked (a job still running when the shutdown timeout ran out) is back on
        # its queue at once, not after a heartbeat timeout.
        self._stop.set()
        acquired = self._lock.acquire(timeout=self.interval_s + 10)
        if not acquired:
            self.logger.warning("The heartbeat thread is stuck; marking this worker stopped anyway.")
        try:
            for shard in _keyspaces(broker):
                shard.client.zadd(shard.keys.heartbeats(), {_broker_id(broker): STOPPED})
                shard.client.hdel(shard.keys.workers(), _broker_id(broker))
            moved = self.sweep_once(broker, cutoff=STOPPED)
            if moved:
                self.logger.warning("Gave back %d job(s) still running at the end of the shutdown.", moved)
        except redis.RedisError as error:
            self.logger.warning("Could not mark this worker stopped (it will time out instead): %s", error)
        finally:
            if acquired:
                self._lock.release()

    def _run(self, broker: Broker) -> None:
        while not self._stop.is_set():
            with self._lock:
                if self._stop.is_set():
                    break
                try:
                    self.beat(broker)
                    moved = self.sweep_once(broker)
                    if moved:
                        self.logger.warning("Requeued %d job(s) of dead worker(s).", moved)
                except redis.RedisError as error:
                    self._healthy_since = None
                    self.logger.warning("Heartbeat failed: %s", error)
            self._stop.wait(self.interval_s)

    def describe(self, broker: Broker, worker: Any) -> None:
        """What the console shows of this process: host, pid, the worker command's pid, threads."""
        description = {
            "host": socket.gethostname(), "pid": os.getpid(), "ppid": os.getppid(),
            "threads": getattr(worker, "worker_threads", None), "startedAt": now_ms(),
        }  # fmt: skip
        for shard in _keyspaces(broker):
            shard.client.hset(shard.keys.workers(), _broker_id(broker), json.dumps(description))

    def beat(self, broker: Broker) -> None:
        """Stamp this process's heartbeat in every keyspace it works in (on a cluster, each queue's:
        the sweep and the API's cancel read them there)."""
        now = now_ms()
        for shard in _keyspaces(broker):
            shard.client.zadd(shard.keys.heartbeats(), {_broker_id(broker): now})
        slots = getattr(broker, "slots", None)
        if isinstance(slots, SlotHolds):
            # The concurrency slots this process holds stay its own while it beats.
            slots.renew(_client_of(broker), now + self.timeout_ms)
        if self._healthy_since is None:
            self._healthy_since = time.monotonic()

    def cutoff(self, now: int) -> int:
        """Stamps at or below this mean dead: older than the timeout once this process has been
        reaching Redis for a whole timeout, else only workers that marked themselves stopped."""
        healthy_for_ms = 0.0 if self._healthy_since is None else (time.monotonic() - self._healthy_since) * 1000
        return now - self.timeout_ms if healthy_for_ms >= self.timeout_ms else STOPPED

    def sweep_once(self, broker: Broker, *, cutoff: int | None = None) -> int:
        """Requeue the unacked messages of every worker whose stamp is at or below the cutoff, in
        each keyspace (one atomic call each)."""
        now = now_ms()
        cutoff = self.cutoff(now) if cutoff is None else cutoff
        moved = 0
        for shard in _keyspaces(broker):
            keys = shard.keys
            queues: set[str] = set()
            for queue in broker.get_declared_queues():
                if keys.for_queue(queue) == keys:
                    queues.update((queue, delay_queue(queue)))
            per_queue: list[str | int] = []
            for queue in sorted(queues):
                per_queue += [
                    keys.acks_suffix(queue), keys.queue(queue), keys.queue_messages(queue), keys.wakeup(queue),
                    0 if is_delay_queue(queue) else 1,
                ]  # fmt: skip
            args: list[str | int] = [
                now, cutoff, keys.heartbeats(), keys.acks_prefix(), keys.job_prefix(), WAKEUP_TOKENS,
                WAKEUP_TTL_SECONDS, *per_queue,
            ]  # fmt: skip
            moved += int(shard.client.register_script(SWEEP_DEAD_WORKERS)(args=args))
        return moved


def _keyspaces(broker: Broker) -> list[Shard[redis.Redis]]:
    """The keyspaces a broker works in, with their clients (app/broker/broker.py)."""
    return broker.keyspaces()  # type: ignore[attr-defined,no-any-return]


def _client_of(broker: Broker) -> Callable[[str], redis.Redis]:
    """The client of a queue's keyspace (app/broker/broker.py)."""

    def client_of(queue: str) -> redis.Redis:
        return broker.shard(queue).client  # type: ignore[attr-defined,no-any-return]

    return client_of


def _broker_id(broker: Broker) -> str:
    """The id under which a Redis broker stamps its heartbeat and keeps its ack sets."""
    return str(broker.broker_id)  # type: ignore[attr-defined]
