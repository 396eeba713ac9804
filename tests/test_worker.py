"""The worker's assembly (app/worker.py): where the running job's handle sits in the middleware,
and Dramatiq kept from calling a result it does not see discarded."""

from __future__ import annotations

import logging

import dramatiq
import fakeredis
import pytest
from dramatiq.brokers.stub import StubBroker

from app.connection.shards import Shards
from app.connection.worker_writes import ShardedWrites
from app.keys import Keys
from app.middleware.current_job import CurrentJob
from app.middleware.outcomes import OutcomeRecorder
from app.middleware.retries import DurableRetries
from app.outcomes.log import OutcomeLog
from app.settings import Settings
from app.worker import build_middleware, keep_results_quietly


def test_the_running_jobs_handle_is_set_before_and_cleared_after_the_other_middleware() -> None:
    """Before-hooks run in order and after-hooks in reverse: placed before the recorder and the
    retries middleware, CurrentJob's handle outlives their hooks."""
    client = fakeredis.FakeRedis()
    keys = Keys()
    shards = Shards.single(client, keys)
    stack = build_middleware(Settings(), shards, OutcomeLog(keys=keys, retention_seconds=60), ShardedWrites(shards))
    kinds = [type(m) for m in stack]
    assert kinds.count(CurrentJob) == 1
    assert kinds.index(CurrentJob) < kinds.index(OutcomeRecorder) < kinds.index(DurableRetries)


def test_dramatiq_does_not_warn_that_a_kept_result_is_discarded(caplog: pytest.LogCaptureFixture) -> None:
    keep_results_quietly()
    broker = StubBroker()
    broker.emit_after("process_boot")
    actor = dramatiq.actor(lambda: {"kept": True}, actor_name="resultJob", broker=broker)
    worker = dramatiq.Worker(broker, worker_timeout=50, worker_threads=1)
    worker.start()
    try:
        with caplog.at_level(logging.WARNING, logger="dramatiq"):
            actor.send()
            broker.join(actor.queue_name, timeout=10_000)
            worker.join()
    finally:
        worker.stop()
    assert [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING] == []
