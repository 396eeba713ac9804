"""Commands as tuples (app/connection/commands.py): coalesced into fewer with the same effect,
and packed in the Redis protocol."""

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
from app.outcomes.log import ENQUEUE_SCRIPT, OutcomeLog
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

    one_by_one, together = fakeredis.FakeRedis(), fakeredis.FakeRedis()
    assert run_multi(one_by_one, calls) == [1] * len(items)
    assert run_multi(together, merged) == [len(items)]
    assert dump(together) == dump(one_by_one)


def test_coalesced_commands_have_the_same_effect_in_far_fewer_commands() -> None:
    """Single-key commands (here the record rewrites of 50 requeued jobs of two job types, and
    counts): each key's commands merged, counts of one field summed."""
    commands: list[Command] = []
    for n in range(50):
        commands += LOG.requeued(
            job_id=f"job-{n}",
            job_name=("emailJob", "webhookJob")[n % 2],
            queue="default",
            max_retries=5,
            data_json=f'{{"n":{n}}}',
            at_ms=AT + n,
        )
    commands += [("HINCRBY", "counts", "a", 1), ("HINCRBY", "counts", "b", 2), ("HINCRBY", "counts", "a", 3)]
    merged = coalesce(commands)
    # Each record keeps its HDEL, HINCRBY, HSET and EXPIRE; each index (4 states left and the
    # queued one, global and per job type) takes one ZREM or ZADD; the counts one HINCRBY a field.
    assert len(merged) == 50 * 4 + 4 * 3 + 3 + 2 and len(merged) < len(commands) / 3
    assert ("HINCRBY", "counts", "a", 4) in merged and ("HINCRBY", "counts", "b", 2) in merged

    original, coalesced = fakeredis.FakeRedis(), fakeredis.FakeRedis()
    for client in (original, coalesced):  # the requeued jobs had failed before
        for n in range(50):
            client.hset(KEYS.job(f"job-{n}"), mapping={"state": "failed", "requeues": 2, "finishedAt": 5})
            client.zadd(KEYS.state_index("failed"), {f"job-{n}": n})
            client.zadd(KEYS.state_index("failed", ("emailJob", "webhookJob")[n % 2]), {f"job-{n}": n})
    run_multi(original, commands)
    run_multi(coalesced, merged)
    assert dump(coalesced) == dump(original)


def test_coalesce_leaves_scripts_and_multi_key_commands_alone() -> None:
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
