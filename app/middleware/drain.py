"""On shutdown, stop taking jobs and give the ones that have not started back at once.

Dramatiq's worker, told to stop, lets its threads finish their current jobs (up to
--worker-shutdown-timeout) while its consumers go on fetching, and gives prefetched messages
back only at the very end: a long job would keep dozens of queued jobs away from every other
worker for minutes. Here the consumers stop fetching as soon as the shutdown begins, and the
messages waiting in memory (prefetched, or delayed and not yet due) go back to Redis at once.

"As soon as" means at the signal: Dramatiq's worker process looks at its stop flag once a
second, so the processes of one `dramatiq --processes N`, signalled together, would each begin
their drain at their own moment, and one still fetching would take what a stopping sibling had
just given back, to give it back again in turn (every process logging the same jobs).
"""

from __future__ import annotations

import signal
import threading
from collections import defaultdict
from collections.abc import Callable
from types import FrameType
from typing import Any

from dramatiq.broker import Broker, MessageProxy
from dramatiq.common import iter_queue
from dramatiq.errors import BrokerConnectionError
from dramatiq.logging import get_logger
from dramatiq.middleware import Middleware

#: The signals on which Dramatiq's worker process stops (SIGINT it ignores: its main process forwards it as SIGTERM).
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))

SignalHandler = Callable[[int, FrameType | None], Any]


class Drain(Middleware):
    """Makes a stopping worker fetch nothing more and return its unstarted messages."""

    def __init__(self) -> None:
        self.logger = get_logger(__name__, type(self))
        self._replaced: dict[int, SignalHandler] = {}

    def before_worker_boot(self, broker: Broker, worker: Any) -> None:
        draining, stop_fetching = getattr(broker, "draining", None), getattr(broker, "stop_fetching", None)
        if draining is None or stop_fetching is None:
            return  # not our broker (unit tests with a StubBroker)
        draining.clear()
        self._stop_fetching_on_signal(stop_fetching)

    def _stop_fetching_on_signal(self, stop_fetching: Callable[[], None]) -> None:
        """Put a handler before Dramatiq's on each stop signal that stops fetching at once."""
        if threading.current_thread() is not threading.main_thread():
            return  # only the main thread may set handlers (a worker a test starts in a thread)
        for signum in STOP_SIGNALS:
            previous = signal.getsignal(signum)
            if signum in self._replaced or not callable(previous):
                continue  # ours already, or the default action or ignored: nothing drains on it
            signal.signal(signum, _stopping_first(stop_fetching, previous))
            self._replaced[signum] = previous

    def after_worker_shutdown(self, broker: Broker, worker: Any) -> None:
        if threading.current_thread() is threading.main_thread():
            for signum, previous in self._replaced.items():
                signal.signal(signum, previous)
        self._replaced.clear()

    def before_worker_shutdown(self, broker: Broker, worker: Any) -> None:
        stop_fetching = getattr(broker, "stop_fetching", None)
        if stop_fetching is None:
            return  # not our broker (unit tests with a StubBroker)
        stop_fetching()
        unstarted: dict[str, list[MessageProxy]] = defaultdict(list)
        # Worker threads are all busy when messages wait here; an idle one would have taken them.
        for item in iter_queue(worker.work_queue):
            unstarted[item.message.queue_name].append(item.message)
            worker.work_queue.task_done()
        for queue_name, thread in worker.consumers.items():
            for item in iter_queue(thread.delay_queue):
                unstarted[queue_name].append(item.message)
                thread.delay_queue.task_done()
        for queue_name, messages in unstarted.items():
            thread = worker.consumers.get(queue_name)
            try:
                if thread is None or thread.consumer is None:
                    raise BrokerConnectionError(f"no consumer for queue {queue_name!r}")
                thread.requeue_messages(messages)
            except BrokerConnectionError as error:
                # They stay in this worker's ack set: swept back once it has stopped.
                self.logger.warning(
                    "Could not give back %d message(s) of queue %r now: %s", len(messages), queue_name, error
                )


def _stopping_first(stop_fetching: Callable[[], None], previous: SignalHandler) -> SignalHandler:
    stopped = False

    def handler(signum: int, frame: FrameType | None) -> Any:
        nonlocal stopped
        # Only on the first signal: it finds the main thread asleep in Dramatiq's wait loop,
        # holding no lock; a later one can come while the shutdown itself holds the flag's lock.
        if not stopped:
            stopped = True
            stop_fetching()
        return previous(signum, frame)

    return handler
