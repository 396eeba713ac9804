"""Sending a periodic actor's message as the periodiq scheduler does, with a chosen lateness."""

from __future__ import annotations

import dramatiq
import pendulum
import redis

from app.broker.enqueue import Enqueuer
from app.connection import clients as connections
from app.jobs import JobRegistry
from app.keys import Keys
from app.outcomes.log import OutcomeLog
from app.settings import Settings


def send_periodic(
    client: redis.Redis, actor_name: str, *, late_by_s: float, queue: str = "default", max_retries: int = 2
) -> str:
    """Enqueue the message periodiq sends for a tick `late_by_s` seconds ago; returns its jobId.

    periodiq calls `actor.send_with_options(scheduled_at=str(pendulum.now()))`: no args, and the
    tick time in the `scheduled_at` option that workers compare with their own clock."""
    keys = Keys()
    enqueuer = Enqueuer(
        registry=JobRegistry(),
        keys=keys,
        log=OutcomeLog(keys=keys, retention_seconds=7 * 86_400),
        settings=Settings(max_retries=max_retries),
    )
    scheduled_at = pendulum.now().subtract(seconds=late_by_s)
    message = dramatiq.Message(
        queue_name=queue, actor_name=actor_name, args=(), kwargs={}, options={"scheduled_at": str(scheduled_at)}
    )
    _, commands = enqueuer.commands(message, None)
    connections.execute(client, commands)
    return message.message_id
