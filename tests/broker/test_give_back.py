"""Giving back unstarted messages on shutdown, against a private real Redis: each message moves
once however many times it is given back (the drain, then Dramatiq's own close, then the stopping
worker's sweep of itself), the log counts what moved, and a stop signal stops fetching at once.
The whole shutdown of a worker with several processes: tests/faults/test_shutdown.py."""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Iterator
from types import FrameType
from typing import Any

import dramatiq
import pytest
import redis

from app.broker.broker import TaskQueueBroker
from app.jobs import JobRegistry
from app.keys import Keys, delay_queue
from app.middleware.drain import Drain
from app.middleware.liveness import STOPPED, Liveness
from app.settings import Settings
from app.worker import create_broker
from tests.support.services import RedisServer, wait_until

KEYS = Keys()
DQ = delay_queue("default")


@pytest.fixture
def broker(redis_server: RedisServer) -> Iterator[TaskQueueBroker]:
    made = create_broker(Settings.from_env({"REDIS_URL": redis_server.url}), JobRegistry())
    made.declare_queue("default")
    yield made
    made.client.close()


def _fetch(broker: TaskQueueBroker, queue: str, count: int) -> list[Any]:
    consumer = broker.consume(queue, prefetch=100, timeout=100)
    fetched: list[Any] = []

    def next_one() -> bool:
        message = next(consumer)
        if message is not None:
            fetched.append(message)
        return len(fetched) == count

    wait_until(next_one, timeout=5, message=f"{count} fetched from {queue}")
    return fetched


def _delayed(broker: TaskQueueBroker, count: int) -> list[Any]:
    for n in range(count):
        broker.enqueue(
            dramatiq.Message("default", "later", (f"job{n}", {}), {}, {}, message_id=f"job{n}"), delay=60_000
        )
    return _fetch(broker, DQ, count)


def _ids(client: redis.Redis, key: str) -> list[str]:
    return [raw.decode() for raw in client.lrange(key, 0, -1)]


def test_messages_given_back_again_and_again_are_moved_once_and_logged_once(
    broker: TaskQueueBroker, redis_client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    delayed = _delayed(broker, 3)
    redis_ids = [message.options["redis_message_id"] for message in delayed]
    consumer = broker.consume(DQ, prefetch=100, timeout=100)
    with caplog.at_level(logging.INFO):
        consumer.requeue(delayed)  # the drain
        consumer.requeue(delayed)  # Dramatiq's ConsumerThread.close, had the drain missed nothing
        consumer.requeue([delayed[0], delayed[0]])  # the same id twice in one call
    assert sorted(_ids(redis_client, KEYS.queue(DQ))) == sorted(redis_ids)
    assert not redis_client.smembers(KEYS.acks(broker.broker_id, DQ))
    given_back = [record.getMessage() for record in caplog.records if "Gave back" in record.getMessage()]
    assert given_back == ["Gave back 3 unstarted message(s) to queue 'default.DQ'."]

    # The stopping worker then marks itself stopped and sweeps itself: nothing is left to move.
    redis_client.zadd(KEYS.heartbeats(), {broker.broker_id: STOPPED})
    liveness = Liveness(heartbeat_timeout_ms=1000)
    assert liveness.sweep_once(broker, cutoff=STOPPED) == 0
    assert sorted(_ids(redis_client, KEYS.queue(DQ))) == sorted(redis_ids)


def test_what_another_process_already_settled_is_not_given_back(
    broker: TaskQueueBroker, redis_client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    delayed = _delayed(broker, 2)
    gone, kept = (message.options["redis_message_id"] for message in delayed)
    # One was taken back by a sweep (this worker was thought dead) and fetched by another worker.
    redis_client.srem(KEYS.acks(broker.broker_id, DQ), gone)
    with caplog.at_level(logging.INFO):
        broker.consume(DQ, prefetch=100, timeout=100).requeue(delayed)
    assert _ids(redis_client, KEYS.queue(DQ)) == [kept]
    assert "Gave back 1 unstarted message(s) to queue 'default.DQ'." in caplog.messages


def test_a_stop_signal_stops_fetching_at_once_then_hands_the_signal_on(
    broker: TaskQueueBroker, redis_client: redis.Redis
) -> None:
    # Dramatiq's worker process looks at its stop flag once a second: the processes of one
    # `dramatiq --processes N` would each go on fetching until then, and take what a stopping
    # sibling has just given back (tests/faults/test_shutdown.py shows it).
    seen: list[int] = []

    def dramatiq_handler(signum: int, frame: FrameType | None) -> None:
        seen.append(signum)

    original = signal.signal(signal.SIGTERM, dramatiq_handler)
    drain = Drain()
    try:
        drain.before_worker_boot(broker, worker=None)
        assert not broker.draining.is_set()
        os.kill(os.getpid(), signal.SIGTERM)
        wait_until(lambda: seen == [signal.SIGTERM], timeout=5, message="the signal handed on")
        assert broker.draining.is_set()

        broker.enqueue(dramatiq.Message("default", "now", ("job9", {}), {}, {}, message_id="job9"))
        consumer = broker.consume("default", prefetch=100, timeout=100)
        assert next(consumer) is None
        assert redis_client.llen(KEYS.queue("default")) == 1  # left for a worker that is not stopping

        drain.after_worker_shutdown(broker, worker=None)
        assert signal.getsignal(signal.SIGTERM) is dramatiq_handler
    finally:
        signal.signal(signal.SIGTERM, original)


def test_no_stop_handler_is_added_where_the_signal_is_not_handled(broker: TaskQueueBroker) -> None:
    original = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        Drain().before_worker_boot(broker, worker=None)
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    finally:
        signal.signal(signal.SIGTERM, original)
