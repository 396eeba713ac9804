"""The last word before a job starts in this worker process: not if its queue is paused, not if
it was canceled after a worker fetched it.

A fetch already hands out nothing of a paused queue and no job canceled before it (in Redis,
atomically: app/connection/lua/fetch.lua). What a fetch handed out is decided here, from what a
background thread reads every POLL_S: the paused queues, and the cancel requests the API sent
every live worker process (any of them may hold the job). The thread answers
each request under the same lock the start takes: either the job had started ("started": it is
asked to stop, `context.job.cancelled()`, and with force interrupted) or it never will
("stopped"). The API answers 200 only after "stopped", so a job canceled with 200 never runs.
A job of a paused queue goes back, unstarted, to the head of its level.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import redis
from dramatiq.broker import Broker, MessageProxy
from dramatiq.logging import get_logger
from dramatiq.middleware import Middleware, SkipMessage
from dramatiq.middleware.threading import raise_thread_exception

from app.broker.enqueue import ENQUEUED_AT
from app.broker.messages import CANCEL_STARTED as STARTED
from app.broker.messages import CANCEL_STOPPED as STOPPED
from app.broker.messages import PAUSED, FetchedMessage, job_queue
from app.connection.shards import Shard, Shards
from app.errors import JobCanceled
from app.keys import UnknownJobId
from app.middleware.current_job import CurrentJob

#: How often the paused queues and this process's cancel requests are read.
POLL_S = 0.1
#: Cancels remembered for jobs this process may still hold, and starts for the cancel requests
#: that arrive after a job ran (bounded: the oldest are forgotten).
REMEMBERED = 100_000
#: How long the API's wait for an answer is kept in Redis.
ANSWER_TTL_S = 30
#: Cancel requests read per poll.
REQUESTS_PER_POLL = 500
#: Why a handed-out job did not start (FetchedMessage.unstarted; PAUSED is the other).
CANCELED = "canceled"


class NotStarted(SkipMessage):
    """Raised before a job starts when its queue is paused or it was canceled."""


class StartGate(Middleware):
    """Keeps paused and canceled jobs from starting in this process."""

    def __init__(self, *, shards: Shards, current_job: CurrentJob) -> None:
        self.logger = get_logger(__name__, type(self))
        #: Where a job's record is (its keyspace's Redis).
        self.shards = shards
        self.current_job = current_job
        self.paused: frozenset[str] = frozenset()
        self._canceled: OrderedDict[str, None] = OrderedDict()
        self._started: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def after_worker_boot(self, broker: Broker, worker: Any) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, args=(broker,), name="start-gate", daemon=True)
        self._thread.start()

    def after_worker_shutdown(self, broker: Broker, worker: Any) -> None:
        self._stop.set()

    def before_process_message(self, broker: Broker, message: MessageProxy) -> None:
        with self._lock:
            if message.message_id in self._canceled and not self._requeued_since(message):
                reason = CANCELED
            elif job_queue(message) in self.paused:
                reason = PAUSED
            else:
                _remember(self._started, message.message_id)
                return
        if isinstance(message, FetchedMessage):
            message.unstarted = reason
        raise NotStarted(f"job {message.message_id} not started: {reason}")

    def _requeued_since(self, message: MessageProxy) -> bool:
        """Whether a job this process said it would not start was put back on its queue on purpose
        since (POST /jobs/{id}/retry): then this is that new message, which may start. Asked of
        Redis, only for jobs with a cancel: the record holds the enqueue time of its latest message."""
        try:
            shard = self.shards.for_job(message.message_id)
            state, enqueued_at = shard.client.hmget(shard.keys.job(message.message_id), "state", "enqueuedAt")
        except (redis.RedisError, UnknownJobId):
            return False  # not known: it stays canceled
        return state not in (None, CANCELED.encode()) and enqueued_at == str(message.options.get(ENQUEUED_AT)).encode()

    def _run(self, broker: Broker) -> None:
        broker_id = str(broker.broker_id)  # type: ignore[attr-defined]
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                # Every keyspace this process works in (on a Redis Cluster, each queue's: the API
                # pauses a queue, and asks for a job's cancel, in the queue's own keyspace).
                self.poll(broker.keyspaces(), broker_id)  # type: ignore[attr-defined]
            except redis.RedisError as error:
                self.logger.warning("Could not read paused queues and cancel requests: %s", error)
            self._stop.wait(max(0.0, POLL_S - (time.monotonic() - started)))

    def poll(self, keyspaces: Sequence[Shard[redis.Redis]], broker_id: str) -> None:
        """Read the paused queues and answer this process's cancel requests, in every keyspace."""
        paused: set[str] = set()
        for shard in keyspaces:
            paused.update(self._poll_one(shard, broker_id))
        self.paused = frozenset(paused)

    def _poll_one(self, shard: Shard[redis.Redis], broker_id: str) -> list[str]:
        """One keyspace's paused queues; its cancel requests answered there (the API waits there)."""
        keys, client = shard.keys, shard.client
        with client.pipeline(transaction=False) as pipeline:
            pipeline.hkeys(keys.paused())
            pipeline.lpop(keys.cancel_requests(broker_id), REQUESTS_PER_POLL)
            paused, requests = pipeline.execute()
        if requests:
            answers: list[tuple[str, str]] = []
            for request in requests:
                job_id, _, force = _text(request).partition("|")
                answers.append((job_id, self.decide(job_id, force=force == "1")))
            with client.pipeline(transaction=False) as pipeline:
                for job_id, answer in answers:
                    pipeline.rpush(keys.cancel_answer(job_id), answer)
                    pipeline.expire(keys.cancel_answer(job_id), ANSWER_TTL_S)
                pipeline.execute()
        return [_text(queue) for queue in paused]

    def decide(self, job_id: str, *, force: bool) -> str:
        """A cancel request: STARTED if the job started here (if it still runs, it is asked to
        stop, and with `force` interrupted), else STOPPED: it will not start in this process."""
        with self._lock:
            if job_id not in self._started:
                _remember(self._canceled, job_id)
                return STOPPED
        running = self.current_job.running(job_id)
        if running is not None:
            running.request_cancel()
            if force:
                self.logger.warning("Interrupting job %s: its cancel was forced.", job_id)
                raise_thread_exception(running.thread_id, JobCanceled)
        return STARTED


def _remember(ids: OrderedDict[str, None], job_id: str) -> None:
    ids[job_id] = None
    while len(ids) > REMEMBERED:
        ids.popitem(last=False)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
