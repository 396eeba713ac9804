"""The Redis broker and its middleware stack.

`TaskQueueBroker` is Dramatiq's RedisBroker with three changes:
- enqueue writes the message, a wake-up token and (for a new job) its outcome record and
  enqueued counter in one MULTI/EXEC round trip;
- an idle consumer blocks on the queue's wake-up list instead of sleeping, so a new job starts
  within milliseconds, and wakes up for the next delayed message exactly at its eta;
- the prefetch of ordinary queues is a setting (Dramatiq's default starves workers).
"""

from __future__ import annotations

import heapq
import time
from typing import Any

import dramatiq
import redis
from dramatiq.broker import MessageProxy
from dramatiq.brokers.redis import RedisBroker, _RedisConsumer
from dramatiq.errors import ConnectionClosed
from dramatiq.middleware import (
    AgeLimit,
    Callbacks,
    CurrentMessage,
    Middleware,
    Pipelines,
    ShutdownNotifications,
    TimeLimit,
)
from periodiq import PeriodiqMiddleware

from app import connections
from app.enqueue import Enqueuer
from app.errors import BrokerUnavailable
from app.jobs import JobRegistry, registry
from app.keys import Keys
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

    @property
    def consumer_class(self) -> type[_RedisConsumer]:
        return WakeableConsumer

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 5000) -> WakeableConsumer:
        if not queue_name.endswith(".DQ"):
            prefetch = max(prefetch, self.settings.worker_prefetch)
        return WakeableConsumer(self, queue_name, prefetch, timeout)

    def enqueue(self, message: dramatiq.Message[Any], *, delay: int | None = None) -> dramatiq.Message[Any]:
        stored, commands = self.enqueuer.commands(message, delay)
        self.logger.debug("Enqueueing message %r on queue %r.", stored.message_id, stored.queue_name)
        self.emit_before("enqueue", stored, delay)
        connections.execute(self.client, commands)
        self.emit_after("enqueue", stored, delay)
        return stored


class WakeableConsumer(_RedisConsumer):
    """A consumer that waits on the queue's wake-up list (BLPOP) when the queue is empty."""

    broker: TaskQueueBroker

    def __init__(self, broker: TaskQueueBroker, queue_name: str, prefetch: int, timeout: int) -> None:
        super().__init__(broker, queue_name, prefetch, timeout)
        self.wakeup_key = broker.keys.wakeup(queue_name)
        self.etas: list[int] = []

    def __next__(self) -> MessageProxy | None:
        try:
            if self.message_cache:
                data = self.message_cache.pop(0)
                if data is None:
                    return None
                message = dramatiq.Message.decode(data)
                self.queued_message_ids.add(message.message_id)
                if "eta" in message.options:
                    heapq.heappush(self.etas, int(message.options["eta"]))
                return MessageProxy(message)
            if self.outstanding_message_count < self.prefetch:
                self.message_cache = self.broker.do_fetch(
                    self.queue_name, self.prefetch - self.outstanding_message_count
                )
                if self.message_cache:
                    return self.__next__()
            self._wait()
            return None
        except (redis.ConnectionError, redis.TimeoutError) as error:
            raise ConnectionClosed(error) from None
        except BrokerUnavailable:
            raise

    def _wait(self) -> None:
        """Block until a job is enqueued, the next delayed message is due, or the idle timeout."""
        timeout_s = self.timeout / 1000
        now = now_ms()
        while self.etas and self.etas[0] <= now:
            heapq.heappop(self.etas)
        if self.etas:
            timeout_s = min(timeout_s, (self.etas[0] - now) / 1000)
        if self.outstanding_message_count >= self.prefetch and not self.etas:
            # Full: nothing to fetch until a worker thread finishes; poll gently.
            time.sleep(min(timeout_s, 0.005))
            return
        if timeout_s < 0.001:
            return
        self.broker.client.blpop([self.wakeup_key], timeout=timeout_s)


def build_middleware(settings: Settings, keys: Keys, log: OutcomeLog, client: redis.Redis) -> list[Middleware]:
    """The stack, in order. After-hooks run in reverse, so our recorders sit *before* the
    retries middleware: they run after it and see its verdict (retry scheduled or dead)."""
    from app.middleware.liveness import Liveness
    from app.middleware.metrics import WorkerMetrics
    from app.middleware.outcomes import OutcomeRecorder
    from app.middleware.retries import DurableRetries

    metrics = WorkerMetrics(settings=settings)
    return [
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
        ),
        Liveness(keys=keys, client=client, heartbeat_timeout_ms=settings.heartbeat_timeout_ms),
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
    log = OutcomeLog(keys=keys, retention_seconds=settings.log_retention_seconds)
    client = connections.make_client(settings)
    enqueuer = Enqueuer(registry=job_registry, keys=keys, log=log, max_retries=settings.max_retries)
    return TaskQueueBroker(
        settings=settings,
        keys=keys,
        enqueuer=enqueuer,
        client=client,
        middleware=build_middleware(settings, keys, log, client),
    )
