"""Retention per final state and caps on the records kept (app/outcomes/log.py `for_settings`,
`trimmed`, app/connection/lua/trim_state.lua; app/outcomes/cleanup.py), on a real redis-server."""

from __future__ import annotations

import redis

from app.keys import Keys
from app.outcomes import cleanup
from app.outcomes.log import OutcomeLog
from app.outcomes.record import FAILED, SUCCEEDED
from app.settings import Settings

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
    """A job's record as a finished job leaves it, then the cap's trim, in one transaction."""
    client.hset(KEYS.job(job_id), mapping={"jobId": job_id, "jobName": "webhookJob", "queue": "default"})
    if state == SUCCEEDED:
        commands = [
            LOG.succeeded(job_id=job_id, job_name="webhookJob", duration_ms=1, at_ms=at_ms, attempt=1),
            *LOG.trimmed(SUCCEEDED),
        ]
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


def test_a_cap_keeps_the_newest_records_of_a_state_and_removes_the_rest_whole(redis_client: redis.Redis) -> None:
    for n in range(5):
        finish(redis_client, f"ok{n}", SUCCEEDED, AT + n)
    assert redis_client.ttl(KEYS.job("ok4")) <= 86_400
    kept = [member.decode() for member in redis_client.zrange(KEYS.state_index(SUCCEEDED), 0, -1)]
    assert kept == ["ok2", "ok3", "ok4"]
    for gone in ("ok0", "ok1"):
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
    assert redis_client.exists(KEYS.job("ok2"), KEYS.job("bad2")) == 2


def test_cleanup_removes_each_state_past_its_own_retention(redis_client: redis.Redis) -> None:
    now = AT + 3 * 86_400_000  # three days later
    finish(redis_client, "old-ok", SUCCEEDED, AT)  # past the 1-day retention of succeeded jobs
    finish(redis_client, "old-bad", FAILED, AT)  # within the 7 days of failed ones
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
    assert report.records == 1
    assert not redis_client.exists(KEYS.job("old-ok")) and redis_client.exists(KEYS.job("old-bad"))
    assert redis_client.zscore(KEYS.dead_letters("default"), "dl-old-bad") is not None
