"""The job status API against real API and worker processes and a private Redis: listing and
pagination, requeue of failed jobs (one and in bulk), deletes, and idempotent enqueue under races."""

from __future__ import annotations

import threading
from typing import Any

import httpx
import pytest
import redis

from app.keys import Keys
from app.outcomes.record import DETAIL_FIELDS, PUBLIC_FIELDS
from tests.support.receivers import fail_first
from tests.support.services import Stack, wait_until

pytestmark = pytest.mark.slow

KEYS = Keys()


def walk(api: Any, limit: int, **filters: str) -> list[list[dict[str, Any]]]:
    """Every page of GET /jobs, following nextCursor to the end."""
    pages: list[list[dict[str, Any]]] = []
    params: dict[str, Any] = {"limit": limit, **filters}
    while True:
        response = api.http.get("/jobs", params=params)
        assert response.status_code == 200, response.text
        body = response.json()
        pages.append(body["jobs"])
        assert len(pages) < 200, "pagination does not end"
        if body["nextCursor"] is None:
            return pages
        assert len(body["jobs"]) == limit, "only the last page may be short"
        params["cursor"] = body["nextCursor"]


def state_of(api: Any, job_id: str, state: str) -> dict[str, Any] | None:
    record = api.job(job_id)
    return record if record["state"] == state else None


def test_list_is_newest_first_filtered_and_paginated_without_gaps(stack: Stack) -> None:
    _, base = stack.api()
    api = stack.client(base)
    # No worker: every job stays queued. Two batches, each in one millisecond, then single jobs.
    ids: list[str] = []
    for batch in range(2):
        jobs = [{"jobName": "emailJob", "data": {"email": f"u{batch}-{n}@example.com"}} for n in range(230)]
        response = api.http.post("/enqueue/batch", json={"jobs": jobs})
        assert response.status_code == 202, response.text
        ids += response.json()["jobIds"]
    webhooks = [api.enqueue("webhookJob", {"url": "https://example.com/h", "payload": n}) for n in range(7)]
    ids += webhooks
    newest_first = list(reversed(ids))

    for limit in (1, 37, 200):
        pages = walk(api, limit) if limit > 1 else walk(api, limit, jobName="webhookJob")
        listed = [record["jobId"] for page in pages for record in page]
        assert listed == (newest_first if limit > 1 else list(reversed(webhooks))), f"limit={limit}"
        assert len(set(listed)) == len(listed)
    enqueued_at = [record["enqueuedAt"] for page in walk(api, 200) for record in page]
    assert enqueued_at == sorted(enqueued_at, reverse=True)

    emails = [r["jobId"] for page in walk(api, 100, state="queued", jobName="emailJob") for r in page]
    assert emails == [job_id for job_id in newest_first if job_id not in webhooks]
    first = api.http.get("/jobs", params={"limit": 3, "state": "queued"}).json()["jobs"][0]
    assert first["jobId"] == webhooks[-1] and first["state"] == "queued" and first["jobName"] == "webhookJob"
    assert set(first) >= {"jobId", "jobName", "state", "attempts", "maxRetries", "enqueuedAt", "error", "nextRetryAt"}
    assert walk(api, 10, state="failed") == [[]]
    for bad in ({"state": "lost"}, {"jobName": "nosuchJob"}, {"limit": "0"}, {"limit": "201"}, {"cursor": "x"}):
        assert api.http.get("/jobs", params=bad).status_code == 400, bad


