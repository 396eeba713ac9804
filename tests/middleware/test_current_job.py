"""The running job's handle (app/middleware/current_job.py): CurrentJob and the outcome recorder
on Dramatiq's StubBroker, writing through WorkerWrites to a private real redis-server."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from typing import Any

import dramatiq
import pytest
import redis
from dramatiq.brokers.stub import StubBroker

from app.connection.commands import Command
from app.connection.worker_writes import ShardedWrites, WorkerWrites
from app.keys import Keys
from app.middleware.current_job import (
    MAX_PROGRESS_MESSAGE_CHARS,
    CurrentJob,
    RunningJob,
    checked_progress,
    current_jobs,
)
from app.middleware.outcomes import OutcomeRecorder
from app.middleware.retries import DurableRetries
from app.outcomes import packed
from app.outcomes.log import PROGRESS_SCRIPT, OutcomeLog
from tests.support.redis_state import read_record, record_fields
from tests.support.services import wait_until

KEYS = Keys()
LOG = OutcomeLog(keys=KEYS, retention_seconds=3600)


class CountingWrites(WorkerWrites):
    """WorkerWrites that counts the progress writes submitted, and the most on their way at once."""

    def __init__(self, client: redis.Redis) -> None:
        super().__init__(client)
        self.progress_writes = 0
        self.most_under_way = 0
        self._under_way = 0
        self._count_lock = threading.Lock()

    def defer(self, commands: Sequence[Command], **kwargs: Any) -> None:
        if not any(command[:2] == ("EVAL", PROGRESS_SCRIPT) for command in commands):
            super().defer(commands, **kwargs)
            return
        with self._count_lock:
            self.progress_writes += 1
            self._under_way += 1
            self.most_under_way = max(self.most_under_way, self._under_way)
        on_done = kwargs.pop("on_done")

        def landed(reply: Any) -> None:
            with self._count_lock:
                self._under_way -= 1
            on_done(reply)

        super().defer(commands, on_done=landed, **kwargs)


class Harness:
    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.writes = CountingWrites(client)
        self.jobs = CurrentJob(log=LOG, writes=ShardedWrites.single(self.writes))
        self.broker = StubBroker(
            middleware=[
                self.jobs,
                OutcomeRecorder(log=LOG, writes=ShardedWrites.single(self.writes), max_crash_deliveries=3),
                DurableRetries(max_retries=3, min_backoff=10, max_backoff=20, enqueue_deadline_ms=1000),
            ]
        )
        self.broker.emit_after("process_boot")
        self.worker = dramatiq.Worker(self.broker, worker_timeout=50, worker_threads=2)

    def actor(self, name: str, fn: Any) -> Any:
        return dramatiq.actor(fn, actor_name=name, broker=self.broker)

    def send(self, actor: Any, job_id: str) -> None:
        self.broker.enqueue(actor.message().copy(message_id=job_id))

    def join(self, actor: Any) -> None:
        self.broker.join(actor.queue_name, fail_fast=False, timeout=10_000)
        self.worker.join()
        assert self.writes.flush(10), "the deferred writes to land"

    def record(self, job_id: str) -> dict[str, Any]:
        """The job's record, hash or packed (once it succeeded: app/outcomes/packed.py)."""
        return read_record(self.client, KEYS, job_id)


@pytest.fixture
def harness(redis_client: redis.Redis) -> Iterator[Harness]:
    harness = Harness(redis_client)
    harness.worker.start()
    yield harness
    harness.worker.stop()


def test_the_handle_is_the_job_its_thread_runs_and_only_while_it_runs(harness: Harness) -> None:
    seen: list[tuple[Any, ...]] = []

    def run() -> None:
        job = harness.jobs.current()
        seen.append((job.id, job.name, job.attempt, job.thread_id == threading.get_ident(), job.cancelled()))
        assert harness.jobs.running(job.id) is job
        if job.attempt == 1:
            raise RuntimeError("fail once")

    actor = harness.actor("handleJob", run)
    harness.send(actor, "job-1")
    harness.join(actor)
    assert seen == [("job-1", "handleJob", 1, True, False), ("job-1", "handleJob", 2, True, False)]
    assert harness.jobs.running("job-1") is None
    with pytest.raises(RuntimeError, match="only there while a job runs"):
        harness.jobs.current()  # this thread runs no job
    assert current_jobs(harness.broker) is harness.jobs


def test_a_cancel_request_reaches_the_job_running_in_this_process(harness: Harness) -> None:
    started = threading.Event()
    threads: list[int] = []

    def run() -> str:
        job = harness.jobs.current()
        threads.append(job.thread_id)
        started.set()
        wait_until(job.cancelled, timeout=10, message="the cancel request")
        return "stopped early"

    actor = harness.actor("longJob", run)
    harness.send(actor, "job-long")
    assert started.wait(10)
    assert harness.jobs.request_cancel("job-other") is False  # not running here
    assert harness.jobs.request_cancel("job-long") is True
    harness.join(actor)
    assert threads != [threading.get_ident()]
    assert harness.jobs.request_cancel("job-long") is False  # finished
    record = harness.record("job-long")
    assert record["state"] == "succeeded" and record["result"] == "stopped early"


