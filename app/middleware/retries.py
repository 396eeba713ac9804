"""Dramatiq's Retries, with a retry that is never silently dropped and that acks its delivery.

The decision (throws, max_retries, retry_when, on_retry_exhausted, backoff, `Retry(delay=)`)
is Dramatiq's own: this subclass changes only how the retry is enqueued. Stock Retries enqueues
it inside an after-hook whose errors Dramatiq swallows, and the original message is then acked:
a Redis outage at that moment loses the job (dramatiq PR #545). Here the retry is enqueued
until Redis answers or a deadline passes; past the deadline the message is failed, so it is
dead-lettered (the nack itself waits for Redis). And the retry is scheduled in the same
transaction that acks the failed delivery, so a worker killed in between cannot leave both.
"""

from __future__ import annotations

import time
from typing import Any

from dramatiq import Message
from dramatiq.broker import Broker, MessageProxy
from dramatiq.middleware import Retries

from app.errors import BrokerUnavailable
from app.outcomes.record import now_ms

#: Option set on a message whose retry could not be scheduled before the deadline.
RETRY_LOST = "retry_enqueue_failed"
NEXT_RETRY_AT = "next_retry_at"


class DurableRetries(Retries):
    """Dramatiq's Retries (every option of it), whose retry waits out a Redis outage."""

    def __init__(
        self,
        *,
        max_retries: int,
        min_backoff: int,
        max_backoff: int,
        enqueue_deadline_ms: int,
        **options: Any,
    ) -> None:
        super().__init__(max_retries=max_retries, min_backoff=min_backoff, max_backoff=max_backoff, **options)
        self.enqueue_deadline_ms = enqueue_deadline_ms

    def after_process_message(
        self,
        broker: Broker,
        message: MessageProxy,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        # Dramatiq's decision; its one call of `broker.enqueue`, the retry, comes to `_retry`.
        super().after_process_message(
            _RetryingBroker(broker, self, message), message, result=result, exception=exception
        )

    def retry(self, broker: Broker, message: MessageProxy, delay: int) -> None:
        """Enqueue the retry (acking this delivery with it, where the broker can), trying until
        Redis answers or the deadline passes; past it, fail the message."""
        deadline = time.monotonic() + self.enqueue_deadline_ms / 1000
        pause = 0.1
        enqueue_retry = getattr(broker, "enqueue_retry", None)
        while True:
            try:
                if enqueue_retry is not None:
                    enqueue_retry(message, delay=delay)
                else:  # not our broker (unit tests with a StubBroker)
                    broker.enqueue(message, delay=delay)  # type: ignore[arg-type]
                message.options[NEXT_RETRY_AT] = now_ms() + delay
                return
            except BrokerUnavailable as error:
                if time.monotonic() + pause > deadline:
                    self.logger.error(
                        "Could not schedule the retry of job %s before the deadline (%s); dead-lettering it.",
                        message.message_id,
                        error,
                    )
                    message.options[RETRY_LOST] = True
                    message.fail()
                    return
                self.logger.warning("Redis unavailable while scheduling a retry; trying again: %s", error)
                time.sleep(pause)
                pause = min(pause * 2, 2.0)


class _RetryingBroker:
    """The broker as Dramatiq's Retries sees it for one message: everything as it is, except
    that enqueuing that message (its retry) goes through `DurableRetries.retry`."""

    def __init__(self, broker: Broker, retries: DurableRetries, message: MessageProxy) -> None:
        self._broker = broker
        self._retries = retries
        self._message = message

    def enqueue(self, message: Message[Any] | MessageProxy, *, delay: int | None = None) -> None:
        if message is self._message and delay is not None:
            self._retries.retry(self._broker, self._message, delay)
        else:
            self._broker.enqueue(message, delay=delay)  # type: ignore[arg-type]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._broker, name)
