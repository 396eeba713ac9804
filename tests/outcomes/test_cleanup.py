"""Retention cleanup: only what is older than the retention goes, in bounded batches; runs are
recorded and catch up; records expire on their own (a succeeded job's with its bucket, which
cleanup then takes off the bucket list: app/outcomes/packed.py); the daily schedule is listed, a
late tick runs, and runs on demand (API and `python -m app.outcomes.cleanup`)."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from collections.abc import Iterable, Iterator
from typing import Any

import dramatiq
import pytest
import redis

from app.broker.enqueue import Enqueuer
from app.connection.commands import Command
from app.job_ids import new_job_id
from app.jobs import JobRegistry
from app.keys import Keys
from app.outcomes import cleanup, packed
from app.outcomes.log import OutcomeLog
from app.outcomes.record import STATES, now_ms
from app.settings import Settings
from tests.support.periodic import send_periodic
from tests.support.services import ROOT, Stack, wait_until

KEYS = Keys()
DAY_MS = 86_400_000
RETENTION_S = 7 * 86_400
NAMES = ["emailJob", "webhookJob", "cleanupJob"]


class CountingClient:
    """A redis client that records the size of every index read and of every pipeline."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.reads: list[int] = []
        self.pipelines: list[int] = []

    def zrangebyscore(self, *args: Any, **kwargs: Any) -> Any:
        found = self.client.zrangebyscore(*args, **kwargs)
        self.reads.append(len(found))
        return found

    def pipeline(self, transaction: bool = True) -> Any:
        pipe = self.client.pipeline(transaction=transaction)
        execute = pipe.execute

        def counted(raise_on_error: bool = True) -> Any:
            self.pipelines.append(len(pipe.command_stack))
            return execute(raise_on_error)

        pipe.execute = counted  # type: ignore[method-assign]
        return pipe

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)


ENQUEUER = Enqueuer(
    registry=JobRegistry(),
    keys=KEYS,
    log=OutcomeLog(keys=KEYS, retention_seconds=RETENTION_S),
    settings=Settings(max_retries=1),
)


def finished_job(job_id: str, at_ms: int, state: str = "succeeded", job_name: str = "emailJob") -> list[Command]:
    """The commands of a job enqueued, fetched and acked by a worker (its message leaves the
    queue: no worker of a test runs it again), run and finished (succeeded or failed) at `at_ms`."""
    log = ENQUEUER.log
    ids = {"job_id": job_id, "job_name": job_name}
    message = dramatiq.Message(
        queue_name="default", actor_name=job_name, args=(job_id, {}), kwargs={}, options={}, message_id=job_id
    )
    stored, enqueue = ENQUEUER.commands(message, None, at_ms=at_ms - 20)
    redis_id = stored.options["redis_message_id"]
    commands = [
        *enqueue,
        ("LREM", KEYS.queue("default"), 0, redis_id),
        ("HDEL", KEYS.queue_messages("default"), redis_id),
        log.running(queue="default", attempt=1, at_ms=at_ms - 10, **ids),
    ]
    if state == "succeeded":
        commands.append(log.succeeded(duration_ms=10, at_ms=at_ms, **ids))
    else:
        commands += log.failed(
            queue="default",
            error="E",
            traceback="",
            attempts=1,
            data_json="{}",
            dead_letter_id=f"dl-{job_id}",
            duration_ms=10,
            at_ms=at_ms,
            **ids,
        )
        commands += [
            ("ZADD", KEYS.dead_letters("default"), at_ms, f"dl-{job_id}"),
            ("HSET", KEYS.dead_letter_messages("default"), f"dl-{job_id}", "{}"),
        ]
    return commands


def seed(client: redis.Redis, jobs: dict[str, tuple[int, str]]) -> None:
    """Write jobs {jobId: (finished at, state)}, as the workers would have at those times."""
    with client.pipeline() as pipeline:
        for n, (job_id, (at_ms, state)) in enumerate(jobs.items()):
            for command in finished_job(job_id, at_ms, state, job_name=NAMES[n % 2]):
                pipeline.execute_command(*command)
        pipeline.execute()


