"""What the middleware reads off a message our consumer handed out."""

from __future__ import annotations

from typing import Any

import dramatiq
from dramatiq.broker import MessageProxy

from app.connection.commands import Command
from app.keys import canonical_queue


class FetchedMessage(MessageProxy):
    """A message as our consumer hands it out: with the `deliveries` its job record showed at
    fetch time (how many times this attempt already started without finishing), or None when
    that could not be read; and the commands that go to Redis in one transaction with its ack or
    nack (`settle_with`: its outcome record)."""

    def __init__(self, message: dramatiq.Message[Any], prior_deliveries: int | None) -> None:
        super().__init__(message)
        self.prior_deliveries = prior_deliveries
        self.settle_with: list[Command] = []


def delivery_key(message: MessageProxy | dramatiq.Message[Any]) -> str:
    """What tells one delivery of a message from another (its redis id)."""
    return str(message.options.get("redis_message_id") or message.message_id)


def job_queue(message: MessageProxy | dramatiq.Message[Any]) -> str:
    """The queue a message's job belongs to (a delayed message sits on its delay queue)."""
    return canonical_queue(message.queue_name)
