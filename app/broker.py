"""The Redis broker and its middleware stack.

`TaskQueueBroker` is Dramatiq's RedisBroker with three changes:
- enqueue writes the message, a wake-up token and (for a new job) its outcome record and
  enqueued counter in one MULTI/EXEC round trip;
- an idle consumer blocks on the queue's wake-up list instead of sleeping, so a new job starts
  within milliseconds, and wakes up for the next delayed message exactly at its eta;
- the prefetch of ordinary queues is a setting (Dramatiq's default starves workers);
- the consumer reads, with each fetch, how many times each fetched job's attempt was delivered
  without finishing (a crash loop shows there), so a job's start need not wait for Redis;
- the consumer keeps track of the messages its process holds, so that a message fetched but
  dropped from memory (a lost reply, a delayed message Dramatiq discards on a connection error)
  goes back to its queue when the consumer reconnects, instead of waiting for a restart;
- on shutdown (see middleware/drain.py) consumers stop fetching, and messages that have not
  started go back to the head of their queue at once, for other workers to take.
"""

from __future__ import annotations

import heapq
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import dramatiq
import redis
from dramatiq.broker import MessageProxy
from dramatiq.brokers.redis import RedisBroker, _RedisConsumer
from dramatiq.errors import ConnectionClosed, DecodeError
from dramatiq.middleware import (
    AgeLimit,
    Callbacks,
    CurrentMessage,
    Middleware,
    MiddlewareError,
    Pipelines,
    ShutdownNotifications,
    TimeLimit,
)
from periodiq import PeriodiqMiddleware

from app import connections
from app.batching import WorkerWrites
from app.connections import REDIS_DOWN_ERRORS
from app.enqueue import WAKE_UP_LUA, WAKEUP_TOKENS, WAKEUP_TTL_SECONDS, Enqueuer
from app.jobs import JobRegistry, registry
from app.keys import DELAY_SUFFIX, Keys
from app.outcomes import OutcomeLog, now_ms
from app.settings import Settings

#: periodiq skips a periodic message handled later than this after its tick. A cleanup that
#: waited behind a backlog or a worker outage must still run, so allow most of a day.
PERIODIC_SKIP_DELAY_S = 23 * 3600


class TaskQueueBroker(RedisBroker):
    """Dramatiq's RedisBroker with one-round-trip enqueue, wake-ups and a configured prefetch."""

    def __init__(
        self,
        *,
        settings: Settings,
        keys: Keys,
        enqueuer: Enqueuer,
        client: redis.Redis,
        middleware: list[Middleware],
        writes: WorkerWrites | None = None,
    ) -> None:
        super().__init__(
            client=client,
            middleware=middleware,
            namespace=keys.broker_namespace,
            heartbeat_timeout=settings.heartbeat_timeout_ms,
        )
        self.settings = settings
        self.keys = keys
        self.enqueuer = enqueuer
        #: Acks and outcome records of all threads, coalesced into few round trips.
        self.writes = writes or WorkerWrites(client)
        self.in_flight = InFlight()
        self.draining = threading.Event()
        self.give_back = client.register_script(GIVE_BACK)
        self.reclaim_stranded = client.register_script(RECLAIM_STRANDED)

    @property
    def consumer_class(self) -> type[_RedisConsumer]:
        return WakeableConsumer

    @property
    def _handler_cache(self) -> dict[tuple[str, int, int], list[Middleware]]:
        # Set lazily: Broker.__init__ emits signals (adding middleware) before ours runs.
        cache = self.__dict__.get("_handlers_by_signal")
        if cache is None:
            cache = self.__dict__["_handlers_by_signal"] = {}
        return cache

    def stop_fetching(self) -> None:
        """From now on consumers fetch nothing and give back what they have not handed out."""
        self.draining.set()

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 5000) -> WakeableConsumer:
        if not queue_name.endswith(DELAY_SUFFIX):
            prefetch = max(prefetch, self.settings.worker_prefetch)
        return WakeableConsumer(self, queue_name, prefetch, timeout)

    def emit_before(self, signal: str, *args: Any, **kwargs: Any) -> None:
        # As Dramatiq's, calling only the middleware that handle the signal: with a dozen of
        # them, the no-op calls were a noticeable part of a short job's cost.
        signal = "before_" + signal
        for middleware in self._handlers(signal):
            try:
                getattr(middleware, signal)(self, *args, **kwargs)
            except MiddlewareError:
                raise
            except Exception:
                self.logger.critical("Unexpected failure in %s of %r.", signal, middleware, exc_info=True)

    def emit_after(self, signal: str, *args: Any, **kwargs: Any) -> None:
        signal = "after_" + signal
        for middleware in reversed(self._handlers(signal)):
            try:
                getattr(middleware, signal)(self, *args, **kwargs)
            except Exception:
                self.logger.critical("Unexpected failure in %s of %r.", signal, middleware, exc_info=True)

    def _handlers(self, signal: str) -> list[Middleware]:
        """The middleware (in order) whose class or instance defines `signal` itself."""
        key = (signal, id(self.middleware), len(self.middleware))
        found = self._handler_cache.get(key)
        if found is None:
            base = getattr(Middleware, signal, None)
            found = [m for m in self.middleware if signal in vars(m) or getattr(type(m), signal, None) is not base]
            self._handler_cache[key] = found
        return found

    def enqueue(self, message: dramatiq.Message[Any], *, delay: int | None = None) -> dramatiq.Message[Any]:
        stored, commands = self.enqueuer.commands(message, delay)
        self.logger.debug("Enqueueing message %r on queue %r.", stored.message_id, stored.queue_name)
        self.emit_before("enqueue", stored, delay)
        connections.execute(self.client, commands)
        self.emit_after("enqueue", stored, delay)
        return stored


