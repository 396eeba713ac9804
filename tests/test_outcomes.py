"""Every state change of a job is recorded in Redis: real API and worker processes, a private Redis."""

from __future__ import annotations

import shutil
import subprocess
from typing import Any

import pytest
import redis

from app.keys import Keys
from app.outcomes import packed
from app.outcomes.record import FINAL_STATES, HISTORY_TRACEBACK_CHARS, MAX_TRACEBACK_CHARS, STATES, now_ms
from tests.support.receivers import fail_first
from tests.support.redis_state import record_fields
from tests.support.services import Stack, wait_until

pytestmark = pytest.mark.slow

KEYS = Keys()


def indexes_of(client: redis.Redis, job_id: str, job_name: str) -> set[str]:
    """The states whose indexes (global and per job type) hold the job; both must agree. A job that
    succeeded is in no index: its packed record stands for `succeeded` here (app/outcomes/packed.py)."""
    found = {"succeeded"} if client.hexists(packed.bucket_key(KEYS, job_id), job_id) else set()
    for state in STATES:
        in_global = client.zscore(KEYS.state_index(state), job_id) is not None
        in_named = client.zscore(KEYS.state_index(state, job_name), job_id) is not None
        assert in_global == in_named, f"{state} indexes disagree for {job_id}"
        if in_global:
            found.add(state)
    return found


def record_field(client: redis.Redis, job_id: str, name: str) -> str | None:
    return record_fields(client, KEYS, job_id).get(name)


def hgetall_with_redis_cli(port: int, key: str, client: redis.Redis) -> dict[str, str]:
    """A hash as `redis-cli hgetall` prints it (through the client where redis-cli is missing)."""
    cli = shutil.which("redis-cli")
    if cli is None:
        return {k.decode(): v.decode() for k, v in client.hgetall(key).items()}
    lines = subprocess.run(
        [cli, "-p", str(port), "hgetall", key], capture_output=True, text=True, timeout=10, check=True
    ).stdout.splitlines()
    return dict(zip(lines[::2], lines[1::2], strict=True))


def test_queued_running_retrying_succeeded_with_attempt_counts(
    stack: Stack, receivers: Any, redis_client: redis.Redis
) -> None:
    receiver = receivers(fail_first(2))
    receiver.hold()
    _, base = stack.api()
    api = stack.client(base)
    job_id = api.enqueue("webhookJob", {"url": receiver.url, "payload": {"n": 1}})
    delayed_id = api.enqueue("webhookJob", {"url": receiver.url, "payload": {"n": 2}}, delayMs=60_000)

    # queued, before any worker runs: both the immediate and the delayed job.
    queued = api.job(job_id)
    assert queued["state"] == "queued" and queued["attempts"] == 0 and queued["maxRetries"] == 5
    assert queued["enqueuedAt"] and queued["startedAt"] is None and queued["runAt"] is None
    delayed = api.job(delayed_id)
    assert delayed["state"] == "queued"
    assert delayed["runAt"] == delayed["enqueuedAt"] + 60_000
    assert indexes_of(redis_client, job_id, "webhookJob") == {"queued"}
    assert indexes_of(redis_client, delayed_id, "webhookJob") == {"queued"}

    stack.worker(threads=2, RETRY_MIN_BACKOFF_MS="600", RETRY_MAX_BACKOFF_MS="3000")
    for attempt in (1, 2, 3):
        # running: the request is held at the receiver, so the attempt is in progress.
        wait_until(lambda: receiver.waiting == 1, timeout=20, message=f"attempt {attempt} to reach the receiver")
        running = api.job(job_id)
        assert running["state"] == "running" and running["attempts"] == attempt, running
        assert running["executions"] == attempt and running["nextRetryAt"] is None
        assert running["startedAt"] >= queued["enqueuedAt"]
        # The worker process running it (host:pid); the attempts before it in its history.
        host, _, pid = running["worker"].rpartition(":")
        assert host and pid.isdigit(), running["worker"]
        assert len(running["history"] or []) == attempt - 1
        assert indexes_of(redis_client, job_id, "webhookJob") == {"running"}
        receiver.release()
        receiver.hold()
        if attempt == 3:
            break
        # retrying: error, short traceback and when the next attempt is due.
        retrying = wait_until(
            lambda: (r := api.job(job_id))["state"] == "retrying" and r, timeout=10, message="retrying"
        )
        assert retrying["attempts"] == attempt
        assert retrying["error"] == "WebhookError: receiver answered 500; will retry"
        assert retrying["finishedAt"] >= retrying["startedAt"]
        # Backoff n is 600 ms * 2**n * U(1, 2), capped at 3 s.
        due_in = retrying["nextRetryAt"] - retrying["finishedAt"]
        assert 600 * 2 ** (attempt - 1) - 50 <= due_in <= min(1200 * 2 ** (attempt - 1), 3000) + 500, due_in
        trace = record_field(redis_client, job_id, "traceback")
        assert trace and "WebhookError: receiver answered 500" in trace and len(trace) <= MAX_TRACEBACK_CHARS
        assert indexes_of(redis_client, job_id, "webhookJob") == {"retrying"}
        # The attempt just failed is the history's last entry, written with its retrying.
        last = retrying["history"][-1]
        assert len(retrying["history"]) == attempt and last["attempt"] == attempt
        assert (last["startedAt"], last["finishedAt"], last["worker"]) == (
            retrying["startedAt"], retrying["finishedAt"], retrying["worker"],
        )  # fmt: skip

    receiver.release()
    done = wait_until(lambda: (r := api.job(job_id))["state"] == "succeeded" and r, timeout=10, message="succeeded")
    assert done["attempts"] == 3 and done["executions"] == 3 and done["nextRetryAt"] is None
    assert done["durationMs"] is not None and 0 <= done["durationMs"] <= done["finishedAt"] - done["startedAt"] + 5
    assert done["finishedAt"] >= done["startedAt"] >= done["enqueuedAt"]
    assert receiver.statuses(job_id) == [500, 500, 200]
    # GET /jobs/{id}: the two failed attempts, each with its error, traceback and worker (the
    # success is the record's own fields).
    history = done["history"]
    assert [entry["attempt"] for entry in history] == [1, 2]
    for entry in history:
        assert entry["error"] == "WebhookError: receiver answered 500; will retry"
        assert "WebhookError" in entry["traceback"] and len(entry["traceback"]) <= HISTORY_TRACEBACK_CHARS
        assert entry["worker"] == done["worker"]
        assert entry["startedAt"] <= entry["finishedAt"] and entry["durationMs"] >= 0
    assert history[0]["finishedAt"] <= history[1]["startedAt"] and history[1]["finishedAt"] <= done["startedAt"]
    assert indexes_of(redis_client, job_id, "webhookJob") == {"succeeded"}
    # The job's own record is the only one written: no failedJobs entry for a success.
    assert not redis_client.exists(KEYS.failed_job_compat(job_id))
    # The delayed job is still waiting for its time.
    assert api.job(delayed_id)["state"] == "queued" and receiver.count(delayed_id) == 0