def present(client: redis.Redis, job_id: str) -> dict[str, bool]:
    """Where a job still appears: its record (a hash), its packed record (once it succeeded),
    failedJobs entry, any index, its dead letter."""
    indexes = [KEYS.state_index(state, name) for state in (*STATES, "all") for name in (None, *NAMES)]
    return {
        "record": bool(client.exists(KEYS.job(job_id))),
        "packed": bool(client.hexists(packed.bucket_key(KEYS, job_id), job_id)),
        "failedJobs": bool(client.exists(KEYS.failed_job_compat(job_id))),
        "index": any(client.zscore(index, job_id) is not None for index in indexes),
        "deadLetter": client.zscore(KEYS.dead_letters("default"), f"dl-{job_id}") is not None,
    }


def finished_jobs(now: int, days: int, count: int) -> dict[str, tuple[int, str]]:
    """`count` jobs finished `days` ago (a millisecond apart), every third succeeded, the others
    failed; their ids made when they were enqueued (a succeeded one's bucket is that second)."""
    at = [now - days * DAY_MS - n for n in range(count)]
    return {new_job_id(at_ms=at[n] - 20): (at[n], "failed" if n % 3 else "succeeded") for n in range(count)}


def expire_buckets(client: redis.Redis, job_ids: Iterable[str]) -> None:
    """The buckets of these succeeded jobs expire, as they would have retention after their write
    (the test wrote them just now, for jobs that finished days ago)."""
    buckets = {packed.bucket_key(KEYS, job_id) for job_id in job_ids}
    for bucket in buckets:
        client.pexpire(bucket, 1)
    wait_until(lambda: not client.exists(*buckets), timeout=5, message="the buckets to expire")


def run(client: Any, *, at_ms: int, batch_size: int = 500, retention_s: int = RETENTION_S) -> cleanup.CleanupReport:
    return cleanup.run(
        client,
        KEYS,
        job_names=NAMES,
        queues=["default"],
        retention_seconds=retention_s,
        batch_size=batch_size,
        at_ms=at_ms,
    )


def test_removes_only_what_is_older_than_the_retention_in_bounded_batches(redis_client: redis.Redis) -> None:
    now = now_ms()
    old, new = finished_jobs(now, 8, 40), finished_jobs(now, 6, 10)
    seed(redis_client, {**old, **new})
    old_succeeded = [job_id for job_id, (_, state) in old.items() if state == "succeeded"]
    expire_buckets(redis_client, old_succeeded)
    counting = CountingClient(redis_client)

    report = run(counting, at_ms=now, batch_size=7)

    for job_id in old:
        assert not any(present(redis_client, job_id).values()), job_id
    for job_id, (_, state) in new.items():
        assert present(redis_client, job_id) == {
            "record": state == "failed",
            "packed": state == "succeeded",  # packed, in no index
            "failedJobs": state == "failed",
            "index": state == "failed",
            "deadLetter": state == "failed",
        }, job_id
    old_failed = len(old) - len(old_succeeded)
    assert old_failed == 26 and report.records == old_failed and report.dead_letters == old_failed
    # Index entries: the state index and "all", each global and per job type.
    assert report.index_entries == old_failed * 4
    # The expired buckets of the old successes: off the bucket list, out of the count.
    assert report.expired_succeeded == len(old_succeeded)
    new_succeeded = len(new) - sum(1 for _, state in new.values() if state == "failed")
    assert int(redis_client.hget(KEYS.succeeded_sizes(), packed.TOTAL_FIELD) or 0) == new_succeeded
    listed = {int(b) for b in redis_client.zrange(KEYS.succeeded_buckets(), 0, -1)}
    assert listed == {packed.bucket_of(job_id) for job_id, (_, state) in new.items() if state == "succeeded"}
    # Bounded: never more than a batch read at once, nor more than a batch's deletes in a pipeline.
    assert counting.reads and max(counting.reads) <= 7
    assert counting.pipelines and max(counting.pipelines) <= 1 + 7
    status = redis_client.hgetall(KEYS.cleanup_status())
    assert int(status[b"lastRunAt"]) == now and int(status[b"retentionSeconds"]) == RETENTION_S
    assert int(status[b"removedRecords"]) == old_failed and int(status[b"removedDeadLetters"]) == old_failed
    assert int(status[b"removedIndexEntries"]) == old_failed * 4 and int(status[b"durationMs"]) >= 0
    assert int(status[b"expiredSucceeded"]) == len(old_succeeded)

    # Nothing more to do: a second run removes nothing and records that too.
    again = run(redis_client, at_ms=now + 1)
    assert (again.records, again.index_entries, again.dead_letters, again.expired_succeeded) == (0, 0, 0, 0)
    assert int(redis_client.hget(KEYS.cleanup_status(), "lastRunAt") or 0) == now + 1


