"""The consumer our broker hands to Dramatiq's worker, and what it knows of the messages it holds.

`WakeableConsumer` is Dramatiq's Redis consumer (`_RedisConsumer`, an internal: its shape is
pinned by the dramatiq version range in pyproject.toml and checked by
tests/broker/test_dramatiq_internals.py) with these changes: an idle consumer blocks on the
queue's wake-up list instead of sleeping, so a new job starts within milliseconds, and wakes for
the next delayed message exactly at its eta; it reads, with each fetch, how many times each
fetched job's attempt was delivered without finishing (a crash loop shows there), so a job's
start need not wait for Redis; it keeps track of the messages its process holds, so that a
message fetched but dropped from memory (a lost reply, a delayed message Dramatiq discards on a
connection error) goes back to its queue when the consumer reconnects; and on shutdown it stops
fetching and gives back, at once, what has not started.
"""

from __future__ import annotations

import heapq
import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import dramatiq
from dramatiq.broker import MessageProxy
from dramatiq.brokers.redis import _RedisConsumer
from dramatiq.errors import ConnectionClosed, DecodeError

from app.broker.enqueue import WAKEUP_TOKENS, WAKEUP_TTL_SECONDS
from app.broker.fetch import DelayedFetcher, Fetcher
from app.broker.messages import PAUSED, FetchedMessage
from app.connection.clients import REDIS_DOWN_ERRORS, execute
from app.keys import is_delay_queue
from app.outcomes.record import now_ms

if TYPE_CHECKING:
    from app.broker.broker import TaskQueueBroker


class InFlight:
    """The redis ids of the messages this process holds, per queue: handed to Dramatiq's threads
    and not yet acked, nacked or given back. Only ids in here may still be settled by a thread;
    anything else in this process's ack set is stranded and can go back to its queue."""

    def __init__(self) -> None:
        self._ids: dict[str, set[str]] = {}
        self._acked: dict[str, set[str]] = {}  # of those, the ones whose ack is on its way
        self._lock = threading.Lock()

    def hold(self, queue_name: str, redis_id: str) -> None:
        with self._lock:
            self._ids.setdefault(queue_name, set()).add(redis_id)

    def acked(self, queue_name: str, redis_id: str) -> None:
        """Its ack is queued: still held (until Redis has it), but no longer counted as work."""
        with self._lock:
            if redis_id in self._ids.get(queue_name, ()):
                self._acked.setdefault(queue_name, set()).add(redis_id)

    def release(self, queue_name: str, redis_ids: Iterable[str]) -> None:
        with self._lock:
            self._ids.get(queue_name, set()).difference_update(redis_ids)
            self._acked.get(queue_name, set()).difference_update(redis_ids)

    def forget(self, queue_name: str) -> None:
        with self._lock:
            self._ids.pop(queue_name, None)
            self._acked.pop(queue_name, None)

    def holds(self, queue_name: str, redis_id: str) -> bool:
        with self._lock:
            return redis_id in self._ids.get(queue_name, ())

    def snapshot(self, queue_name: str) -> list[str]:
        with self._lock:
            return list(self._ids.get(queue_name, ()))

    def count(self, queue_name: str) -> int:
        """Messages handed out and not yet acked (a consumer tops up its prefetch by this)."""
        with self._lock:
            return len(self._ids.get(queue_name, ())) - len(self._acked.get(queue_name, ()))


#: How often a draining consumer looks whether its thread has been stopped.
DRAIN_POLL_S = 0.05
#: How long closing a consumer waits for this process's deferred acks and records to go out.
CLOSE_FLUSH_S = 5.0
RESTART_FLUSH_S = 0.5
#: From this prefetch on, a consumer tops up in halves.
REFILL_IN_HALVES_FROM = 16


