"""Retention per final state and caps on the records kept (app/outcomes/log.py `for_settings`,
`trimmed`, app/connection/lua/trim_state.lua; succeeded.lua for the packed succeeded records;
app/outcomes/cleanup.py), on a real redis-server."""

from __future__ import annotations

import redis

from app.job_ids import new_job_id
from app.keys import Keys
from app.outcomes import cleanup, packed
from app.outcomes.log import OutcomeLog
from app.outcomes.record import FAILED, SUCCEEDED
from app.settings import Settings
from tests.support.services import wait_until

KEYS = Keys()
AT = 1_700_000_000_000
SETTINGS = Settings(
    log_retention_seconds=7 * 86_400,
    succeeded_retention_seconds=86_400,
    max_succeeded_records=3,
    max_failed_records=2,
)
LOG = OutcomeLog.for_settings(KEYS, SETTINGS)


def finish(client: redis.Redis, job_id: str, state: str, at_ms: int) -> None:
    """A job's record as a finished job leaves it, then the cap's trim, in one transaction (a
    success keeps its cap itself: its write drops whole buckets)."""
    client.hset(KEYS.job(job_id), mapping={"jobId": job_id, "jobName": "webhookJob", "queue": "default"})
    if state == SUCCEEDED:
        commands = [LOG.succeeded(job_id=job_id, job_name="webhookJob", duration_ms=1, at_ms=at_ms, attempt=1)]
    else:
        dead_letter = f"dl-{job_id}"
        client.zadd(KEYS.dead_letters("default"), {dead_letter: at_ms})
        client.hset(KEYS.dead_letter_messages("default"), dead_letter, "{}")
        commands = LOG.failed(
            job_id=job_id, job_name="webhookJob", queue="default", error="E: boom", traceback="", attempts=1,
            data_json="{}", dead_letter_id=dead_letter, duration_ms=1, at_ms=at_ms,
        )  # fmt: skip
    client.zadd(KEYS.all_index(), {job_id: at_ms})
    client.zadd(KEYS.all_index("webhookJob"), {job_id: at_ms})
    with client.pipeline(transaction=True) as pipeline:
        for command in commands:
            pipeline.execute_command(*command)
        pipeline.execute()


def test_records_get_the_retention_of_their_final_state() -> None:
    assert LOG.retention_of(SUCCEEDED) == 86_400 and LOG.retention_of(FAILED) == 7 * 86_400
    assert OutcomeLog.for_settings(KEYS, Settings()).caps == {}
    assert OutcomeLog.for_settings(KEYS, Settings()).trimmed(SUCCEEDED) == []
    # Capped, a success needs no trim of its own (succeeded.lua drops whole buckets).
    assert LOG.caps[SUCCEEDED] == 3 and LOG.trimmed(SUCCEEDED) == []


def packed_ids(client: redis.Redis) -> list[str]:
    """The ids of the packed succeeded records, oldest first (their ids sort by time)."""
    buckets = [int(b) for b in client.zrange(KEYS.succeeded_buckets(), 0, -1)]
    return sorted(job_id.decode() for b in buckets for job_id in client.hkeys(KEYS.succeeded_bucket(b)))


def test_a_cap_keeps_the_newest_records_of_a_state_and_removes_the_rest_whole(redis_client: redis.Redis) -> None:
    # Succeeded records go by bucket (the second their id was made in): two in second 0, one in
    # second 1, two in second 2.
    ok = [new_job_id(at_ms=AT + second * 1_000 + n) for n, second in enumerate((0, 0, 1, 2, 2))]
    for n, job_id in enumerate(ok):
        finish(redis_client, job_id, SUCCEEDED, AT + 10_000 + n)
    assert 0 < redis_client.ttl(packed.bucket_key(KEYS, ok[4])) <= 86_400
    # The cap (3) held at each write: the fourth dropped second 0 whole; the oldest went, the newest stayed.
    assert packed_ids(redis_client) == ok[2:]
    assert [int(b) for b in redis_client.zrange(KEYS.succeeded_buckets(), 0, -1)] == [
        packed.bucket_of(job_id) for job_id in (ok[2], ok[3])
    ]
    assert not redis_client.exists(packed.bucket_key(KEYS, ok[0]))
    assert int(redis_client.hget(KEYS.succeeded_sizes(), packed.TOTAL_FIELD) or 0) == 3
    for gone in ok:
        assert not redis_client.exists(KEYS.job(gone))
        for index in (KEYS.state_index(SUCCEEDED, "webhookJob"), KEYS.all_index(), KEYS.all_index("webhookJob")):
            assert redis_client.zscore(index, gone) is None
    for n in range(4):
        finish(redis_client, f"bad{n}", FAILED, AT + n)
    assert [m.decode() for m in redis_client.zrange(KEYS.state_index(FAILED), 0, -1)] == ["bad2", "bad3"]
    # A failed record takes its failedJobs entry and dead letter along.
    assert not redis_client.exists(KEYS.failed_job_compat("bad0"))
    dead = [m.decode() for m in redis_client.zrange(KEYS.dead_letters("default"), 0, -1)]
    assert dead == ["dl-bad2", "dl-bad3"]
    assert sorted(redis_client.hkeys(KEYS.dead_letter_messages("default"))) == [b"dl-bad2", b"dl-bad3"]
    assert redis_client.hexists(packed.bucket_key(KEYS, ok[2]), ok[2]) and redis_client.exists(KEYS.job("bad2"))


def test_cleanup_removes_each_state_past_its_own_retention(redis_client: redis.Redis) -> None:
    now = AT + 3 * 86_400_000  # three days later
    old_ok = new_job_id(at_ms=AT)
    finish(redis_client, old_ok, SUCCEEDED, AT)  # past the 1-day retention of succeeded jobs
    finish(redis_client, "old-bad", FAILED, AT)  # within the 7 days of failed ones
    bucket = packed.bucket_key(KEYS, old_ok)
    # A success's bucket expires at the retention of succeeded jobs, a failure's record at its own.
    assert 0 < redis_client.ttl(bucket) <= 86_400 < redis_client.ttl(KEYS.job("old-bad")) <= 7 * 86_400
    redis_client.pexpire(bucket, 1)  # three days pass for it
    wait_until(lambda: not redis_client.exists(bucket), timeout=5, message="the bucket to expire")
    report = cleanup.run(
        redis_client,
        KEYS,
        job_names=["webhookJob"],
        queues=["default"],
        retention_seconds=SETTINGS.log_retention_seconds,
        batch_size=100,
        at_ms=now,
        state_retention=LOG.state_retention,
    )
    # The expired bucket is taken off the list and out of the count; the failed record stays.
    assert report.records == 0 and report.expired_succeeded == 1
    assert redis_client.zcard(KEYS.succeeded_buckets()) == 0
    assert int(redis_client.hget(KEYS.succeeded_sizes(), packed.TOTAL_FIELD) or 0) == 0
    assert redis_client.exists(KEYS.job("old-bad"))
    assert redis_client.zscore(KEYS.dead_letters("default"), "dl-old-bad") is not None
