"""The fetch decides starts in Redis (app/broker/fetch.py, app/connection/lua/fetch.lua):
priorities across the whole queue, concurrency and rate limits across workers, paused queues.
Real API and worker processes on a private Redis; job types of tests/support/flow_log.py."""

from __future__ import annotations

import signal
import time
from typing import Any

import redis

from app.keys import Keys
from tests.support import flow_log
from tests.support.services import Stack, wait_until

FLOW = {"JOB_MODULES": "tests.support.flow_jobs"}
KEYS = Keys()


def enqueue_many(api: Any, jobs: list[dict[str, Any]]) -> list[str]:
    ids: list[str] = []
    for start in range(0, len(jobs), 1000):
        response = api.http.post("/enqueue/batch", json={"jobs": jobs[start : start + 1000]})
        assert response.status_code == 202, response.text
        ids += response.json()["jobIds"]
    return ids


def succeeded(api: Any, ids: list[str]) -> bool:
    return all(api.state(job_id) == "succeeded" for job_id in ids)


def test_a_high_job_starts_next_behind_a_backlog_and_low_jobs_still_get_turns(
    stack: Stack, redis_client: redis.Redis
) -> None:
    _, base = stack.api(**FLOW)
    api = stack.client(base)
    backlog = enqueue_many(api, [{"jobName": "orderJob", "data": {}} for _ in range(2000)])
    low = api.enqueue("orderJob", {}, priority="low")
    high = api.enqueue("orderJob", {}, priority="high")
    assert api.job(high)["priority"] == "high" and api.job(backlog[0])["priority"] == "normal"
    stack.worker(processes=1, threads=1, **FLOW)
    wait_until(lambda: len(flow_log.starts(redis_client)) >= 40, timeout=60, message="40 starts")
    order = [job_id for _, job_id, _ in flow_log.starts(redis_client)]
    # Within the first fetch: the high job first; the low one within the first 10 (its turn).
    assert order[0] == high, order[:5]
    assert low in order[:10], "the low job waited for the whole backlog"
    assert order[1:4] == backlog[:3]  # the rest in arrival order


def test_concurrency_limit_holds_across_two_workers_without_using_retries(
    stack: Stack, redis_client: redis.Redis
) -> None:
    _, base = stack.api(**FLOW)
    api = stack.client(base)
    stack.worker("worker-a", processes=1, threads=8, **FLOW)
    stack.worker("worker-b", processes=1, threads=8, **FLOW)
    ids = enqueue_many(api, [{"jobName": "limitedJob", "data": {"sleepMs": 100}} for _ in range(30)])
    wait_until(lambda: succeeded(api, ids), timeout=60, message="30 limited jobs to succeed")
    assert int(redis_client.get(flow_log.MOST_AT_ONCE) or 0) == 3
    records = [api.job(job_id) for job_id in ids]
    assert {r["attempts"] for r in records} == {1} and {r["executions"] for r in records} == {1}
    assert redis_client.zcard(KEYS.slots("limitedJob")) == 0  # every slot given back


def test_rate_limit_holds_within_ten_percent_over_five_seconds(stack: Stack, redis_client: redis.Redis) -> None:
    _, base = stack.api(**FLOW)
    api = stack.client(base)
    stack.worker(processes=2, threads=4, **FLOW)
    ids = enqueue_many(api, [{"jobName": "rateJob", "data": {}} for _ in range(70)])
    wait_until(lambda: len(flow_log.starts(redis_client, "rateJob")) >= 60, timeout=30, message="60 starts")
    times = sorted(at for _, _, at in flow_log.starts(redis_client, "rateJob"))
    first = times[0]
    in_five_seconds = sum(1 for at in times if at < first + 5000)
    assert 45 <= in_five_seconds <= 55, (in_five_seconds, [t - first for t in times])
    # Over the whole run too: after the first second's 10, 10 a second (the limit holds on the
    # fetch that admits a job; a start trails it by the worker's hand-off, a few ms).
    rate = (len(times) - 10) / ((times[-1] - first) / 1000)
    assert 9 <= rate <= 11, rate
    wait_until(lambda: succeeded(api, ids), timeout=30, message="all rate-limited jobs")
    assert {api.job(job_id)["attempts"] for job_id in ids} == {1}