def test_a_run_after_missed_ones_catches_up(redis_client: redis.Redis) -> None:
    now = now_ms()
    ages = {"d1": 1, "d3": 3, "d5": 5, "d9": 9, "d12": 12}
    seed(redis_client, {job_id: (now - days * DAY_MS, "failed") for job_id, days in ages.items()})
    assert run(redis_client, at_ms=now).records == 2  # d9 and d12
    # The daily runs of the next three days were missed: the next one removes all that aged past
    # the retention meanwhile (d5, now 8 days old), nothing younger.
    report = run(redis_client, at_ms=now + 3 * DAY_MS)
    assert report.records == 1 and report.dead_letters == 1
    assert [job_id for job_id in ages if present(redis_client, job_id)["record"]] == ["d1", "d3"]


@pytest.mark.slow
def test_records_and_failed_jobs_expire_by_ttl_even_without_cleanup(stack: Stack, redis_client: redis.Redis) -> None:
    from tests.support.receivers import ScriptedReceiver, fail_first

    receiver = ScriptedReceiver(fail_first(1_000))
    try:
        env = {"LOG_RETENTION_SECONDS": "2", "MAX_RETRIES": "0"}
        _, base = stack.api(**env)
        stack.worker(threads=2, **env)
        api = stack.client(base)
        ok = api.enqueue("emailJob", {"email": "ttl@example.com"})
        bad = api.enqueue("webhookJob", {"url": receiver.url, "payload": {}})
        wait_until(lambda: api.state(ok) == "succeeded" and api.state(bad) == "failed", message="final states")
        # The success is packed into its bucket, which expires like a record does.
        bucket = packed.bucket_key(KEYS, ok)
        assert not redis_client.exists(KEYS.job(ok)) and redis_client.hexists(bucket, ok)
        for key in (bucket, KEYS.job(bad), KEYS.failed_job_compat(bad)):
            assert 0 < redis_client.ttl(key) <= 2, key
        wait_until(
            lambda: not redis_client.exists(bucket, KEYS.job(bad), KEYS.failed_job_compat(bad)),
            timeout=10,
            message="the records to expire",
        )
        assert api.http.get(f"/jobs/{ok}").status_code == 404
        # Index entries outlive their records until cleanup, and so does an expired bucket's place
        # on the bucket list; listings pass over them. (A success left every index.)
        assert redis_client.zscore(KEYS.all_index(), bad) is not None
        assert redis_client.zscore(KEYS.all_index(), ok) is None
        assert redis_client.zscore(KEYS.succeeded_buckets(), packed.bucket_of(ok)) is not None
        assert api.http.get("/jobs").json() == {"jobs": [], "nextCursor": None}
    finally:
        receiver.close()


