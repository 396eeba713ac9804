"""What the middleware reads off a message our consumer handed out."""

from __future__ import annotations

from typing import Any

import dramatiq
from dramatiq.broker import MessageProxy

from app.connection.commands import Command
from app.keys import canonical_queue

#: A worker's answers to a cancel request (app/middleware/start_gate.py, app/api/cancel.py): the
#: job had started, or it never will in that process.
CANCEL_STARTED = "started"
CANCEL_STOPPED = "stopped"
#: FetchedMessage.unstarted of a job whose queue was paused after it was fetched.
PAUSED = "paused"


class FetchedMessage(MessageProxy):
    """A message as our consumer hands it out: with the `deliveries` its job record showed at
    fetch time (how many times this attempt already started without finishing), or None when
    that could not be read; and the commands that go to Redis in one transaction with its ack or
    nack (`settle_with`: its outcome record)."""

    def __init__(self, message: dramatiq.Message[Any], prior_deliveries: int | None) -> None:
        super().__init__(message)
        self.prior_deliveries = prior_deliveries
        self.settle_with: list[Command] = []
        #: Why it did not start, if a middleware kept it from starting ("paused": it goes back
        #: to its queue instead of being acked; "canceled").
        self.unstarted: str | None = None
        #: Settled with an ack though it failed (a job that stopped on its cancel: no dead letter).
        self.settle_as_ack = False


def delivery_key(message: MessageProxy | dramatiq.Message[Any]) -> str:
    """What tells one delivery of a message from another (its redis id)."""
    return str(message.options.get("redis_message_id") or message.message_id)


def job_queue(message: MessageProxy | dramatiq.Message[Any]) -> str:
    """The queue a message's job belongs to (a delayed message sits on its delay queue)."""
    return canonical_queue(message.queue_name)
