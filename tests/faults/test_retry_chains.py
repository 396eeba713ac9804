"""Failing jobs whose workers are SIGKILLed while their retries are being scheduled: no retry
chain is replayed, every job is dead-lettered exactly once, and no job runs more often than its
attempts plus the redeliveries of an attempt in flight."""

from __future__ import annotations

import time

import httpx
import pytest
import redis

from tests.faults import ledger
from tests.faults.conftest import KEYS
from tests.faults.receiver import Receiver
from tests.support.redis_state import records_fields
from tests.support.services import Stack, wait_until

pytestmark = pytest.mark.fault

JOBS = 200
MAX_RETRIES = 3
#: Deliveries the receiver has seen when each worker in turn is SIGKILLed.
KILL_AT = (150, 380)


def test_killed_workers_never_replay_a_retry_chain(stack: Stack, receiver: Receiver, redis_client: redis.Redis) -> None:
    stack.env.update(MAX_RETRIES=str(MAX_RETRIES), RETRY_MIN_BACKOFF_MS="20", RETRY_MAX_BACKOFF_MS="200")
    _, base = stack.api()
    jobs = [{"jobName": "webhookJob", "data": {"url": receiver.url("/fail"), "payload": {"n": n}}} for n in range(JOBS)]
    response = httpx.post(f"{base}/enqueue/batch", json={"jobs": jobs}, headers={"x-api-key": stack.api_key})
    assert response.status_code == 202, response.text
    accepted = response.json()["jobIds"]

    started = time.monotonic()
    for round_, at in enumerate(KILL_AT):
        worker = stack.worker(f"w{round_}", processes=2, threads=8)
        wait_until(lambda at=at: len(receiver.deliveries) >= at, timeout=60, message=f"{at} deliveries")
        worker.kill_group()  # mid-run: attempts failing, retries being scheduled, acks on their way
        print(f"\nw{round_} SIGKILLed at {len(receiver.deliveries)} deliveries ({time.monotonic() - started:.1f} s)")
    stack.worker("last", processes=2, threads=8)

    result = ledger.settle(redis_client, KEYS, accepted, timeout=90)
    ledger.assert_at_rest(result)
    assert result.failed == JOBS
    dead_letters = redis_client.zcard(KEYS.dead_letters("default"))
    assert dead_letters == JOBS, f"{dead_letters} dead letters for {JOBS} failed jobs: one was dead-lettered twice"
    too_many = {}
    records = records_fields(redis_client, KEYS, accepted, ("attempts", "redeliveries"))
    for job_id, (attempts, redeliveries) in zip(accepted, records, strict=True):
        runs = receiver.count(job_id)
        assert int(attempts) == MAX_RETRIES + 1
        if runs > MAX_RETRIES + 1 + int(redeliveries or 0):
            too_many[job_id] = (runs, int(redeliveries or 0))
    assert not too_many, f"jobs run more than {MAX_RETRIES + 1} attempts + redeliveries: {too_many}"
    print(f"{len(receiver.deliveries)} deliveries for {JOBS} jobs of {MAX_RETRIES + 1} attempts")
