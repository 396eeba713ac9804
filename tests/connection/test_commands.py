"""Commands as tuples (app/connection/commands.py): block script calls merged into one with the
same effect, and packed in the Redis protocol."""

from __future__ import annotations

from typing import Any

import dramatiq
import fakeredis
import pytest
import redis

from app.broker.enqueue import Enqueuer
from app.connection.commands import Command, coalesce, pack
from app.jobs import JobRegistry
from app.keys import Keys
from app.outcomes.log import ENQUEUE_GROUP, ENQUEUE_JOB, ENQUEUE_SCRIPT, OutcomeLog
from app.settings import Settings
from tests.support.redis_state import dump, run_multi

KEYS = Keys()
LOG = OutcomeLog(keys=KEYS, retention_seconds=3600)
ENQUEUER = Enqueuer(registry=JobRegistry(), keys=KEYS, log=LOG, settings=Settings(max_retries=5))
AT = 1_700_000_000_000


def message(job_id: str, **options: Any) -> dramatiq.Message[Any]:
    return dramatiq.Message(
        queue_name="default", actor_name="emailJob", args=(job_id, {"n": job_id}), kwargs={}, options=options
    ).copy(message_id=job_id)


def test_new_jobs_enqueue_calls_merge_into_one_with_the_same_effect() -> None:
    """70 new jobs, one delayed: more than a wake-up list holds, so the merged call trims it as
    the calls one by one do."""
    items = [(message(f"job-{n}"), None) for n in range(70)] + [(message("late-1"), 60_000)]
    calls: list[Command] = []
    for sequence, (one, delay) in enumerate(items):
        calls += ENQUEUER.commands(one, delay, at_ms=AT, sequence=sequence)[1]
    assert len(calls) == len(items) and all(call[:2] == ("EVAL", ENQUEUE_SCRIPT) for call in calls)
    merged = coalesce(calls)
    assert len(merged) == 1
    # What the jobs of one group share goes once: two groups (the queue's list, its delay queue).
    assert sum(1 for value in merged[0][3:] if value == "g") == 2
    assert len(merged[0]) == 3 + 2 * ENQUEUE_GROUP + len(items) * ENQUEUE_JOB

    one_by_one, together = fakeredis.FakeRedis(), fakeredis.FakeRedis()
    assert run_multi(one_by_one, calls) == [1] * len(items)
    assert run_multi(together, merged) == [len(items)]
    assert dump(together) == dump(one_by_one)


def test_coalesce_merges_only_runs_of_one_block_script() -> None:
    commands: list[Command] = [("HSET", "h", "a", 1), ("DEL", "x", "y"), ("HSET", "h", "b", 2)]
    assert coalesce(commands) == commands
    commands = [("ZADD", "z", "NX", 1, "a"), ("ZADD", "z", "NX", 2, "b")]  # options: not merged
    assert coalesce(commands) == commands
    # A new job's call beside a requeue (whose message is put by another script): not merged.
    mixed = [
        *ENQUEUER.commands(message("new"), None, at_ms=AT)[1],
        *ENQUEUER.commands(message("again", requeue=True), None, at_ms=AT)[1],
    ]
    assert coalesce(mixed) == mixed


def test_pack_is_the_redis_protocol() -> None:
    commands: list[Command] = [("SET", "k", "é"), ("EVAL", "return 1", 0, b"\xff", 1.5, -3)]
    expected = b"".join(redis.connection.Connection().pack_commands(commands))
    assert pack(commands) == expected
    with pytest.raises(redis.DataError):
        pack([("SET", "k", None)])