class FetchedMessage(MessageProxy):
    """A message as our consumer hands it out: with the `deliveries` its job record showed at
    fetch time (how many times this attempt already started without finishing), or None when
    that could not be read."""

    def __init__(self, message: dramatiq.Message[Any], prior_deliveries: int | None) -> None:
        super().__init__(message)
        self.prior_deliveries = prior_deliveries


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

    def snapshot(self, queue_name: str) -> list[str]:
        with self._lock:
            return list(self._ids.get(queue_name, ()))

    def count(self, queue_name: str) -> int:
        """Messages handed out and not yet acked (a consumer tops up its prefetch by this)."""
        with self._lock:
            return len(self._ids.get(queue_name, ())) - len(self._acked.get(queue_name, ()))


# Give fetched messages back to the head of their queue (they were first in line), and wake
# idle consumers. KEYS: ack set, queue list, queue messages, wake-up list.
# ARGV: wake-up tokens, wake-up ttl, redis ids in queue order.
GIVE_BACK = (
    WAKE_UP_LUA
    + """
local moved = 0
for i = #ARGV, 3, -1 do
  if redis.call('SREM', KEYS[1], ARGV[i]) == 1 and redis.call('HEXISTS', KEYS[3], ARGV[i]) == 1 then
    redis.call('LPUSH', KEYS[2], ARGV[i])
    moved = moved + 1
  end
end
if moved > 0 then wake_up(KEYS[4], tonumber(ARGV[1]), tonumber(ARGV[2])) end
return moved
"""
)

# Give back every id of this process's ack set that no thread holds (same KEYS; ARGV: wake-up
# tokens, wake-up ttl, held ids). Such ids were fetched but dropped from memory: a fetch whose
# reply was lost, or delayed messages Dramatiq discards when its consumer hits a connection error.
RECLAIM_STRANDED = (
    WAKE_UP_LUA
    + """
local held = {}
for i = 3, #ARGV do held[ARGV[i]] = true end
local moved = 0
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if not held[id] then
    redis.call('SREM', KEYS[1], id)
    if redis.call('HEXISTS', KEYS[3], id) == 1 then
      redis.call('LPUSH', KEYS[2], id)
      moved = moved + 1
    end
  end
end
if moved > 0 then wake_up(KEYS[4], tonumber(ARGV[1]), tonumber(ARGV[2])) end
return moved
"""
)

#: How often a draining consumer looks whether its thread has been stopped.
DRAIN_POLL_S = 0.05
#: How long closing a consumer waits for this process's deferred acks and records to go out.
CLOSE_FLUSH_S = 5.0
RESTART_FLUSH_S = 0.5
#: From this prefetch on, a consumer tops up in halves.
REFILL_IN_HALVES_FROM = 16

