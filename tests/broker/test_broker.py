"""The broker against a private real Redis: a retry and the ack of its failed delivery are one step,
and so are a delayed message moved to its queue and the ack of its delay-queue delivery."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import dramatiq
import pytest
import redis

from app.broker.broker import TaskQueueBroker
from app.broker.messages import FetchedMessage
from app.jobs import JobRegistry
from app.keys import Keys, delay_queue
from app.middleware.liveness import STOPPED, Liveness
from app.middleware.retries import DurableRetries
from app.settings import Settings
from app.worker import create_broker
from tests.support.services import RedisServer, wait_until

KEYS = Keys()


@pytest.fixture
def broker(redis_server: RedisServer) -> Iterator[TaskQueueBroker]:
    made = create_broker(Settings.from_env({"REDIS_URL": redis_server.url, "WORKER_PREFETCH": "1"}), JobRegistry())
    made.declare_queue("default")
    yield made
    made.client.close()


def _fetch_one(broker: TaskQueueBroker) -> FetchedMessage:
    consumer = broker.consume("default", prefetch=1, timeout=100)
    found: list[Any] = []
    wait_until(lambda: found.append(next(consumer)) or found[-1] is not None, timeout=5, message="a fetch")
    message = found[-1]
    assert isinstance(message, FetchedMessage)
    return message


def test_a_worker_killed_after_scheduling_a_retry_leaves_nothing_for_the_sweep_to_replay(
    broker: TaskQueueBroker, redis_client: redis.Redis
) -> None:
    """The retry is scheduled, then the process dies before its deferred ack reaches Redis: the
    dead-worker sweep must not give back the failed delivery (the job would run again from the
    older attempt, beside its retry, and could be dead-lettered twice)."""
    broker.enqueue(dramatiq.Message("default", "flaky", ("job1", {}), {}, {}, message_id="job1"))
    message = _fetch_one(broker)
    assert redis_client.smembers(KEYS.acks(broker.broker_id, "default")) == {
        message.options["redis_message_id"].encode()
    }

    retries = next(m for m in broker.middleware if isinstance(m, DurableRetries))
    broker.actors["flaky"] = dramatiq.Actor(lambda: None, broker=broker, actor_name="flaky", queue_name="default",
                                            priority=0, options={})  # fmt: skip
    retries.after_process_message(broker, message, exception=RuntimeError("flaky"))
    # No ack sent by the consumer: the process is gone. The retry waits on the delay queue.
    assert redis_client.llen(KEYS.queue(delay_queue("default"))) == 1
    assert redis_client.scard(KEYS.acks(broker.broker_id, "default")) == 0
    assert not redis_client.hexists(KEYS.queue_messages("default"), message.options["redis_message_id"])

    redis_client.zadd(KEYS.heartbeats(), {broker.broker_id: STOPPED})
    liveness = Liveness(heartbeat_timeout_ms=1000)
    assert liveness.sweep_once(broker, cutoff=STOPPED) == 0
    assert redis_client.llen(KEYS.queue("default")) == 0


def test_a_delayed_message_moved_to_its_queue_leaves_nothing_on_the_delay_queue_for_the_sweep(
    broker: TaskQueueBroker, redis_client: redis.Redis
) -> None:
    """As Dramatiq's worker moves a due delayed message: enqueue a copy on the queue, then ack the
    delay-queue delivery (deferred, so a kill can come in between). The move acks it at once."""
    broker.enqueue(dramatiq.Message("default", "late", ("job2", {}), {}, {}, message_id="job2"), delay=1)
    consumer = broker.consume(delay_queue("default"), prefetch=1, timeout=100)
    found: list[Any] = []
    wait_until(lambda: found.append(next(consumer)) or found[-1] is not None, timeout=5, message="a delayed fetch")
    delayed = found[-1]
    due = delayed.copy(queue_name="default")
    del due.options["eta"]
    broker.enqueue(due)  # what Dramatiq's consumer thread does; its ack of `delayed` is not sent (killed)

    assert redis_client.scard(KEYS.acks(broker.broker_id, delay_queue("default"))) == 0
    assert redis_client.hlen(KEYS.queue_messages(delay_queue("default"))) == 0
    assert redis_client.llen(KEYS.queue("default")) == 1
    redis_client.zadd(KEYS.heartbeats(), {broker.broker_id: STOPPED})
    liveness = Liveness(heartbeat_timeout_ms=1000)
    assert liveness.sweep_once(broker, cutoff=STOPPED) == 0
    assert redis_client.llen(KEYS.queue("default")) == 1
