"""Fixtures of the fault suite: a webhook receiver and views of Dramatiq's keys in Redis."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from app.keys import Keys
from tests.faults.receiver import Receiver

KEYS = Keys()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    made = Receiver()
    yield made
    made.close()


def live_workers(client: redis.Redis) -> set[str]:
    """Broker ids of worker processes with a heartbeat (not marked stopped)."""
    return {_text(member) for member in client.zrangebyscore(KEYS.heartbeats(), 1, "+inf")}


def unacked(client: redis.Redis, broker_id: str, queue: str = "default") -> set[str]:
    """Redis message ids a worker process has fetched and not yet acked."""
    return {_text(member) for member in client.smembers(KEYS.acks(broker_id, queue))}


def redis_id_of(client: redis.Redis, job_id: str, queue: str = "default") -> str | None:
    """The redis message id under which a job's current message is stored."""
    for redis_id, body in client.hscan_iter(KEYS.queue_messages(queue)):
        if json.loads(body)["message_id"] == job_id:
            return _text(redis_id)
    return None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