# Dramatiq's ack, as one call. KEYS: ack set, queue messages; ARGV: redis id.
ACK = """
redis.call('SREM', KEYS[1], ARGV[1])
return redis.call('HDEL', KEYS[2], ARGV[1])
"""


class WakeableConsumer(_RedisConsumer):
    """A consumer that waits on the queue's wake-up list (BLPOP) when the queue is empty.

    It also keeps the broker's record of messages in flight, gives back what its process
    dropped after a connection error (each new consumer starts with that), and stops fetching
    once the worker drains."""

    broker: TaskQueueBroker

    def __init__(self, broker: TaskQueueBroker, queue_name: str, prefetch: int, timeout: int) -> None:
        super().__init__(broker, queue_name, prefetch, timeout)
        self.wakeup_key = broker.keys.wakeup(queue_name)
        self.redis_keys = [
            broker.keys.acks(broker.broker_id, queue_name),
            broker.keys.queue(queue_name),
            broker.keys.queue_messages(queue_name),
            self.wakeup_key,
        ]
        self.etas: list[int] = []
        # A large prefetch is topped up once half of it is used: fewer, larger fetches (each is
        # a round trip). A small one, as Dramatiq does, whenever there is room.
        self.refill_at = prefetch // 2 if prefetch >= REFILL_IN_HALVES_FROM else prefetch - 1
        self.reclaimed = False
        if queue_name.endswith(DELAY_SUFFIX):
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
                self.message_cache = self._decoded(
                    self.broker.do_fetch(self.queue_name, self.prefetch - self.outstanding_message_count)
                )
                if self.message_cache:
                    return self.__next__()
            self._wait()
            return None
        except REDIS_DOWN_ERRORS as error:
            raise ConnectionClosed(error) from None

    def _decoded(self, fetched: list[bytes | None]) -> list[FetchedMessage | bytes | None]:
        """Fetched bodies as messages, each with its job's prior deliveries (one round trip for
        all). A body that does not decode stays as it is, to fail when handed out, as in Dramatiq."""
        decoded: list[FetchedMessage | bytes | None] = []
        for data in fetched:
            try:
                decoded.append(None if data is None else FetchedMessage(dramatiq.Message.decode(data), None))
            except DecodeError:
                decoded.append(data)
        messages = [entry for entry in decoded if isinstance(entry, FetchedMessage)]
        if not messages or self.queue_name.endswith(DELAY_SUFFIX):
            return decoded  # delayed messages are only moved to their queue, never run from here
        try:
            # On this consumer's own connection: the worker threads' writes go on meanwhile.
            deliveries = self.broker.enqueuer.log.deliveries([m.message_id for m in messages])
            counts = self.broker.client.execute_command(*deliveries)
        except (*REDIS_DOWN_ERRORS, redis.RedisError) as error:
            # Each start then waits for its own count, as it would with any other broker.
            self.logger.warning("Could not read prior deliveries (%s).", error)
            return decoded
        for message, count in zip(messages, counts, strict=True):
            message.prior_deliveries = int(count)
        return decoded

    def ack(self, message: MessageProxy) -> None:
        # Not a round trip of its own: it goes with the next write of any thread of this process
        # (or within milliseconds). Round trips per job are what bound a worker's rate. Unlike
        # Dramatiq's ack, the body is dropped even if a sweep took the message back meanwhile
        # (this worker was thought dead): the job is done, and must not run a second time.
        # Heartbeats are stamped by the liveness thread, not by acks.
        redis_id = message.options["redis_message_id"]
        self.broker.in_flight.acked(self.queue_name, redis_id)
        self.broker.writes.defer(
            [("EVAL", ACK, 2, self.redis_keys[0], self.redis_keys[2], redis_id)],
            # Released only once Redis took it: until then the message must not be reclaimed.
            on_done=lambda _: self.broker.in_flight.release(self.queue_name, [redis_id]),
        )

    def nack(self, message: MessageProxy) -> None:
        self._settle(message, self.broker.do_nack)

    def _settle(self, message: MessageProxy, command: Callable[..., Any]) -> None:
        redis_id = message.options["redis_message_id"]
        try:
            command(self.queue_name, redis_id)
        except REDIS_DOWN_ERRORS as error:
            # Stock Dramatiq lets a timeout through as an "unhandled error": the message would
            # stay unacked and in flight for good. As ConnectionClosed the ack is tried again.
            raise ConnectionClosed(error) from None
        # Released only once Redis took it: until then the message must not be reclaimed.
        self.broker.in_flight.release(self.queue_name, [redis_id])

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
        self._run(self.broker.give_back, redis_ids)
        self.broker.in_flight.release(self.queue_name, redis_ids)
        self.logger.info("Gave back %d unstarted message(s) to queue %r.", len(redis_ids), self.queue_name)

    def _give_back_cache(self) -> None:
        cache, self.message_cache = [entry for entry in self.message_cache if entry is not None], []
        if cache:
            self._run(self.broker.give_back, [_redis_id(entry) for entry in cache])

    def _reclaim_stranded(self) -> None:
        moved = self._run(self.broker.reclaim_stranded, self.broker.in_flight.snapshot(self.queue_name))
        self.reclaimed = True
        if moved:
            self.logger.warning("Gave back %d stranded message(s) to queue %r.", moved, self.queue_name)

    def _run(self, script: Any, ids: list[str]) -> int:
        try:
            return int(script(keys=self.redis_keys, args=[WAKEUP_TOKENS, WAKEUP_TTL_SECONDS, *ids]))
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
        self.broker.client.blpop([self.wakeup_key], timeout=timeout_s)