def test_retry_of_a_failed_job_runs_it_again_with_the_same_id_until_it_succeeds(
    stack: Stack, receivers: Any, redis_client: redis.Redis
) -> None:
    receiver = receivers(fail_first(2))  # 500, 500, then 200
    _, base = stack.api(MAX_RETRIES="1")
    api = stack.client(base)
    stack.worker(threads=2, MAX_RETRIES="1")
    job_id = api.enqueue("webhookJob", {"url": receiver.url, "payload": {"order": 1}})
    failed = wait_until(lambda: state_of(api, job_id, "failed"), timeout=20, message="failed")
    assert failed["attempts"] == 2 and receiver.statuses(job_id) == [500, 500]
    dead_letter = redis_client.hget(KEYS.job(job_id), "deadLetterId")
    assert redis_client.zscore(KEYS.dead_letters("default"), dead_letter) is not None

    response = api.http.post(f"/jobs/{job_id}/retry")
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["jobId"] == job_id and body["state"] == "queued" and body["attempts"] == 0
    assert body["requeues"] == 1 and "500" in body["error"]  # the earlier failure stays visible

    done = wait_until(lambda: state_of(api, job_id, "succeeded"), timeout=20, message="succeeded after retry")
    assert done["attempts"] == 1 and done["executions"] == 3 and done["requeues"] == 1
    assert receiver.statuses(job_id) == [500, 500, 200]
    # Out of the dead letters; the failedJobs entry of the earlier failure is still readable.
    assert redis_client.zscore(KEYS.dead_letters("default"), dead_letter) is None
    assert redis_client.hget(KEYS.failed_job_compat(job_id), "attempts") == b"2"
    listed = api.http.get("/jobs", params={"state": "succeeded"}).json()["jobs"]
    assert [r["jobId"] for r in listed] == [job_id]

    # 409 for a job that is not failed, 404 for one that does not exist.
    conflict = api.http.post(f"/jobs/{job_id}/retry")
    assert conflict.status_code == 409 and "succeeded, not failed" in conflict.json()["error"]
    assert api.http.post("/jobs/0123456789abcdef/retry").status_code == 404


def test_bulk_retry_and_bulk_delete_of_failed_jobs(stack: Stack, receivers: Any, redis_client: redis.Redis) -> None:
    flaky = receivers(fail_first(1))  # fails once, then succeeds
    broken = receivers(fail_first(1_000))
    _, base = stack.api(MAX_RETRIES="0")
    api = stack.client(base)
    stack.worker(threads=4, MAX_RETRIES="0")
    flaky_ids = [api.enqueue("webhookJob", {"url": flaky.url, "payload": n}) for n in range(6)]
    for job_id in flaky_ids:
        wait_until(lambda j=job_id: state_of(api, j, "failed"), timeout=20, message="failed")
    assert len(walk(api, 4, state="failed")[0]) == 4

    none = api.http.post("/jobs/retry", json={"state": "failed", "jobName": "emailJob"})
    assert none.status_code == 200 and none.json() == {"requeued": 0}
    assert api.http.post("/jobs/retry", json={"state": "queued"}).status_code == 400
    response = api.http.post("/jobs/retry", json={"state": "failed", "jobName": "webhookJob"})
    assert response.status_code == 200 and response.json() == {"requeued": 6}
    for job_id in flaky_ids:
        done = wait_until(lambda j=job_id: state_of(api, j, "succeeded"), timeout=20, message="succeeded")
        assert done["requeues"] == 1 and done["attempts"] == 1
    assert walk(api, 10, state="failed") == [[]]

    broken_ids = [api.enqueue("webhookJob", {"url": broken.url, "payload": n}) for n in range(5)]
    for job_id in broken_ids:
        wait_until(lambda j=job_id: state_of(api, j, "failed"), timeout=20, message="failed")
    waiting = api.enqueue("webhookJob", {"url": broken.url, "payload": "later"}, delayMs=600_000)

    one = broken_ids[0]
    assert api.http.delete(f"/jobs/{one}").status_code == 204
    assert api.http.get(f"/jobs/{one}").status_code == 404
    assert api.http.delete(f"/jobs/{one}").status_code == 404
    assert not redis_client.exists(KEYS.job(one), KEYS.failed_job_compat(one))
    assert api.http.delete(f"/jobs/{waiting}").status_code == 409  # not finished: still queued
    assert api.http.delete("/jobs").status_code == 400  # a bulk delete names state=failed

    response = api.http.delete("/jobs", params={"state": "failed"})
    assert response.status_code == 200 and response.json() == {"deleted": 4}
    for job_id in broken_ids:
        assert api.http.get(f"/jobs/{job_id}").status_code == 404
        assert not redis_client.exists(KEYS.failed_job_compat(job_id))
    assert redis_client.zcard(KEYS.dead_letters("default")) == 0
    assert walk(api, 10, state="failed") == [[]]
    # Everything else is untouched.
    assert all(api.state(job_id) == "succeeded" for job_id in flaky_ids)
    assert api.state(waiting) == "queued"


