"""Graceful shutdown with real processes: a worker drains, the API finishes its requests, the
scheduler stops. A slow job is a webhookJob whose receiver holds the request."""

from __future__ import annotations

import json
import re
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis

from tests.faults import ledger
from tests.faults.conftest import KEYS, live_workers, unacked
from tests.faults.receiver import Receiver
from tests.support.services import Stack, wait_until

pytestmark = pytest.mark.fault

EMAIL = {"email": "drain@example.com", "subject": "drain"}


def test_sigterm_finishes_the_running_job_and_gives_back_the_others_at_once(
    stack: Stack, receiver: Receiver, redis_client: redis.Redis
) -> None:
    _, base = stack.api()
    w1 = stack.worker("w1", threads=1, shutdown_timeout_ms=30_000, WEBHOOK_TIMEOUT_S="30")
    (w1_id,) = live_workers(redis_client)
    api = stack.client(base)
    slow = api.enqueue("webhookJob", {"url": receiver.url("/hold"), "payload": {}})
    wait_until(lambda: receiver.count(slow) == 1, message="the slow job to start")
    prefetched = [api.enqueue("emailJob", EMAIL) for _ in range(5)]
    delayed = api.enqueue("emailJob", EMAIL, delayMs=4_000)
    wait_until(
        lambda: len(unacked(redis_client, w1_id)) == 6 and len(unacked(redis_client, w1_id, "default.DQ")) == 1,
        message="w1 to prefetch 5 jobs and the delayed one",
    )

    signalled = time.monotonic()
    w1.signal(signal.SIGTERM)
    wait_until(
        lambda: (
            redis_client.llen(KEYS.queue("default")) == 5
            and redis_client.llen(KEYS.queue("default.DQ")) == 1
            and len(unacked(redis_client, w1_id)) == 1
            and not unacked(redis_client, w1_id, "default.DQ")
        ),
        message="the prefetched and delayed jobs back in Redis",
    )
    given_back_s = time.monotonic() - signalled
    print(f"\nprefetched and delayed jobs back in Redis {given_back_s * 1000:.0f} ms after SIGTERM")
    # Dramatiq's worker process looks at its stop flag once a second; the rest is one script.
    assert given_back_s < 1.5
    assert w1.alive() and receiver.of(slow)[0].finished is None

    late = api.enqueue("emailJob", EMAIL)  # after SIGTERM: must not be taken by w1
    stack.worker("w2", threads=2)
    others = [*prefetched, delayed, late]

    running = unacked(redis_client, w1_id)

    def others_done_elsewhere() -> bool:
        assert unacked(redis_client, w1_id) == running, "w1 took a job while draining"
        return all(api.state(job_id) == "succeeded" for job_id in others)

    wait_until(others_done_elsewhere, timeout=20, message="w2 to run the jobs w1 gave back")
    assert w1.alive(), "w1 must still be draining its running job"

    receiver.release()
    assert w1.wait(timeout=20) == 0
    assert receiver.of(slow)[0].status == 200
    record = api.job(slow)
    assert record["state"] == "succeeded" and record["executions"] == 1 and not record["redeliveries"]
    assert "Gave back 5 unstarted message(s)" in w1.log()
    ledger.assert_at_rest(ledger.settle(redis_client, KEYS, [slow, *others], timeout=20))


def test_job_running_past_the_shutdown_timeout_comes_back_at_once_and_runs_again(
    stack: Stack, receiver: Receiver, redis_client: redis.Redis
) -> None:
    _, base = stack.api()
    # A long heartbeat timeout, so that a prompt return can only come from w1's "stopped" mark.
    env: dict[str, Any] = {"WEBHOOK_TIMEOUT_S": "30", "HEARTBEAT_TIMEOUT_MS": "20000"}
    w1 = stack.worker("w1", threads=1, shutdown_timeout_ms=1_000, **env)
    (w1_id,) = live_workers(redis_client)
    api = stack.client(base)
    slow = api.enqueue("webhookJob", {"url": receiver.url("/hold"), "payload": {}})
    wait_until(lambda: receiver.count(slow) == 1, message="the slow job to start")
    stack.worker("w2", threads=2, **env)

    signalled = time.monotonic()
    w1.signal(signal.SIGTERM)
    wait_until(lambda: receiver.count(slow) == 2, timeout=10, message="the job to run again on w2")
    back_s = receiver.of(slow)[1].started - signalled
    print(f"\njob still running at w1's 1 s shutdown timeout started again on w2 {back_s:.2f} s after SIGTERM")
    # <= 1 s until Dramatiq sees the signal, 1 s of shutdown timeout, then one sweep interval.
    assert back_s < 4.0
    assert w1.wait(timeout=15) == 0
    # w1 marked itself stopped on its way out; w2 swept its ack set and removed it.
    assert redis_client.zscore(KEYS.heartbeats(), w1_id) is None
    assert not unacked(redis_client, w1_id)

    receiver.release()
    wait_until(lambda: api.state(slow) == "succeeded", message="the second run to finish")
    record = api.job(slow)
    assert record["executions"] == 2 and record["redeliveries"] == 1 and record["attempts"] == 1
    # The duplicate is visible to the receiver: the same delivery id, twice.
    assert [d.job_id for d in receiver.of(slow)] == [slow, slow]
    assert "Worker has been shut down" in w1.log()
    ledger.assert_at_rest(ledger.settle(redis_client, KEYS, [slow], timeout=20))


