"""No job lost when Redis blinks: a real redis-server with AOF is restarted (gracefully, and with
SIGKILL) while failing webhook jobs await their retries or are scheduling them. At rest every job
has ended succeeded or failed; none is missing, none is stuck queued, running or retrying."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
import redis

from app.keys import Keys
from app.outcomes.record import FAILED, FINAL_STATES, QUEUED, RETRYING, RUNNING, SUCCEEDED
from tests.support.receivers import ScriptedReceiver
from tests.support.redis_state import record_fields, records_fields
from tests.support.services import Stack, wait_until

pytestmark = pytest.mark.slow

KEYS = Keys()
JOBS = 30
MAX_RETRIES = 3
#: A "recovering" receiver answers 500 twice, then 200 (the job succeeds at its 3rd attempt);
#: a "broken" one always answers 500 (the job fails after 1 + MAX_RETRIES attempts).
RECOVERS_AFTER = 2
#: What a worker logs when an attempt ends while Redis is down: a retry that cannot be
#: scheduled yet (app/middleware/retries.py), or an ack that Dramatiq will try again.
OUTAGE_SIGNS = ("Redis unavailable while scheduling a retry", "Failed to post_process_message")


def script(job_id: str, number: int, path: str) -> int:
    if path.endswith("/broken"):
        return 500
    return 500 if number <= RECOVERS_AFTER else 200


@pytest.fixture
def receiver() -> Iterator[ScriptedReceiver]:
    # Each answer takes a little while, so that some attempts are always in flight.
    made = ScriptedReceiver(script, delay_s=0.05)
    yield made
    made.close()


def final_states(client: redis.Redis, ids: list[str]) -> dict[str, str | None]:
    rows = records_fields(client, KEYS, ids, ("state",))
    return {job_id: state for job_id, (state,) in zip(ids, rows, strict=True)}


def outage_signs(log: str) -> int:
    return sum(log.count(sign) for sign in OUTAGE_SIGNS)


def all_final(client: redis.Redis, ids: list[str]) -> dict[str, str | None] | None:
    states = final_states(client, ids)
    return states if all(state in FINAL_STATES for state in states.values()) else None


@pytest.mark.parametrize("kill", [False, True], ids=["graceful", "sigkill"])
def test_no_job_lost_when_redis_restarts_while_retries_are_pending(
    stack: Stack, receiver: ScriptedReceiver, kill: bool
) -> None:
    env = {"MAX_RETRIES": str(MAX_RETRIES), "RETRY_MIN_BACKOFF_MS": "200", "RETRY_MAX_BACKOFF_MS": "1500"}
    _, base = stack.api(**env)
    worker = stack.worker(processes=2, threads=4, **env)
    jobs = [
        {"jobName": "webhookJob", "data": {"url": receiver.url.replace("/hook", "/broken" if n % 2 else "/ok")}}
        for n in range(JOBS)
    ]
    for job in jobs:
        job["data"]["payload"] = {"n": 1}
    response = httpx.post(base + "/enqueue/batch", json={"jobs": jobs}, headers={"x-api-key": stack.api_key})
    assert response.status_code == 202, response.text
    ids: list[str] = response.json()["jobIds"]
    broken = {job_id for n, job_id in enumerate(ids) if n % 2}

    # Blink 1, at a random moment while a third of the jobs are between attempts (their retries
    # on the delayed queue) and others run, schedule their retries or are being acked.
    client = stack.redis.client()
    wait_until(
        lambda: sum(state == RETRYING for state in final_states(client, ids).values()) >= JOBS // 3,
        timeout=20,
        message="a third of the jobs awaiting a retry",
    )
    client.close()
    blinks = [time.monotonic()]
    stack.redis.restart(kill=kill)
    blinks[0] = time.monotonic() - blinks[0]

    # Blink 2, with attempts held in flight at the receiver when Redis goes: they fail while it
    # is down, so their retries must be scheduled against a dead Redis (dramatiq PR #545).
    signs_before = outage_signs(worker.log())
    receiver.hold()
    wait_until(lambda: receiver.waiting >= 3, timeout=15, message="attempts in flight")
    blinks.append(time.monotonic())
    stack.redis.stop(kill=kill)
    receiver.release()
    wait_until(lambda: outage_signs(worker.log()) > signs_before, timeout=15, message="a job to end in the outage")
    stack.redis.start()
    blinks[1] = time.monotonic() - blinks[1]
    blink_s = sum(blinks)

    client = stack.redis.client()
    try:
        states = wait_until(lambda: all_final(client, ids), timeout=45, message="every job to reach a final state")
    except TimeoutError:
        states = final_states(client, ids)
        print("states at the deadline:", {k: v for k, v in states.items() if v not in FINAL_STATES})
        raise
    finally:
        succeeded = sorted(j for j, s in final_states(client, ids).items() if s == SUCCEEDED)
        failed = sorted(j for j, s in final_states(client, ids).items() if s == FAILED)
        missing = sorted(set(ids) - set(succeeded) - set(failed))
        print(
            f"ledger ({'sigkill' if kill else 'graceful'} restarts, Redis down {blink_s:.2f}s in all): "
            f"accepted={len(ids)} succeeded={len(succeeded)} failed={len(failed)} missing={missing}"
        )

    assert worker.alive(), "the worker must reconnect on its own, not die"
    assert {job_id for job_id, state in states.items() if state == FAILED} == broken
    for job_id in ids:
        record = record_fields(client, KEYS, job_id)
        statuses = receiver.statuses(job_id)
        if job_id in broken:
            assert int(record["attempts"]) == 1 + MAX_RETRIES, (job_id, record)
            assert client.exists(KEYS.failed_job_compat(job_id))
        else:
            assert statuses[-1] == 200, (job_id, statuses)
    # At rest nothing is left behind: no queued, running or retrying index entries, no message
    # on a queue, delayed or fetched but never acknowledged.
    for state in (QUEUED, RUNNING, RETRYING):
        assert client.zcard(KEYS.state_index(state)) == 0, state
    for queue in ("default", "default.DQ"):
        assert client.llen(KEYS.queue(queue)) == 0, queue
        assert client.hlen(KEYS.queue_messages(queue)) == 0, queue
    leftover_acks = [key for key in client.scan_iter(KEYS.acks_prefix() + "*") if client.scard(key)]
    assert leftover_acks == []
    client.close()