def _redis_id(fetched: FetchedMessage | bytes) -> str:
    message = fetched if isinstance(fetched, FetchedMessage) else dramatiq.Message.decode(fetched)
    return str(message.options["redis_message_id"])


def build_middleware(
    settings: Settings, keys: Keys, log: OutcomeLog, client: redis.Redis, writes: WorkerWrites | None = None
) -> list[Middleware]:
    """The stack, in order. After-hooks run in reverse, so our recorders sit *before* the
    retries middleware: they run after it and see its verdict (retry scheduled or dead)."""
    from app.middleware.drain import Drain
    from app.middleware.liveness import Liveness
    from app.middleware.metrics import WorkerMetrics
    from app.middleware.outcomes import OutcomeRecorder
    from app.middleware.process_group import OwnProcessGroup
    from app.middleware.retries import DurableRetries

    metrics = WorkerMetrics(settings=settings)
    return [
        OwnProcessGroup(),
        AgeLimit(),
        TimeLimit(time_limit=settings.job_time_limit_ms),
        ShutdownNotifications(),
        Callbacks(),
        Pipelines(),
        CurrentMessage(),
        metrics,
        PeriodiqMiddleware(skip_delay=PERIODIC_SKIP_DELAY_S),
        OutcomeRecorder(
            log=log,
            client=client,
            max_crash_deliveries=settings.max_crash_deliveries,
            on_write_error=metrics.count_log_error,
            writes=writes,
        ),
        Liveness(keys=keys, client=client, heartbeat_timeout_ms=settings.heartbeat_timeout_ms),
        Drain(),
        DurableRetries(
            max_retries=settings.max_retries,
            min_backoff=settings.retry_min_backoff_ms,
            max_backoff=settings.retry_max_backoff_ms,
            enqueue_deadline_ms=settings.retry_enqueue_deadline_ms,
        ),
    ]


def create_broker(settings: Settings, job_registry: JobRegistry = registry) -> TaskQueueBroker:
    """The broker for these settings, with our middleware, not yet connected."""
    keys = Keys(namespace=settings.namespace)
    log = OutcomeLog(keys=keys, retention_seconds=settings.log_retention_seconds, scripts=True)
    client = connections.make_client(settings)
    enqueuer = Enqueuer.for_settings(settings, registry=job_registry, keys=keys, log=log)
    writes = WorkerWrites(client)
    return TaskQueueBroker(
        settings=settings,
        keys=keys,
        enqueuer=enqueuer,
        client=client,
        writes=writes,
        middleware=build_middleware(settings, keys, log, client, writes),
    )