@pytest.mark.slow
def test_cleanup_job_on_demand_and_a_late_periodic_tick_both_run(stack: Stack, redis_client: redis.Redis) -> None:
    now = now_ms()
    seed(redis_client, {"ancient-1": (now - 30 * DAY_MS, "failed"), "recent-1": (now - DAY_MS, "failed")})
    _, base = stack.api()
    stack.worker(threads=2)
    api = stack.client(base)

    # On demand, through the API (README: curl -X POST .../enqueue -d '{"jobName":"cleanupJob","data":{}}').
    job_id = api.enqueue("cleanupJob", {})
    wait_until(lambda: api.state(job_id) == "succeeded", message="the cleanup job to succeed")
    status = redis_client.hgetall(KEYS.cleanup_status())
    assert int(status[b"removedRecords"]) == 1 and int(status[b"removedDeadLetters"]) == 1
    assert not present(redis_client, "ancient-1")["record"] and present(redis_client, "recent-1")["record"]
    first_run = int(status[b"lastRunAt"])

    # A cleanup sent as periodiq sends a periodic actor's tick, processed 10 minutes late (a
    # backlog, a worker outage), still runs. (Its schedule, in schedules.toml, enqueues an ordinary
    # job, which periodiq never skips; periodiq's default skip_delay of 30 s would skip this one.)
    late = send_periodic(redis_client, "cleanupJob", late_by_s=600)
    wait_until(lambda: api.state(late) == "succeeded", message="the late periodic cleanup to run")
    assert int(redis_client.hget(KEYS.cleanup_status(), "lastRunAt") or 0) > first_run


@pytest.mark.slow
def test_cleanup_runs_once_from_the_command_line(stack: Stack, redis_client: redis.Redis) -> None:
    now = now_ms()
    ancient_ok, recent_ok = new_job_id(at_ms=now - 30 * DAY_MS), new_job_id(at_ms=now - DAY_MS)
    seed(
        redis_client,
        {
            "ancient-2": (now - 30 * DAY_MS, "failed"),
            ancient_ok: (now - 30 * DAY_MS, "succeeded"),
            recent_ok: (now - DAY_MS, "succeeded"),
        },
    )
    expire_buckets(redis_client, [ancient_ok])
    result = subprocess.run(
        [sys.executable, "-m", "app.outcomes.cleanup"],
        env=stack.env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["records"] == 1 and report["index_entries"] == 4 and report["dead_letters"] == 1
    assert report["expired_succeeded"] == 1
    assert not present(redis_client, "ancient-2")["record"] and present(redis_client, recent_ok)["packed"]
    assert redis_client.zscore(KEYS.succeeded_buckets(), packed.bucket_of(ancient_ok)) is None
    assert redis_client.hget(KEYS.cleanup_status(), "lastRunAt")
    down = subprocess.run(
        [sys.executable, "-m", "app.outcomes.cleanup"],
        env={**stack.env, "REDIS_URL": "redis://127.0.0.1:1/0"},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert down.returncode == 1 and "Redis is unavailable" in down.stderr and "Traceback" not in down.stderr


@pytest.fixture
def scheduler(stack: Stack) -> Iterator[Any]:
    service = stack.scheduler()
    yield service
    service.stop(timeout=10)


@pytest.mark.slow
def test_periodiq_schedules_cleanup_job_daily_and_stops_on_sigterm(scheduler: Any) -> None:
    wait_until(lambda: "cleanupJob" in scheduler.log(), timeout=30, message="periodiq to list cleanupJob")
    listing = scheduler.log()
    line = next(line for line in listing.splitlines() if "cleanupJob" in line)
    # The `cleanup` schedule of schedules.toml, and periodiq's listing of its actor.
    assert "schedule cleanup: cleanupJob {} at '@daily' (UTC), next run " in line, listing
    assert re.search(r"@daily \(UTC\) +app.scheduler:schedule:cleanup@default", listing), listing
    assert scheduler.alive()
    scheduler.signal(signal.SIGTERM)
    returncode = scheduler.wait(timeout=10)
    # periodiq installs no SIGTERM handler: the default action ends it at once, without a traceback.
    assert returncode in (0, -signal.SIGTERM), (returncode, scheduler.log())
    assert "Traceback" not in scheduler.log()


def test_periodic_messages_are_not_skipped_for_most_of_a_day() -> None:
    from app.worker import PERIODIC_SKIP_DELAY_S

    # Late runs still happen, and a run is never so late that it doubles the next day's.
    assert 3600 <= PERIODIC_SKIP_DELAY_S < 24 * 3600