class WakeableConsumer(_RedisConsumer):
    """A consumer that waits on the queue's wake-up list (BLPOP) when the queue is empty.

    It also keeps the broker's record of messages in flight, gives back what its process
    dropped after a connection error (each new consumer starts with that), and stops fetching
    once the worker drains."""

    broker: TaskQueueBroker

    def __init__(self, broker: TaskQueueBroker, queue_name: str, prefetch: int, timeout: int) -> None:
        super().__init__(broker, queue_name, prefetch, timeout)
        # The queue's keyspace and its Redis (on a cluster, the node of the queue's slot; a
        # consumer rebuilt after a connection error picks up a failover's new node).
        shard = broker.shard(queue_name)
        keys, self.client = shard.keys, shard.client
        self.wakeup_key = keys.wakeup(queue_name)
        self.redis_keys = [
            keys.acks(broker.broker_id, queue_name),
            keys.queue(queue_name),
            keys.queue_messages(queue_name),
            self.wakeup_key,
        ]
        self.etas: list[int] = []
        # A large prefetch is topped up once half of it is used: fewer, larger fetches (each is
        # a round trip). A small one, as Dramatiq does, whenever there is room.
        self.refill_at = prefetch // 2 if prefetch >= REFILL_IN_HALVES_FROM else prefetch - 1
        self.reclaimed = False
        self.limited = {job_type.name for job_type in broker.enqueuer.registry.limited()}
        self.fetcher: Fetcher | None = None
        self.delayed_fetcher: DelayedFetcher | None = None
        if is_delay_queue(queue_name):
            self.delayed_fetcher = DelayedFetcher(
                client=self.client, keys=keys, queue=queue_name, broker_id=broker.broker_id
            )
        else:
            self.fetcher = Fetcher(
                client=self.client,
                keys=keys,
                registry=broker.enqueuer.registry,
                queue=queue_name,
                broker_id=broker.broker_id,
                lease_ms=broker.settings.heartbeat_timeout_ms,
            )
        if is_delay_queue(queue_name):
            # Dramatiq builds a new consumer after dropping (on a connection error) or giving
            # back (on other errors) everything its delay-queue thread held: none is in flight.
            broker.in_flight.forget(queue_name)

    @property
    def outstanding_message_count(self) -> int:
        # Counted across consumers: after a reconnect, messages of the previous one still run.
        return self.broker.in_flight.count(self.queue_name) + len(self.message_cache)

    def __next__(self) -> MessageProxy | None:
        try:
            if self.broker.draining.is_set():
                self._give_back_cache()
                time.sleep(DRAIN_POLL_S)
                return None
            if not self.reclaimed:
                self._reclaim_stranded()
            if self.message_cache:
                fetched = self.message_cache.pop(0)
                if fetched is None:
                    return None  # an id whose body is gone (acked by a worker declared dead)
                if not isinstance(fetched, FetchedMessage):
                    fetched = FetchedMessage(dramatiq.Message.decode(fetched), None)  # undecodable: raises here
                self.broker.in_flight.hold(self.queue_name, fetched.options["redis_message_id"])
                if "eta" in fetched.options:
                    heapq.heappush(self.etas, int(fetched.options["eta"]))
                return fetched
            if self.outstanding_message_count <= self.refill_at:
                self.message_cache = self._fetch(self.prefetch - self.outstanding_message_count)
                if self.message_cache:
                    return self.__next__()
            self._wait()
            return None
        except REDIS_DOWN_ERRORS as error:
            raise ConnectionClosed(error) from None

    def _fetch(self, count: int) -> list[FetchedMessage | bytes | None]:
        """Fetched bodies as messages, each with its job's prior deliveries (read by the fetch
        itself). A body that does not decode stays as it is, to fail when handed out, as in
        Dramatiq; a body gone (acked by a worker declared dead) is None."""
        if self.delayed_fetcher is not None:
            # Delayed messages are only moved to their queue when due, never run from here.
            return [self._decode(body, None) for body in self.delayed_fetcher.fetch(count)]
        assert self.fetcher is not None
        fetched = self.fetcher.fetch(count)
        if fetched.next_due_ms:
            heapq.heappush(self.etas, fetched.next_due_ms)  # wake when a throttled job is due
        if not self.limited:
            return [self._decode(body, deliveries) for body, deliveries in fetched.jobs]
        # The slots the fetch took, read off the decoded messages themselves in the same loop
        # (not through each proxy's attribute lookup afterwards: that was about 1 % of the
        # worker's CPU per job, py-spy).
        limited, taken = self.limited, []
        decoded: list[FetchedMessage | bytes | None] = []
        for body, deliveries in fetched.jobs:
            if body is None:
                decoded.append(None)
                continue
            try:
                message = dramatiq.Message.decode(body)
            except DecodeError:
                decoded.append(body)
                continue
            if message.actor_name in limited:
                taken.append((message.options["redis_message_id"], message.actor_name))
            decoded.append(FetchedMessage(message, deliveries))
        self.broker.slots.take(self.queue_name, taken)
        return decoded

    @staticmethod
    def _decode(body: bytes | None, deliveries: int | None) -> FetchedMessage | bytes | None:
        if body is None:
            return None
        try:
            return FetchedMessage(dramatiq.Message.decode(body), deliveries)
        except DecodeError:
            return body

    def ack(self, message: MessageProxy) -> None:
        # Not a round trip of its own: it goes with the next write of any thread of this process
        # (or within milliseconds). Round trips per job are what bound a worker's rate. Unlike
        # Dramatiq's ack, the body is dropped even if a sweep took the message back meanwhile
        # (this worker was thought dead): the job is done, and must not run a second time.
        # Heartbeats are stamped by the liveness thread, not by acks.
        if isinstance(message, FetchedMessage) and message.unstarted == PAUSED:
            self.requeue([message])  # its queue was paused after the fetch: back, unstarted
            return
        self._defer(message, self.broker.ack_command)

    def nack(self, message: MessageProxy) -> None:
        # Deferred like an ack, so that the failed job's outcome record (built in before_nack)
        # goes out with it: a worker killed in between cannot leave a dead letter whose record
        # still says running. Killed before the nack reached Redis, the message is still in this
        # worker's ack set, and the sweep gives it back.
        if isinstance(message, FetchedMessage) and message.settle_as_ack:
            self._defer(message, self.broker.ack_command)  # stopped on its cancel: not a dead letter
            return
        self._defer(message, self.broker.nack_command)

    def _defer(self, message: MessageProxy, command: Callable[[str, str], Any]) -> None:
        redis_id = message.options["redis_message_id"]
        self.broker.in_flight.acked(self.queue_name, redis_id)
        along = message.settle_with if isinstance(message, FetchedMessage) else []
        self.broker.writes.for_queue(self.queue_name).defer(
            [*command(self.queue_name, redis_id), *along],
            # Released only once Redis took it: until then the message must not be reclaimed.
            on_done=lambda _: self._settled(redis_id),
        )

    def _settled(self, redis_id: str) -> None:
        self.broker.in_flight.release(self.queue_name, [redis_id])
        self.broker.slots.drop(self.queue_name, redis_id)

    def close(self) -> None:
        # At shutdown, before the worker's shutdown hooks (the liveness sweep of this very
        # worker): acks still waiting in memory must reach Redis, or finished jobs would run
        # again. A consumer restarting after a connection error does not wait long: the acks
        # stay queued and go through once Redis answers.
        timeout = CLOSE_FLUSH_S if self.broker.draining.is_set() else RESTART_FLUSH_S
        if not self.broker.writes.flush(timeout) and self.broker.draining.is_set():
            self.logger.warning("Some acks did not reach Redis before closing; those jobs may run again.")
        super().close()

    def requeue(self, messages: Iterable[MessageProxy]) -> None:
        """Give fetched messages that never started back to the head of their queue."""
        redis_ids = [message.options["redis_message_id"] for message in messages]
        if not redis_ids:
            return
        self._give_back(redis_ids)
        self.broker.in_flight.release(self.queue_name, redis_ids)

    def _give_back_cache(self) -> None:
        cache, self.message_cache = [entry for entry in self.message_cache if entry is not None], []
        if cache:
            self._give_back([_redis_id(entry) for entry in cache])

    def _give_back(self, redis_ids: list[str]) -> None:
        # Only ids still in this process's ack set move (each once): the same message can be
        # given back twice (by the drain, then by Dramatiq's own shutdown), and is moved once.
        moved = self._run(self.broker.give_back, redis_ids)
        self._release_slots(redis_ids)
        if moved:
            self.logger.info("Gave back %d unstarted message(s) to queue %r.", moved, self.queue_name)

    def _release_slots(self, redis_ids: list[str]) -> None:
        """The concurrency slots of jobs given back unstarted: free for others at once."""
        slots = self.broker.slots
        releases = [release for redis_id in redis_ids if (release := slots.release_command(self.queue_name, redis_id))]
        if not releases:
            return
        try:
            execute(self.client, releases)
        except REDIS_DOWN_ERRORS as error:
            raise ConnectionClosed(error) from None
        for redis_id in redis_ids:
            slots.drop(self.queue_name, redis_id)

    def _reclaim_stranded(self) -> None:
        moved = self._run(self.broker.reclaim_stranded, self.broker.in_flight.snapshot(self.queue_name))
        self.reclaimed = True
        if moved:
            self.logger.warning("Gave back %d stranded message(s) to queue %r.", moved, self.queue_name)

    def _run(self, script: Any, ids: list[str]) -> int:
        levels = 0 if is_delay_queue(self.queue_name) else 1
        try:
            args = [WAKEUP_TOKENS, WAKEUP_TTL_SECONDS, levels, *ids]
            return int(script(keys=self.redis_keys, args=args, client=self.client))
        except REDIS_DOWN_ERRORS as error:
            raise ConnectionClosed(error) from None

    def _wait(self) -> None:
        """Block until a job is enqueued, the next delayed message is due, or the idle timeout."""
        timeout_s = self.timeout / 1000
        now = now_ms()
        while self.etas and self.etas[0] <= now:
            heapq.heappop(self.etas)
        if self.etas:
            timeout_s = min(timeout_s, (self.etas[0] - now) / 1000)
        if self.outstanding_message_count > self.refill_at and not self.etas:
            # Enough in hand: nothing to fetch until worker threads have finished some; poll gently.
            time.sleep(min(timeout_s, 0.005))
            return
        if timeout_s < 0.001:
            return
        self.client.blpop([self.wakeup_key], timeout=timeout_s)


def _redis_id(fetched: FetchedMessage | bytes) -> str:
    message = fetched if isinstance(fetched, FetchedMessage) else dramatiq.Message.decode(fetched)
    return str(message.options["redis_message_id"])
