"""taskqueue.Client's flow-control calls against the real API, worker and a private Redis:
enqueue options (priority, max_retries, queue), cancel (a delayed job that never runs, a running
one asked to stop or interrupted, refusals), the queues' figures, pause and resume, and schedules."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from taskqueue import CancelResult, Client, Conflict, Forbidden, InvalidJob, NewJob, NotFound, QueueState
from tests.client.conftest import FLOW_QUEUE, Served
from tests.support import flow_log
from tests.support.services import wait_until

pytestmark = pytest.mark.slow


def _started(served: Served, job_id: str) -> bool:
    return job_id in {started for _, started, _ in flow_log.starts(served.redis.client())}


def test_enqueue_sends_priority_max_retries_and_queue(client: Client) -> None:
    high = client.enqueue("orderJob", {}, priority="high", max_retries=2, delay=300)
    job = client.get(high)
    assert (job.priority, job.max_retries, job.queue, job.state) == ("high", 2, FLOW_QUEUE, "queued")
    assert client.get(client.enqueue("orderJob", {}, delay=300)).priority == "normal"
    moved = client.enqueue("emailJob", {"email": "flow@example.com"}, queue=FLOW_QUEUE)
    finished = client.wait(moved, timeout=20)
    assert finished.succeeded and finished.queue == FLOW_QUEUE

    ids = client.enqueue_many(
        [NewJob("orderJob", {}, delay=300, priority="low", max_retries=0), ("orderJob", {}), NewJob("orderJob", {})]
    )
    records = [client.get(job_id) for job_id in ids]
    assert [(r.priority, r.max_retries) for r in records[:1]] == [("low", 0)]
    assert all(r.priority == "normal" for r in records[1:])

    for options, field in (({"priority": "urgent"}, "priority"), ({"max_retries": 101}, "maxRetries"),
                           ({"queue": "nosuchqueue"}, "queue")):  # fmt: skip
        with pytest.raises(InvalidJob) as refused:
            client.enqueue("orderJob", {}, **options)  # type: ignore[arg-type]
        assert field in refused.value.fields, refused.value.details
    with pytest.raises(InvalidJob) as batch:
        client.enqueue_many([("orderJob", {}), NewJob("orderJob", {}, priority="urgent")])
    assert [problem["index"] for problem in batch.value.jobs] == [1]
    for job_id in (high, ids[0]):
        client.cancel(job_id)


def test_cancel_of_a_delayed_job_answers_canceled_and_it_never_runs(served: Served, client: Client) -> None:
    job_id = client.enqueue("orderJob", {}, delay=1.0)
    outcome = client.cancel(job_id)
    assert isinstance(outcome, CancelResult)
    assert outcome.canceled and not outcome.requested and outcome.status == 200
    assert "will not run" in outcome.message
    assert outcome.job.job_id == job_id and outcome.job.state == "canceled" and outcome.job.canceled
    assert outcome.job.canceled_at is not None and "message" not in outcome.job.raw
    time.sleep(2.0)  # well past the time it was due
    job = client.wait(job_id, timeout=5)  # canceled is final: the wait returns at once
    assert job.state == "canceled" and job.started_at is None
    assert not _started(served, job_id)
    again = client.cancel(job_id)  # a second cancel answers the same: safe to resend
    assert again.canceled and again.job.canceled_at == outcome.job.canceled_at
    with pytest.raises(NotFound):
        client.cancel("no-such-job")
    done = client.enqueue("orderJob", {})
    assert client.wait(done, timeout=20).succeeded
    with pytest.raises(Conflict, match="succeeded"):
        client.cancel(done)
    with Client(served.url, served.readonly_key) as readonly, pytest.raises(Forbidden):
        readonly.cancel(client.enqueue("orderJob", {}, delay=300))


def test_cancel_of_a_running_job_is_requested_and_force_interrupts(served: Served, client: Client) -> None:
    polite = served.running_job(client, "slowJob")
    outcome = client.cancel(polite)
    assert not outcome.canceled and outcome.requested and outcome.status == 202
    assert "requested" in outcome.message and outcome.job.state == "running"
    ended = client.wait(polite, timeout=20)
    assert ended.canceled and ended.cancel_requested_at is not None

    stubborn = served.running_job(client, "stubbornJob")
    assert client.cancel(stubborn).requested
    assert client.get(stubborn).state == "running"  # it ignores a polite cancel
    forced = client.cancel(stubborn, force=True)
    assert forced.requested and "interrupted" in forced.message
    assert client.wait(stubborn, timeout=20).canceled


def test_queues_and_one_queue_have_every_count(client: Client) -> None:
    delayed = client.enqueue("orderJob", {}, delay=300)
    listed = client.queues()
    assert [q.name for q in listed] == ["default", FLOW_QUEUE]
    flow = client.queue(FLOW_QUEUE)
    assert isinstance(flow, QueueState) and flow.name == FLOW_QUEUE and flow.delayed >= 1
    assert set(flow.ready_by_priority) == {"high", "normal", "low"}
    assert flow.ready == sum(flow.ready_by_priority.values()) and not flow.paused and flow.paused_at is None
    assert set(flow.raw) >= {"waiting", "running", "failed", "oldestAgeSeconds", "pausedAt"}
    with pytest.raises(NotFound, match="no queue"):
        client.queue("nosuchqueue")
    client.cancel(delayed)


def test_pause_holds_a_queues_jobs_until_resume(served: Served, client: Client) -> None:
    paused = client.pause(FLOW_QUEUE)
    try:
        assert paused.paused and paused.paused_at is not None
        assert paused.paused_at <= datetime.now(UTC)
        assert client.pause(FLOW_QUEUE).paused_at == paused.paused_at  # a second pause keeps the first time
        held = client.enqueue_many([("orderJob", {}), NewJob("orderJob", {}, priority="high")])
        state = wait_until(lambda: (q := client.queue(FLOW_QUEUE)).ready == 2 and q, message="2 ready jobs")
        assert state.paused and state.ready_by_priority["high"] == 1
        time.sleep(1.0)
        assert [client.get(job_id).state for job_id in held] == ["queued", "queued"]
        assert not any(_started(served, job_id) for job_id in held)
        assert next(q for q in client.queues() if q.name == FLOW_QUEUE).paused
        assert not client.queue("default").paused  # the other queue runs on
        assert client.wait(client.enqueue("emailJob", {"email": "p@example.com"}), timeout=20).succeeded
        with Client(served.url, served.readonly_key) as readonly, pytest.raises(Forbidden):
            readonly.resume(FLOW_QUEUE)
    finally:
        resumed = client.resume(FLOW_QUEUE)
    assert not resumed.paused and resumed.paused_at is None
    assert all(client.wait(job_id, timeout=20).succeeded for job_id in held)
    assert not client.resume(FLOW_QUEUE).paused  # resuming a running queue changes nothing
    for call in (client.pause, client.resume):
        with pytest.raises(NotFound):
            call("nosuchqueue")


def test_schedules_lists_each_recurring_job_with_its_next_run(client: Client) -> None:
    [cleanup] = client.schedules()
    assert (cleanup.name, cleanup.cron, cleanup.timezone, cleanup.job_name) == (
        "cleanup",
        "@daily",
        "UTC",
        "cleanupJob",
    )
    assert cleanup.data == {} and cleanup.next_run_at is not None and cleanup.next_run_at > datetime.now(UTC)
    assert cleanup.last_run is None  # no scheduler runs in this stack
    assert cleanup.raw["nextRunAtIso"]
