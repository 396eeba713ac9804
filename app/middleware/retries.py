"""Dramatiq's Retries, with a retry that is never silently dropped.

Stock Retries enqueues the retry inside an after-hook whose errors Dramatiq swallows; the
original message is then acked, so a Redis outage at that moment loses the job (dramatiq
PR #545). Here the retry is enqueued until Redis answers or a deadline passes; past the
deadline the message is failed, so it is dead-lettered (the nack itself waits for Redis).
"""

from __future__ import annotations

import time
import traceback
from typing import Any, cast

from dramatiq import Message
from dramatiq.broker import Broker, MessageProxy
from dramatiq.common import compute_backoff
from dramatiq.errors import Retry
from dramatiq.middleware import Retries
from dramatiq.middleware.retries import DEFAULT_MAX_BACKOFF

from app.errors import BrokerUnavailable
from app.outcomes import now_ms

#: Option set on a message whose retry could not be scheduled before the deadline.
RETRY_LOST = "retry_enqueue_failed"
NEXT_RETRY_AT = "next_retry_at"


class DurableRetries(Retries):
    """`max_retries` retries with exponential backoff and jitter; permanent errors fail at once."""

    def __init__(
        self,
        *,
        max_retries: int,
        min_backoff: int,
        max_backoff: int,
        enqueue_deadline_ms: int,
    ) -> None:
        super().__init__(max_retries=max_retries, min_backoff=min_backoff, max_backoff=max_backoff)
        self.enqueue_deadline_ms = enqueue_deadline_ms

    def after_process_message(
        self,
        broker: Broker,
        message: MessageProxy,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        if exception is None:
            return
        actor = broker.get_actor(message.actor_name)
        throws = message.options.get("throws") or actor.options.get("throws")
        if throws and isinstance(exception, throws):
            self.logger.info("Job %s failed with a permanent error; not retried.", message.message_id)
            message.fail()
            return

        retries = message.options.setdefault("retries", 0)
        max_retries = message.options.get("max_retries", actor.options.get("max_retries", self.max_retries))
        message.options["retries"] = retries + 1
        message.options["traceback"] = traceback.format_exc(limit=30)
        message.options["requeue_timestamp"] = now_ms()
        if max_retries is not None and retries >= max_retries:
            self.logger.warning("Retries exceeded for job %s.", message.message_id)
            message.fail()
            return

        if isinstance(exception, Retry) and exception.delay is not None:
            delay = exception.delay
        else:
            min_backoff = message.options.get("min_backoff", actor.options.get("min_backoff", self.min_backoff))
            max_backoff = message.options.get("max_backoff", actor.options.get("max_backoff", self.max_backoff))
            _, delay = compute_backoff(retries, factor=min_backoff, max_backoff=min(max_backoff, DEFAULT_MAX_BACKOFF))

        if self._enqueue_until_deadline(broker, message, delay):
            message.options[NEXT_RETRY_AT] = now_ms() + delay
        else:
            message.options[RETRY_LOST] = True
            message.fail()

    def _enqueue_until_deadline(self, broker: Broker, message: MessageProxy, delay: int) -> bool:
        deadline = time.monotonic() + self.enqueue_deadline_ms / 1000
        pause = 0.1
        while True:
            try:
                # The proxy stands in for its message, as in Dramatiq's own Retries.
                broker.enqueue(cast(Message[Any], message), delay=delay)
                self.logger.info("Retrying job %s in %d ms.", message.message_id, delay)
                return True
            except BrokerUnavailable as error:
                if time.monotonic() + pause > deadline:
                    self.logger.error(
                        "Could not schedule the retry of job %s before the deadline (%s); dead-lettering it.",
                        message.message_id,
                        error,
                    )
                    return False
                self.logger.warning("Redis unavailable while scheduling a retry; trying again: %s", error)
                time.sleep(pause)
                pause = min(pause * 2, 2.0)
