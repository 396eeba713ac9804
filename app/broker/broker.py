"""The Redis broker: Dramatiq's RedisBroker with our enqueue and our consumer.

`TaskQueueBroker` changes RedisBroker in these ways:
- a new job's enqueue writes the message, a wake-up token, its outcome record and its enqueued
  counter in one call (app/broker/enqueue.py);
- a retry is scheduled and the failed delivery acked in one transaction, so a worker killed in
  between cannot leave both to run;
- its consumer (app/broker/consumer.py) waits on a wake-up list instead of sleeping, reads prior
  deliveries with each fetch, keeps track of the messages its process holds, and stops fetching
  once the worker drains (app/middleware/drain.py);
- the prefetch of ordinary queues is a setting (Dramatiq's default starves workers).
"""

from __future__ import annotations

import threading
from typing import Any

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import Middleware

from app.broker.consumer import InFlight, WakeableConsumer
from app.broker.enqueue import Enqueuer
from app.broker.slots import SlotHolds
from app.connection.clients import execute
from app.connection.commands import Command
from app.connection.scripts import lua
from app.connection.shards import Shard, Shards
from app.connection.worker_writes import ShardedWrites
from app.keys import LEVEL_PLACEHOLDERS, Keys, delay_queue, is_delay_queue
from app.outcomes.record import now_ms
from app.settings import Settings

#: Dramatiq's ack, as one call. KEYS: ack set, queue messages; ARGV: redis id.
ACK_SCRIPT = lua("ack")
#: Dramatiq's nack (a dead letter), as one call. KEYS: ack set, queue messages, dead letters and
#: their messages; ARGV: redis id, now (ms).
NACK_SCRIPT = lua("nack")
GIVE_BACK_SCRIPT = lua("wake_up", "priority_list", "give_back", **LEVEL_PLACEHOLDERS)
RECLAIM_STRANDED_SCRIPT = lua("wake_up", "priority_list", "reclaim_stranded", **LEVEL_PLACEHOLDERS)


class TaskQueueBroker(RedisBroker):
    """Dramatiq's RedisBroker with one-call enqueue, atomic retries, wake-ups and a configured prefetch."""

    def __init__(
        self,
        *,
        settings: Settings,
        keys: Keys,
        enqueuer: Enqueuer,
        shards: Shards,
        middleware: list[Middleware],
        writes: ShardedWrites,
    ) -> None:
        client = shards.client(keys)
        super().__init__(
            client=client,
            middleware=middleware,
            namespace=keys.broker_namespace,
            heartbeat_timeout=settings.heartbeat_timeout_ms,
        )
        self.settings = settings
        self.keys = keys
        #: The Redis of each queue's keyspace (one, without a cluster).
        self.shards = shards
        self.enqueuer = enqueuer
        #: Acks and outcome records of all threads, coalesced into few round trips (per Redis).
        self.writes = writes
        self.in_flight = InFlight()
        #: The concurrency slots this process holds.
        self.slots = SlotHolds(keys)
        self.draining = threading.Event()
        self.give_back = client.register_script(GIVE_BACK_SCRIPT)
        self.reclaim_stranded = client.register_script(RECLAIM_STRANDED_SCRIPT)

    @property
    def consumer_class(self) -> type[WakeableConsumer]:
        return WakeableConsumer

    def shard(self, queue_name: str) -> Shard[redis.Redis]:
        """A queue's keyspace and the client of its Redis."""
        return self.shards.for_queue(queue_name)

    def keyspaces(self) -> list[Shard[redis.Redis]]:
        """Every declared queue's keyspace once (the one, without a cluster): where this process
        stamps its heartbeats, reads paused queues and cancel requests, and sweeps dead workers."""
        return self.shards.of_queues(sorted(self.get_declared_queues()))

    def stop_fetching(self) -> None:
        """From now on consumers fetch nothing and give back what they have not handed out."""
        self.draining.set()

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 5000) -> WakeableConsumer:
        if not is_delay_queue(queue_name):
            prefetch = max(prefetch, self.settings.worker_prefetch)
        return WakeableConsumer(self, queue_name, prefetch, timeout)

    def enqueue(self, message: dramatiq.Message[Any], *, delay: int | None = None) -> dramatiq.Message[Any]:
        # A delayed message now due, moved by Dramatiq from this process's delay queue to its
        # queue: acked on the delay queue in the same transaction, so that a worker killed right
        # after cannot leave the delivery for the sweep to give back (the job would run twice,
        # and each copy go on retrying).
        redis_id = message.options.get("redis_message_id")
        moved_from = delay_queue(message.queue_name)
        if delay is None and redis_id is not None and self.in_flight.holds(moved_from, redis_id):
            return self._enqueue(message, delay, self.ack_command(moved_from, redis_id))
        return self._enqueue(message, delay, [])

    def enqueue_retry(self, message: dramatiq.Message[Any], *, delay: int) -> dramatiq.Message[Any]:
        """Schedule the retry of a fetched message and ack that delivery, in one transaction: a
        worker killed right after cannot leave the failed delivery behind for the dead-worker
        sweep to run again beside its retry."""
        return self._enqueue(message, delay, self.ack_command(message.queue_name, message.options["redis_message_id"]))

    def ack_command(self, queue_name: str, redis_id: str) -> list[Command]:
        """The ack of one delivery of this process, with the concurrency slot it held."""
        keys = self.keys.for_queue(queue_name)
        ack_set, messages = keys.acks(self.broker_id, queue_name), keys.queue_messages(queue_name)
        with_slot = self.slots.ack_release_command(ack_set, messages, queue_name, redis_id)
        return [with_slot or ("EVAL", ACK_SCRIPT, 2, ack_set, messages, redis_id)]

    def nack_command(self, queue_name: str, redis_id: str) -> list[Command]:
        """The nack of one delivery of this process (its message becomes a dead letter), with the
        concurrency slot it held."""
        keys = self.keys.for_queue(queue_name)
        nack: Command = (
            "EVAL", NACK_SCRIPT, 4, keys.acks(self.broker_id, queue_name), keys.queue_messages(queue_name),
            keys.dead_letters(queue_name), keys.dead_letter_messages(queue_name), redis_id, now_ms(),
        )  # fmt: skip
        return self._with_slot(nack, queue_name, redis_id)

    def _with_slot(self, command: Command, queue_name: str, redis_id: str) -> list[Command]:
        release = self.slots.release_command(queue_name, redis_id)
        return [command] if release is None else [command, release]

    def _enqueue(
        self, message: dramatiq.Message[Any], delay: int | None, along: list[Command]
    ) -> dramatiq.Message[Any]:
        stored, commands = self.enqueuer.commands(message, delay)
        self.logger.debug("Enqueueing message %r on queue %r.", stored.message_id, stored.queue_name)
        self.emit_before("enqueue", stored, delay)
        execute(self.shards.for_queue(stored.queue_name).client, [*commands, *along])
        self.emit_after("enqueue", stored, delay)
        return stored
