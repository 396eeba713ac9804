"""On shutdown, stop taking jobs and give the ones that have not started back at once.

Dramatiq's worker, told to stop, lets its threads finish their current jobs (up to
--worker-shutdown-timeout) while its consumers go on fetching, and gives prefetched messages
back only at the very end: a long job would keep dozens of queued jobs away from every other
worker for minutes. Here the consumers stop fetching as soon as the shutdown begins, and the
messages waiting in memory (prefetched, or delayed and not yet due) go back to Redis at once.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from dramatiq.broker import Broker, MessageProxy
from dramatiq.common import iter_queue
from dramatiq.errors import BrokerConnectionError
from dramatiq.logging import get_logger
from dramatiq.middleware import Middleware


class Drain(Middleware):
    """Makes a stopping worker fetch nothing more and return its unstarted messages."""

    def __init__(self) -> None:
        self.logger = get_logger(__name__, type(self))

    def before_worker_boot(self, broker: Broker, worker: Any) -> None:
        draining = getattr(broker, "draining", None)
        if draining is not None:
            draining.clear()

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