def test_progress_in_a_tight_loop_is_coalesced_to_the_latest_value(harness: Harness) -> None:
    calls = 20_000

    def run() -> None:
        job = harness.jobs.current()
        for step in range(calls):
            job.progress(step * 100 / calls, f"step {step}")
        job.progress(100, "done")

    actor = harness.actor("busyJob", run)
    harness.send(actor, "job-busy")
    harness.join(actor)
    record = harness.record("job-busy")
    assert record["state"] == "succeeded"
    assert record["progress"] == 100.0 and record["progressMessage"] == "done"
    assert isinstance(record["progressAt"], int) and record["result"] is None
    # One write on its way at a time (two only when the job ends with one under way: the latest
    # then goes at once, ahead of the final write), and far fewer writes than calls.
    assert 1 <= harness.writes.progress_writes <= calls // 20, harness.writes.progress_writes
    assert harness.writes.most_under_way <= 2


def test_a_job_that_reports_nothing_and_returns_nothing_writes_neither(harness: Harness) -> None:
    actor = harness.actor("quietJob", lambda: None)
    harness.send(actor, "job-quiet")
    harness.join(actor)
    fields = record_fields(harness.client, KEYS, "job-quiet")
    assert fields["state"] == "succeeded" and not {"progress", "progressMessage", "progressAt", "result"} & set(fields)
    assert harness.writes.progress_writes == 0


def test_the_result_is_written_with_succeeded(harness: Harness) -> None:
    actor = harness.actor("resultJob", lambda: {"rows": 3, "name": "réport"})
    harness.send(actor, "job-result")
    harness.join(actor)
    record = harness.record("job-result")
    assert record["state"] == "succeeded" and record["result"] == {"rows": 3, "name": "réport"}
    # Packed as the JSON it was written as (compact, not escaped), the hash gone.
    stored = harness.client.hget(packed.bucket_key(KEYS, "job-result"), "job-result")
    assert stored is not None and '{"rows":3,"name":"réport"}'.encode() in stored
    assert not harness.client.exists(KEYS.job("job-result"))


def test_a_result_that_is_not_json_is_left_out_by_the_recorder(harness: Harness) -> None:
    """The worker's own actors fail such a job (app/worker.py); any other actor's still succeeds."""
    actor = harness.actor("setJob", lambda: {1, 2})
    harness.send(actor, "job-set")
    harness.join(actor)
    record = harness.record("job-set")
    assert record["state"] == "succeeded" and record["result"] is None


def test_a_retry_starts_without_the_progress_of_the_attempt_before(harness: Harness) -> None:
    progress_at_start: list[Any] = []

    def run() -> None:
        job = harness.jobs.current()
        assert harness.writes.flush(10)
        progress_at_start.append(harness.record(job.id)["progress"])
        if job.attempt == 1:
            job.progress(40, "first try")
            raise RuntimeError("fail once")

    actor = harness.actor("retriedJob", run)
    harness.send(actor, "job-retried")
    harness.join(actor)
    assert progress_at_start == [None, None]
    record = harness.record("job-retried")
    assert record["state"] == "succeeded" and record["attempts"] == 2 and record["progress"] is None


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (float("nan"), ""),
        (float("inf"), ""),
        (-0.5, ""),
        (100.5, ""),
        (True, ""),
        ("50", ""),
        (None, ""),
        (50, "x" * (MAX_PROGRESS_MESSAGE_CHARS + 1)),
        (50, 7),
    ],
)
def test_progress_must_be_a_percentage_with_a_short_message(value: Any, message: Any) -> None:
    with pytest.raises(ValueError, match="progress") as raised:
        checked_progress(value, message)
    assert len(str(raised.value)) < 300  # a long message is cut when quoted


@pytest.mark.parametrize(("value", "expected"), [(0, 0.0), (1, 1.0), (33.3, 33.3), (100, 100.0)])
def test_progress_takes_any_finite_number_from_0_to_100(value: float, expected: float) -> None:
    assert checked_progress(value, "ok") == (expected, "ok")


def test_an_invalid_progress_raises_in_the_job_and_writes_nothing(redis_client: redis.Redis) -> None:
    writes = CountingWrites(redis_client)
    job = RunningJob(job_id="j", name="n", attempt=1, log=LOG, writes=writes, on_write_error=lambda _: None)
    with pytest.raises(ValueError, match="from 0 to 100"):
        job.progress(101)
    assert writes.progress_writes == 0