def test_idempotency_key_enqueues_once_when_requests_race(stack: Stack, redis_client: redis.Redis) -> None:
    _, base = stack.api()
    racers = 20
    barrier = threading.Barrier(racers)
    answers: list[httpx.Response] = []
    lock = threading.Lock()

    def send() -> None:
        with httpx.Client(base_url=base, headers={"x-api-key": stack.api_key}, timeout=10) as http:
            barrier.wait()
            response = http.post(
                "/enqueue",
                json={"jobName": "emailJob", "data": {"email": "once@example.com"}},
                headers={"Idempotency-Key": "order-42"},
            )
        with lock:
            answers.append(response)

    threads = [threading.Thread(target=send) for _ in range(racers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert len(answers) == racers
    assert sorted(r.status_code for r in answers) == [200] * (racers - 1) + [202]
    job_ids = {r.json()["jobId"] for r in answers}
    assert len(job_ids) == 1
    assert {r.json()["message"] for r in answers} == {"Job added", "Job already added"}
    # Exactly one job in Redis: one message on the queue, one record, counted once.
    assert redis_client.llen(KEYS.queue("default")) == 1
    assert redis_client.hlen(KEYS.queue_messages("default")) == 1
    assert redis_client.hget(KEYS.enqueued_counts(), "emailJob|default") == b"1"
    assert redis_client.zcard(KEYS.all_index()) == 1
    assert 0 < redis_client.ttl(KEYS.idempotency("order-42")) <= 86_400
    # Another key is another job.
    api = stack.client(base)
    other = api.http.post(
        "/enqueue",
        json={"jobName": "emailJob", "data": {"email": "once@example.com"}},
        headers={"Idempotency-Key": "x"},
    )
    assert other.status_code == 202 and other.json()["jobId"] not in job_ids
    assert redis_client.llen(KEYS.queue("default")) == 2


def test_one_job_shows_its_traceback_and_with_include_data_its_data(stack: Stack, receivers: Any) -> None:
    receiver = receivers(fail_first(1_000))
    _, base = stack.api()
    api = stack.client(base)
    # One retry, a long way off: the job stays retrying after its first failure.
    stack.worker(threads=2, MAX_RETRIES="1", RETRY_MIN_BACKOFF_MS="600000", RETRY_MAX_BACKOFF_MS="600000")
    data = {"url": receiver.url, "payload": {"order": 7, "note": "x" * 1000}}
    job_id = api.enqueue("webhookJob", data)
    retrying = wait_until(lambda: state_of(api, job_id, "retrying"), timeout=20, message="retrying")
    assert "Traceback" in retrying["traceback"] and "500" in retrying["traceback"], retrying["traceback"]
    assert "data" not in retrying  # data can be large: only on request

    with_data = api.http.get(f"/jobs/{job_id}", params={"include": "data"})
    assert with_data.status_code == 200, with_data.text
    assert with_data.json()["data"] == data and with_data.json()["traceback"] == retrying["traceback"]
    assert api.http.get(f"/jobs/{job_id}", params={"include": ""}).json() == retrying
    refused = api.http.get(f"/jobs/{job_id}", params={"include": "everything"})
    assert refused.status_code == 400 and "include" in refused.json()["error"]
    # The lists keep their fields.
    listed = api.http.get("/jobs").json()["jobs"]
    assert [r["jobId"] for r in listed] == [job_id]
    assert "traceback" not in listed[0] and "data" not in listed[0]
    assert set(listed[0]) == set(retrying) - (set(DETAIL_FIELDS) - set(PUBLIC_FIELDS))  # traceback, progress, ...
