"""Workers that die: SIGKILL of a whole worker mid-job, and a job that kills its worker every time."""

from __future__ import annotations

import functools
import time

import pytest
import redis

from tests.faults import ledger
from tests.faults.conftest import KEYS
from tests.faults.receiver import Delivery, Receiver
from tests.support.services import Service, Stack, wait_until

pytestmark = pytest.mark.fault

HEARTBEAT_TIMEOUT_S = 2.0  # HEARTBEAT_TIMEOUT_MS of the test stack


def test_job_of_a_killed_worker_completes_on_another_within_the_heartbeat_timeout(
    stack: Stack, receiver: Receiver, redis_client: redis.Redis
) -> None:
    _, base = stack.api()
    w1 = stack.worker("w1", threads=1, WEBHOOK_TIMEOUT_S="30")
    api = stack.client(base)
    slow = api.enqueue("webhookJob", {"url": receiver.url("/hold"), "payload": {"n": 1}})
    wait_until(lambda: receiver.count(slow) == 1, message="the slow job to start on w1")
    stack.worker("w2", threads=2, WEBHOOK_TIMEOUT_S="30")

    killed = time.monotonic()
    w1.kill_group()  # every process of w1, mid-job
    wait_until(lambda: receiver.count(slow) == 2, timeout=HEARTBEAT_TIMEOUT_S + 10, message="w2 to run it again")
    recovery_s = receiver.of(slow)[1].started - killed
    print(f"\nSIGKILLed worker's job started again on w2 {recovery_s:.2f} s after the kill")
    assert recovery_s < HEARTBEAT_TIMEOUT_S + 3

    receiver.release()
    wait_until(lambda: api.state(slow) == "succeeded", message="the second run to finish")
    record = api.job(slow)
    assert record["executions"] == 2 and record["redeliveries"] >= 1 and record["attempts"] == 1
    # Visible and harmless: the receiver got the same delivery id twice and can drop the second.
    assert [d.job_id for d in receiver.of(slow)] == [slow, slow]
    ledger.assert_at_rest(ledger.settle(redis_client, KEYS, [slow], timeout=20))


def test_job_that_kills_its_worker_every_time_fails_as_a_crash_loop(
    stack: Stack, receiver: Receiver, redis_client: redis.Redis
) -> None:
    stack.env["MAX_CRASH_DELIVERIES"] = "2"

    def crash(delivery: Delivery) -> None:
        # Kill whichever worker sent it (the only one alive), even if the test has not yet seen
        # it finish booting.
        for service in list(stack.services):
            if service.name.startswith("crashy") and service.alive():
                service.kill_group()

    receiver.on_crash = crash
    _, base = stack.api()
    api = stack.client(base)
    # The job goes in once the first worker is up, so that no worker can crash while booting.
    worker = stack.worker("crashy0", threads=1)
    job = api.enqueue("webhookJob", {"url": receiver.url("/crash"), "payload": {}})

    def crashed_or_failed(service: Service) -> bool:
        return not service.alive() or api.state(job) == "failed"

    for round_ in range(1, 6):  # bounded: 2 crashes, then the third delivery is refused
        wait_until(
            functools.partial(crashed_or_failed, worker),
            timeout=HEARTBEAT_TIMEOUT_S + 15,
            message="the worker to crash or the job to fail",
        )
        if api.state(job) == "failed":
            break
        worker = stack.worker(f"crashy{round_}", threads=1)
    record = api.job(job)
    print(f"\ncrash loop: {receiver.count(job)} deliveries reached the receiver; record: {record}")
    assert record["state"] == "failed"
    assert "crash loop" in record["error"]
    assert receiver.count(job) == 2  # MAX_CRASH_DELIVERIES runs; the third is failed before it runs
    assert record["redeliveries"] == 2 and record["attempts"] == 1
    assert worker.alive(), "the worker that refused the job must survive"
    ledger.assert_at_rest(ledger.settle(redis_client, KEYS, [job], timeout=20))