def test_delayed_job_is_queued_until_due_then_runs(stack: Stack, receivers: Any, redis_client: redis.Redis) -> None:
    receiver = receivers(fail_first(0))
    _, base = stack.api()
    api = stack.client(base)
    stack.worker(threads=2)
    job_id = api.enqueue("webhookJob", {"url": receiver.url, "payload": {}}, delayMs=1500)
    record = api.job(job_id)
    assert record["state"] == "queued" and record["runAt"] == record["enqueuedAt"] + 1500
    done = wait_until(lambda: (r := api.job(job_id))["state"] == "succeeded" and r, timeout=15, message="succeeded")
    assert done["startedAt"] >= record["runAt"]
    assert done["attempts"] == 1 and done["runAt"] is None
    assert indexes_of(redis_client, job_id, "webhookJob") == {"succeeded"}


def test_failed_after_retries_and_permanent_error_are_dead_lettered_and_readable(
    stack: Stack, receivers: Any, redis_client: redis.Redis
) -> None:
    always_500 = receivers(fail_first(1_000))
    gone = receivers(fail_first(1_000, status=404))
    _, base = stack.api(MAX_RETRIES="1")
    api = stack.client(base)
    stack.worker(threads=2, MAX_RETRIES="1")
    retried = api.enqueue("webhookJob", {"url": always_500.url, "payload": {"order": 7}})
    permanent = api.enqueue("webhookJob", {"url": gone.url, "payload": {}})

    for job_id, attempts, error in ((retried, 2, "500"), (permanent, 1, "404")):
        record = wait_until(lambda j=job_id: (r := api.job(j))["state"] == "failed" and r, timeout=20, message="failed")
        assert record["attempts"] == attempts and record["maxRetries"] == 1, record
        assert error in record["error"] and record["nextRetryAt"] is None and record["finishedAt"]
        assert indexes_of(redis_client, job_id, "webhookJob") == {"failed"}
        # Dead-lettered in Dramatiq's own dead-letter queue too.
        dead_letter = record_field(redis_client, job_id, "deadLetterId")
        assert dead_letter and redis_client.zscore(KEYS.dead_letters("default"), dead_letter) is not None

    assert always_500.count(retried) == 2 and gone.count(permanent) == 1
    # Compatible with the original system: `redis-cli hgetall failedJobs:<jobId>`.
    failed = hgetall_with_redis_cli(stack.redis.port, KEYS.failed_job_compat(retried), redis_client)
    assert failed["jobId"] == retried and failed["jobName"] == "webhookJob"
    assert '"order":7' in failed["data"] and always_500.url in failed["data"]
    assert "500" in failed["error"] and failed["attempts"] == "2"
    assert failed["time"].endswith("Z") and abs(int(failed["failedAt"]) - now_ms()) < 60_000
    # Records and failedJobs entries expire after the retention even if cleanup never runs.
    for key in (KEYS.job(retried), KEYS.failed_job_compat(retried)):
        assert 0 < redis_client.ttl(key) <= 7 * 86_400


def test_periodic_run_too_late_is_recorded_as_skipped(stack: Stack, redis_client: redis.Redis) -> None:
    from tests.support.periodic import send_periodic

    # A job type declared `periodic=` (schedules.toml's schedules enqueue ordinary jobs instead).
    periodic = {"JOB_MODULES": "tests.support.periodic_jobs"}
    _, base = stack.api(**periodic)
    api = stack.client(base)
    stack.worker(threads=2, **periodic)
    job_id = send_periodic(redis_client, "periodicJob", late_by_s=24 * 3600, max_retries=0)
    record = wait_until(lambda: (r := api.job(job_id))["state"] in FINAL_STATES and r, message="a final state")
    assert record["state"] == "skipped" and record["attempts"] == 0, record
    assert "too late" in record["error"]
    assert indexes_of(redis_client, job_id, "periodicJob") == {"skipped"}


def test_unknown_job_is_404(stack: Stack) -> None:
    _, base = stack.api()
    api = stack.client(base)
    for job_id in ("0123456789abcdef0123456789abcdef", "no-such-job"):
        response = api.http.get(f"/jobs/{job_id}")
        assert response.status_code == 404 and "no job" in response.json()["error"]