def test_sigterm_to_three_processes_gives_back_each_delayed_job_once_and_logs_what_moved(
    stack: Stack, redis_client: redis.Redis
) -> None:
    # Delayed jobs wait in the delay-queue consumers' in-memory heaps of the worker's processes.
    # Before: each process began its drain up to a second after the signal (Dramatiq looks at its
    # flag once a second), at its own moment, so a process still fetching took what a stopping
    # sibling had just given back and gave it back again: the same jobs logged by every process
    # ("Gave back 2" x 3 for 2 jobs; here 6+8+10 for 10).
    _, base = stack.api()
    worker = stack.worker("w", processes=3, threads=2)
    wait_until(lambda: len(live_workers(redis_client)) == 3, message="3 worker processes with a heartbeat")
    workers = live_workers(redis_client)
    api = stack.client(base)
    delayed = [api.enqueue("emailJob", EMAIL, delayMs=60_000) for _ in range(10)]

    def held() -> dict[str, int]:
        return {broker_id: len(unacked(redis_client, broker_id, "default.DQ")) for broker_id in workers}

    wait_until(
        lambda: sum(held().values()) == len(delayed) and not redis_client.llen(KEYS.queue("default.DQ")),
        message="the delayed jobs to be fetched into the processes' heaps",
    )
    print(f"\ndelayed jobs held per process before SIGTERM: {sorted(held().values())}")

    worker.signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == 0
    log = worker.log()
    back = [raw.decode() for raw in redis_client.lrange(KEYS.queue("default.DQ"), 0, -1)]
    assert len(back) == len(set(back)) == len(delayed), back
    bodies = redis_client.hmget(KEYS.queue_messages("default.DQ"), back)
    assert sorted(json.loads(body)["message_id"] for body in bodies if body) == sorted(delayed)
    assert not any(held().values()) and not any(unacked(redis_client, broker_id) for broker_id in workers)
    moved = [int(n) for n in re.findall(r"Gave back (\d+) unstarted message\(s\) to queue 'default.DQ'", log)]
    print(f"give-back log lines of default.DQ: {moved}")
    assert sum(moved) == len(delayed), log
    assert "job(s) still running" not in log and "stranded" not in log
    assert {api.state(job_id) for job_id in delayed} == {"queued"}


def _slow_body(chunks: list[bytes], gate: threading.Event, sent_first: threading.Event) -> Iterator[bytes]:
    yield chunks[0]
    sent_first.set()
    gate.wait(20)
    yield from chunks[1:]


def test_api_finishes_a_request_in_flight_on_sigterm_then_exits(stack: Stack, redis_client: redis.Redis) -> None:
    api_service, base = stack.api()
    body = httpx.Request(
        "POST", "/", json={"jobs": [{"jobName": "emailJob", "data": EMAIL} for _ in range(200)]}
    ).content
    chunks = [body[:100], body[100:]]
    gate, sent_first = threading.Event(), threading.Event()
    result: dict[str, Any] = {}

    def post_slowly() -> None:
        with httpx.Client(base_url=base, headers={"x-api-key": stack.api_key}, timeout=30) as client:
            response = client.post(
                "/enqueue/batch",
                content=_slow_body(chunks, gate, sent_first),
                headers={"Content-Type": "application/json"},
            )
            result["status"], result["body"] = response.status_code, response.json()

    sender = threading.Thread(target=post_slowly)
    sender.start()
    assert sent_first.wait(10)
    api_service.signal(signal.SIGTERM)
    wait_until(lambda: "Shutting down" in api_service.log(), message="uvicorn to begin its shutdown")
    # It accepts no new connection, but the request in flight is still being read.
    with pytest.raises(httpx.ConnectError):
        httpx.get(base + "/healthz", timeout=2)
    assert api_service.alive()
    gate.set()
    sender.join(20)
    assert result["status"] == 202, result
    # uvicorn (>= 0.29) re-raises the signal once its shutdown is complete: status -15 (143 in a
    # container), after "Finished server process".
    assert api_service.wait(timeout=20) == -signal.SIGTERM
    log = api_service.log()
    assert "Application shutdown complete" in log and "Finished server process" in log
    ids = result["body"]["jobIds"]
    assert len(ids) == 200
    states = {redis_client.hget(KEYS.job(job_id), "state") for job_id in ids}
    assert states == {b"queued"}


@pytest.mark.parametrize(
    ("signum", "status"),
    [
        # periodiq sets no SIGTERM handler: the default action ends it at once (143 in a container).
        (signal.SIGTERM, -signal.SIGTERM),
        # What docker-compose.yml sends (stop_signal): KeyboardInterrupt, "Interrupted.", status 1.
        (signal.SIGINT, 1),
    ],
    ids=["SIGTERM", "SIGINT"],
)
def test_scheduler_stops_at_once(stack: Stack, signum: int, status: int) -> None:
    scheduler = stack.scheduler()
    wait_until(lambda: "cleanupJob" in scheduler.log(), timeout=20, message="periodiq to list its actors")
    scheduler.signal(signum)
    code = scheduler.wait(timeout=10)
    log = scheduler.log()
    print(f"\nperiodiq exit status on {signal.Signals(signum).name}: {code}")
    # Nothing is half-sent either way: each tick is one enqueue, one MULTI/EXEC.
    assert code == status
    assert "Traceback" not in log and "Unhandled error" not in log
    if signum == signal.SIGINT:
        assert "Interrupted." in log
