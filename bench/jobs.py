"""Putting benchmark jobs on the queue from the driver, the way each stack does it."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker

from app.broker.enqueue import PRIORITY, Enqueuer
from app.connection import clients as connections
from app.jobs import JobRegistry
from app.keys import DEFAULT_PRIORITY, Keys
from app.outcomes.log import OutcomeLog
from app.settings import Settings
from bench.keys import BENCH_QUEUE, NOOP

CHUNK = 1_000
NORMAL = (DEFAULT_PRIORITY,)


class OurSender:
    """Enqueues like our broker does (message, outcome record, counter, wake-up: one transaction)."""

    def __init__(self, settings: Settings, client: redis.Redis) -> None:
        keys = Keys(namespace=settings.namespace)
        log = OutcomeLog.for_settings(keys, settings)
        # The bench job types live in the worker process; here only their names are needed.
        self.enqueuer = Enqueuer(registry=JobRegistry(), keys=keys, log=log, settings=settings)
        self.client = client

    def send(
        self, actor_name: str = NOOP, count: int = 1, priorities: Sequence[str] = (DEFAULT_PRIORITY,)
    ) -> list[str]:
        """Enqueue `count` jobs of `actor_name` in pipelined transactions, their priority levels
        taken from `priorities` in turn (as an enqueue naming one does); their ids."""
        ids: list[str] = []
        for start in range(0, count, CHUNK):
            messages = [
                _message(actor_name, priorities[(start + n) % len(priorities)])
                for n in range(min(CHUNK, count - start))
            ]
            _, commands = self.enqueuer.commands_many([(message, None) for message in messages])
            connections.execute(self.client, commands)
            ids += [message.message_id for message in messages]
        return ids


class PlainSender:
    """Enqueues like stock Dramatiq: `broker.enqueue` for one job; HSET + RPUSH for a bulk fill."""

    def __init__(self, settings: Settings, client: redis.Redis) -> None:
        self.broker = RedisBroker(client=client)
        self.keys = Keys(namespace=settings.namespace)
        self.client = client

    def send(self, actor_name: str = NOOP, count: int = 1) -> list[str]:
        if count == 1:
            message = self.broker.enqueue(_message(actor_name))
            return [message.message_id]
        ids: list[str] = []
        for start in range(0, count, CHUNK):
            with self.client.pipeline(transaction=False) as pipeline:
                for _ in range(min(CHUNK, count - start)):
                    redis_id = str(uuid.uuid4())
                    message = _message(actor_name).copy(options={"redis_message_id": redis_id})
                    pipeline.hset(self.keys.queue_messages(BENCH_QUEUE), redis_id, message.encode())
                    pipeline.rpush(self.keys.queue(BENCH_QUEUE), redis_id)
                    ids.append(message.message_id)
                pipeline.execute()
        return ids


def _message(actor_name: str, priority: str = DEFAULT_PRIORITY) -> dramatiq.Message[Any]:
    job_id = uuid.uuid4().hex
    # As Enqueuer.message writes it: no option for the normal level.
    options = {} if priority == DEFAULT_PRIORITY else {PRIORITY: priority}
    return dramatiq.Message(
        queue_name=BENCH_QUEUE, actor_name=actor_name, args=(job_id, {}), kwargs={}, options=options, message_id=job_id
    )
