"""Job type declarations (app/jobs.py): the named options, their checks, and what reaches
Dramatiq's actor (a stub broker runs one job past its own time limit)."""

from __future__ import annotations

import time
from typing import Any

import dramatiq
import pydantic
import pytest
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import Retries, TimeLimit

from app.jobs import JobContext, JobRegistry, RateLimit, job_type
from app.worker import _actor


class NoData(pydantic.BaseModel):
    pass


def test_named_options_become_dramatiq_actor_options_and_limits_are_kept() -> None:
    registry = JobRegistry()
    runs: list[str] = []

    @job_type(
        "reportJob", schema=NoData, queue="reports", priority="low", concurrency=3, max_retries=2,
        time_limit_ms=50, min_backoff_ms=10, max_backoff_ms=20, rate_limit=RateLimit(5, per_seconds=2),
        into=registry,
    )  # fmt: skip
    def report(job_id: str, data: dict[str, Any], context: JobContext) -> None:
        runs.append(job_id)
        time.sleep(0.5)

    declared = registry.get("reportJob")
    assert declared.options == {"max_retries": 2, "time_limit": 50, "min_backoff": 10, "max_backoff": 20}
    assert (declared.queue, declared.priority, declared.concurrency) == ("reports", "low", 3)
    assert declared.rate_limit is not None and declared.rate_limit.window_ms == 2000
    assert registry.limited() == [declared] and registry.queues() == ["reports"]

    broker = StubBroker(middleware=[TimeLimit(), Retries()])
    broker.emit_after("process_boot")
    actor = _actor(declared, broker, context=None)  # type: ignore[arg-type]
    assert actor.queue_name == "reports" and actor.options["time_limit"] == 50
    worker = dramatiq.Worker(broker, worker_timeout=50)
    worker.start()
    try:
        actor.send("job-1", {})
        broker.join("reports", fail_fast=False)
        worker.join()
    finally:
        worker.stop()
    # Stopped each time by the type's own 50 ms time limit (the setting's default is minutes),
    # retried its own 2 times with its own short backoff, then dead-lettered.
    assert len(runs) == 3 and len(broker.dead_letters) == 1


@pytest.mark.parametrize(
    ("options", "says"),
    [
        ({"priority": "urgent"}, "priority must be one of high, normal, low"),
        ({"concurrency": 0}, "concurrency must be 1 or more"),
        ({"queue": "reports.DQ"}, "may not be empty or end with"),
        ({"queue": "emails.high"}, "may not be empty or end with"),
    ],
)
def test_bad_options_are_refused_at_declaration(options: dict[str, Any], says: str) -> None:
    with pytest.raises(ValueError, match=says):
        job_type("badJob", schema=NoData, into=JobRegistry(), **options)(lambda job_id, data, context: None)


def test_a_rate_limit_needs_a_positive_limit_and_period() -> None:
    with pytest.raises(ValueError, match="limit >= 1 and per_seconds > 0"):
        RateLimit(0)
    assert RateLimit(3, per_seconds=0.5, key=lambda data: data["host"]).window_ms == 500