def test_rate_limit_per_key_counts_each_host_apart(stack: Stack, redis_client: redis.Redis) -> None:
    _, base = stack.api(**FLOW)
    api = stack.client(base)
    stack.worker(processes=1, threads=4, **FLOW)
    jobs = [{"jobName": "hostRateJob", "data": {"host": host}} for host in ("a", "b") for _ in range(4)]
    ids = enqueue_many(api, jobs)
    wait_until(lambda: succeeded(api, ids), timeout=30, message="per-host jobs")
    starts = {job_id: at for _, job_id, at in flow_log.starts(redis_client, "hostRateJob")}
    first = min(starts.values())
    for host_ids in (ids[:4], ids[4:]):
        at_once = sorted(starts[job_id] - first for job_id in host_ids)
        # 2 per second per host: the first two of each host at once, the next two a second later.
        assert at_once[1] < 500 and at_once[2] >= 900, at_once


def test_a_killed_workers_concurrency_slot_comes_back(stack: Stack, redis_client: redis.Redis) -> None:
    _, base = stack.api(**FLOW)
    api = stack.client(base)
    doomed = stack.worker("doomed", processes=1, threads=2, **FLOW)
    stuck = api.enqueue("singleJob", {"sleepMs": 60_000})
    wait_until(lambda: api.state(stuck) == "running", message="the slot holder to run")
    waiting = api.enqueue("singleJob", {"sleepMs": 0})
    doomed.kill_group()
    killed_at = time.monotonic()
    stack.worker("rescuer", processes=1, threads=2, **FLOW)
    # The heartbeat timeout is 2 s here: the dead worker's lease on the one slot ends, and the
    # waiting job (ahead of the dead worker's job, which the sweep puts back behind it) runs.
    wait_until(lambda: api.state(waiting) == "succeeded", timeout=30, message="the waiting job")
    assert time.monotonic() - killed_at < 2 + 10
    assert api.job(waiting)["attempts"] == 1
    response = api.http.post(f"/jobs/{stuck}/cancel")
    assert response.status_code in (200, 202), response.text
    wait_until(lambda: api.state(stuck) == "canceled", timeout=20, message="the stuck job to be canceled")


def test_pause_stops_starts_within_a_second_and_resume_drains(stack: Stack, redis_client: redis.Redis) -> None:
    _, base = stack.api(**FLOW)
    api = stack.client(base)
    worker = stack.worker(processes=1, threads=4, **FLOW)
    ids = enqueue_many(api, [{"jobName": "slowJob", "data": {"sleepMs": 50}} for _ in range(300)])
    wait_until(lambda: len(flow_log.starts(redis_client, "slowJob")) >= 20, message="work to be going")
    response = api.http.post("/queues/flow/pause")
    assert response.status_code == 200, response.text
    paused_at = int(time.time() * 1000)
    later = enqueue_many(api, [{"jobName": "slowJob", "data": {}} for _ in range(20)])  # accepted meanwhile
    time.sleep(2.0)  # a span of time with no starts is what is measured
    late_starts = [at for _, _, at in flow_log.starts(redis_client, "slowJob") if at > paused_at + 1000]
    assert late_starts == [], f"{len(late_starts)} jobs started more than 1 s after the pause"
    worker.signal(signal.SIGTERM)  # paused state survives a worker restart
    assert worker.wait(30) == 0
    stack.worker("worker-2", processes=1, threads=4, **FLOW)
    time.sleep(1.0)
    assert not [at for _, _, at in flow_log.starts(redis_client, "slowJob") if at > paused_at + 1000]
    assert api.http.post("/queues/flow/resume").status_code == 200
    wait_until(lambda: succeeded(api, ids + later), timeout=60, message="the queue to drain")
    assert {api.job(job_id)["attempts"] for job_id in ids + later} == {1}
