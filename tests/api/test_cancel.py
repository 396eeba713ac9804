"""POST /jobs/{id}/cancel against real API and worker processes on a private Redis: a job
canceled with 200 never runs, even when a worker fetches it at that moment; a running one is
asked to stop, or interrupted with force; finished ones are refused."""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from tests.support import flow_log
from tests.support.services import Stack, shared_stack, wait_until

FLOW = {"JOB_MODULES": "tests.support.flow_jobs"}
RACES = 200
READONLY_KEY = "read-only-key-0123456789"


@pytest.fixture(scope="module")
def flow_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One API and worker for both tests: each reads only the jobs it enqueued."""
    with shared_stack(tmp_path_factory.mktemp("cancel"), threads=8, **FLOW, API_READONLY_KEY=READONLY_KEY) as stack:
        yield stack


@pytest.fixture
def api(flow_stack: Stack) -> Any:
    return flow_stack.clients[0]


@pytest.fixture
def redis_client(flow_stack: Stack) -> Iterator[redis.Redis]:
    with flow_stack.redis.client() as client:
        yield client


def test_a_cancel_racing_a_fetch_never_lets_a_canceled_job_run(api: Any, redis_client: redis.Redis) -> None:
    canceled: list[str] = []
    others: list[str] = []
    with concurrent.futures.ThreadPoolExecutor(4) as pool:

        def race(number: int) -> tuple[str, int]:
            # Due 0 to 40 ms from now, canceled about 15 ms from now: some cancels land before the
            # job is due, some as a worker fetches it, some after it ran (the sleep sets up the
            # race; nothing waits on it).
            job_id = api.enqueue("orderJob", {}, delayMs=(number % 5) * 10)
            time.sleep(0.015)
            response = api.http.post(f"/jobs/{job_id}/cancel")
            assert response.status_code in (200, 202, 409), response.text
            return job_id, response.status_code

        for job_id, status in pool.map(race, range(RACES)):
            (canceled if status == 200 else others).append(job_id)
    # Every job ends; the canceled ones as canceled, and none of them ever started.
    wait_until(
        lambda: all(api.state(job_id) in ("succeeded", "canceled") for job_id in canceled + others),
        timeout=60,
        message="every raced job to end",
    )
    started = {job_id for _, job_id, _ in flow_log.starts(redis_client, "orderJob")}
    assert not started & set(canceled), f"{len(started & set(canceled))} jobs ran after a 200 cancel"
    assert all(api.state(job_id) == "canceled" for job_id in canceled)
    assert canceled and others, f"one side won every race ({len(canceled)} canceled): nothing raced"
    print(f"{len(canceled)} of {RACES} cancels won the race; {len(others)} jobs had started or finished")


def test_cancel_of_a_delayed_job_and_a_running_one_and_refusals(api: Any, redis_client: redis.Redis) -> None:
    delayed = api.enqueue("orderJob", {}, delayMs=1500)
    response = api.http.post(f"/jobs/{delayed}/cancel")
    assert response.status_code == 200 and response.json()["state"] == "canceled", response.text
    # A running job that checks context.job.cancelled() stops and ends canceled.
    polite = api.enqueue("slowJob", {"sleepMs": 30_000})
    wait_until(lambda: api.state(polite) == "running", message="the slow job to run")
    response = api.http.post(f"/jobs/{polite}/cancel")
    assert response.status_code == 202 and "requested" in response.json()["message"], response.text
    record = wait_until(lambda: (r := api.job(polite))["state"] == "canceled" and r, message="a stop")
    assert "canceled while running" in record["error"] and record["cancelRequestedAt"]
    # One that ignores it is interrupted with force.
    stubborn = api.enqueue("stubbornJob", {"sleepMs": 30_000})
    wait_until(lambda: api.state(stubborn) == "running", message="the stubborn job to run")
    assert api.http.post(f"/jobs/{stubborn}/cancel").status_code == 202
    assert api.state(stubborn) == "running"
    response = api.http.post(f"/jobs/{stubborn}/cancel", params={"force": "true"})
    assert response.status_code == 202 and "interrupted" in response.json()["message"], response.text
    record = wait_until(lambda: (r := api.job(stubborn))["state"] == "canceled" and r, message="an interrupt")
    assert record["attempts"] == 1 and "JobCanceled" not in (record.get("traceback") or "")
    # No dead letter for a canceled job; the delayed one never started.
    assert redis_client.zcard("dramatiq:flow.XQ") == 0
    wait_until(lambda: True)
    assert delayed not in {job_id for _, job_id, _ in flow_log.starts(redis_client)}
    # Refusals: finished, unknown, bad force, read-only key.
    done = api.enqueue("orderJob", {})
    wait_until(lambda: api.state(done) == "succeeded", message="a finished job")
    response = api.http.post(f"/jobs/{done}/cancel")
    assert response.status_code == 409 and "succeeded" in response.json()["error"], response.text
    assert api.http.post("/jobs/nosuchjob/cancel").status_code == 404
    assert api.http.post(f"/jobs/{done}/cancel", params={"force": "yes"}).status_code == 400
    response = api.http.post(f"/jobs/{done}/cancel", headers={"x-api-key": READONLY_KEY})
    assert response.status_code == 403
    # A canceled job can be run again on purpose.
    response = api.http.post(f"/jobs/{delayed}/retry")
    assert response.status_code == 202, response.text
    wait_until(lambda: api.state(delayed) == "succeeded", message="the retried canceled job")
