"""The recovery logic itself, in one process against the private Redis: when the sweep may
judge a worker dead, and what a consumer gives back after it reconnects."""

from __future__ import annotations

import json
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any, cast

import dramatiq
import pytest
import redis

from app.broker.broker import TaskQueueBroker
from app.broker.consumer import InFlight
from app.broker.messages import FetchedMessage
from app.connection.shards import Shard
from app.jobs import JobRegistry
from app.keys import Keys
from app.middleware.liveness import STOPPED, Liveness
from app.outcomes.record import now_ms
from app.settings import Settings
from app.worker import create_broker
from tests.support.services import RedisServer, wait_until

pytestmark = pytest.mark.fault

KEYS = Keys()


def _fetched_by(client: redis.Redis, worker: str, redis_id: str, job_id: str) -> None:
    """A message that `worker` fetched and has not acked."""
    client.hset(KEYS.queue_messages("default"), redis_id, json.dumps({"message_id": job_id}))
    client.sadd(KEYS.acks(worker, "default"), redis_id)


def test_sweep_after_an_outage_waits_for_a_whole_timeout_of_its_own_heartbeats(redis_client: redis.Redis) -> None:
    shard = Shard(KEYS, redis_client)
    me = cast(Any, SimpleNamespace(broker_id="me", get_declared_queues=lambda: {"default"}, keyspaces=lambda: [shard]))
    liveness = Liveness(heartbeat_timeout_ms=500)
    # As Redis comes back after an outage: every stamp is old, the other worker is alive but
    # has not reconnected yet; a third one stopped cleanly before the outage.
    redis_client.zadd(KEYS.heartbeats(), {"other": now_ms() - 10_000, "stopped": STOPPED})
    _fetched_by(redis_client, "other", "r1", "job1")
    _fetched_by(redis_client, "stopped", "r2", "job2")

    liveness.beat(me)
    assert liveness.sweep_once(me) == 1  # only the worker that said it stopped
    assert redis_client.lrange(KEYS.queue("default"), 0, -1) == [b"r2"]
    redis_client.zadd(KEYS.heartbeats(), {"other": now_ms()})  # the other one reconnects in time
    liveness.beat(me)
    assert liveness.sweep_once(me) == 0 and redis_client.sismember(KEYS.acks("other", "default"), "r1")

    # Silent for longer than the timeout while this process reaches Redis: dead.
    def swept() -> bool:
        liveness.beat(me)
        return liveness.sweep_once(me) == 1

    wait_until(swept, timeout=5, interval=0.05, message="the silent worker to be swept")
    assert redis_client.lrange(KEYS.queue("default"), 0, -1) == [b"r2", b"r1"]
    assert redis_client.zscore(KEYS.heartbeats(), "other") is None


@pytest.fixture
def broker(redis_server: RedisServer) -> Iterator[TaskQueueBroker]:
    made = create_broker(Settings.from_env({"REDIS_URL": redis_server.url, "WORKER_PREFETCH": "1"}), JobRegistry())
    made.declare_queue("default")
    yield made
    made.client.close()


def _message(n: int) -> dramatiq.Message[Any]:
    return dramatiq.Message(
        queue_name="default", actor_name="emailJob", args=(f"job{n}", {}), kwargs={}, options={}, message_id=f"job{n}"
    )


def test_a_new_delay_queue_consumer_gives_back_what_the_last_one_dropped(
    broker: TaskQueueBroker, redis_client: redis.Redis
) -> None:
    broker.enqueue(_message(1), delay=60_000)
    first = broker.consume("default.DQ", prefetch=10, timeout=50)
    held = next(first)
    assert held is not None and held.message_id == "job1"
    # Dramatiq drops its in-memory delayed messages on a connection error and builds a new
    # consumer: the message is still in this process's ack set, and nobody would ever run it.
    second = broker.consume("default.DQ", prefetch=10, timeout=50)
    again = next(second)
    assert again is not None and again.message_id == "job1"
    assert redis_client.smembers(KEYS.acks(broker.broker_id, "default.DQ")) == {
        again.options["redis_message_id"].encode()
    }


def test_a_new_consumer_gives_back_only_what_no_thread_holds(
    broker: TaskQueueBroker, redis_client: redis.Redis
) -> None:
    for n in range(3):
        broker.enqueue(_message(n))
    first = broker.consume("default", prefetch=2, timeout=50)
    running = [next(first), next(first)]  # handed to worker threads
    assert all(running)
    # A fetch whose reply was lost: in the ack set, in no thread.
    (lost,) = broker.do_fetch("default", 1)
    lost_id = json.loads(lost)["options"]["redis_message_id"]

    second = broker.consume("default", prefetch=3, timeout=50)
    again = next(second)
    assert again is not None and again.options["redis_message_id"] == lost_id
    acks = {
        m.decode() if isinstance(m, bytes) else str(m)
        for m in redis_client.smembers(KEYS.acks(broker.broker_id, "default"))
    }
    assert acks == {lost_id, *(m.options["redis_message_id"] for m in running if m)}
    for message in [*running, again]:
        assert message is not None
        second.ack(message)
    flush = getattr(getattr(broker, "writes", None), "flush", None)
    if flush is not None:  # acks that go with the process's next write
        assert flush(5.0)
    assert not redis_client.smembers(KEYS.acks(broker.broker_id, "default"))
    assert second.outstanding_message_count == 0


def test_a_consumer_hands_out_each_jobs_prior_deliveries(broker: TaskQueueBroker, redis_client: redis.Redis) -> None:
    """Read with the fetch, so that a job's start need not wait for Redis to spot a crash loop."""
    for n in range(3):
        broker.enqueue(_message(n))
    redis_client.hset(KEYS.job("job1"), "deliveries", 2)
    consumer = broker.consume("default", prefetch=3, timeout=50)
    handed = [next(consumer) for _ in range(3)]
    assert [(m.message_id, m.prior_deliveries) for m in handed if isinstance(m, FetchedMessage)] == [
        ("job0", 0),
        ("job1", 2),
        ("job2", 0),
    ]


def test_an_acked_message_stops_counting_as_work_but_stays_held_until_redis_has_the_ack() -> None:
    """So that a consumer tops up its prefetch at once, while a reconnecting one still does not
    give back a message whose ack has not reached Redis."""
    in_flight = InFlight()
    in_flight.hold("default", "a")
    in_flight.hold("default", "b")
    in_flight.acked("default", "a")
    in_flight.acked("default", "never-held")
    assert in_flight.count("default") == 1 and sorted(in_flight.snapshot("default")) == ["a", "b"]
    in_flight.release("default", ["a"])
    assert in_flight.count("default") == 1 and in_flight.snapshot("default") == ["b"]


def test_a_draining_consumer_fetches_nothing_and_gives_back_its_cache(
    broker: TaskQueueBroker, redis_client: redis.Redis
) -> None:
    for n in range(3):
        broker.enqueue(_message(n))
    consumer = broker.consume("default", prefetch=3, timeout=50)
    first = next(consumer)  # fetches 3, hands out one
    assert first is not None and len(consumer.message_cache) == 2
    broker.stop_fetching()
    assert next(consumer) is None
    assert redis_client.llen(KEYS.queue("default")) == 2
    assert redis_client.smembers(KEYS.acks(broker.broker_id, "default")) == {first.options["redis_message_id"].encode()}
    broker.enqueue(_message(9))
    assert next(consumer) is None and redis_client.llen(KEYS.queue("default")) == 3
