"""Redis restarted mid-run (gracefully, and with SIGKILL) while jobs run, wait and retry."""

from __future__ import annotations

import time
from typing import Any

import pytest
import redis

from tests.faults import ledger
from tests.faults.conftest import KEYS
from tests.faults.receiver import Receiver
from tests.support.services import RedisServer, Stack, wait_until

pytestmark = [pytest.mark.fault, pytest.mark.slow]

WORKER_ENV: dict[str, Any] = {
    "WEBHOOK_TIMEOUT_S": "30",
    # Retries wait 1-3 s in the delayed queue: some are there while Redis is down.
    "RETRY_MIN_BACKOFF_MS": "1000",
    "RETRY_MAX_BACKOFF_MS": "3000",
}


@pytest.mark.parametrize("kill", [False, True], ids=["graceful", "sigkill"])
def test_every_job_ends_across_a_redis_restart(
    stack: Stack, receiver: Receiver, redis_server: RedisServer, redis_client: redis.Redis, kill: bool
) -> None:
    _, base = stack.api()
    # Eight threads each: no flaky job waits for a thread behind the slow ones (a prefetched job waits
    # for a thread of its own process), so all first attempts fail at once and retry together.
    workers = [stack.worker("w1", threads=8, **WORKER_ENV), stack.worker("w2", threads=8, **WORKER_ENV)]
    api = stack.client(base)
    running = [api.enqueue("webhookJob", {"url": receiver.url("/sleep/1500"), "payload": {}}) for _ in range(4)]
    retrying = [api.enqueue("webhookJob", {"url": receiver.url("/flaky/1"), "payload": {}}) for _ in range(4)]
    delayed = [api.enqueue("emailJob", {"email": f"d{n}@example.com"}, delayMs=500 + 250 * n) for n in range(8)]
    plain = [api.enqueue("emailJob", {"email": f"p{n}@example.com"}) for n in range(20)]
    failed_once: set[str] = set()

    def slow_running_and_flaky_failed_once() -> bool:
        failed_once.update(job for job in retrying if api.state(job) == "retrying")
        return all(receiver.count(job) for job in running) and failed_once == set(retrying)

    wait_until(
        slow_running_and_flaky_failed_once,
        timeout=15,
        message="slow jobs running and flaky ones waiting for their retry",
    )

    down = time.monotonic()
    redis_server.stop(kill=kill)
    # Down for longer than the heartbeat timeout (every stamp is stale when it returns) and
    # until the slow jobs have finished (their acks wait for Redis).
    wait_until(
        lambda: (
            all(w.log().count("Heartbeat failed") >= 6 for w in workers)
            and all(d.finished for job in running for d in receiver.of(job))
        ),
        timeout=20,
        message="the workers to miss several heartbeats",
    )
    redis_server.start()
    back = time.monotonic()
    print(f"\nRedis {'SIGKILLed' if kill else 'stopped'}, restarted after {back - down:.2f} s")
    # The API recovers by itself: new jobs are accepted again (a 503 meanwhile says retry later).
    statuses: list[int] = []

    def enqueue_late() -> str | None:
        response = api.http.post("/enqueue", json={"jobName": "emailJob", "data": {"email": "late@example.com"}})
        statuses.append(response.status_code)
        return str(response.json()["jobId"]) if response.status_code == 202 else None

    late = wait_until(enqueue_late, timeout=10, interval=0.1, message="the API to accept jobs again")
    assert set(statuses) <= {202, 503}, statuses
    print(f"API answers after the restart: {statuses}")
    ids = [*running, *retrying, *delayed, *plain, late]

    result = ledger.settle(redis_client, KEYS, ids, timeout=40)
    print(f"recovered: all {result.accepted} jobs at rest {time.monotonic() - back:.1f} s after Redis came back")
    ledger.assert_at_rest(result)
    assert result.succeeded == result.accepted
    for job in retrying:
        assert api.job(job)["attempts"] == 2
