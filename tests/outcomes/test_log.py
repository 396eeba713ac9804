"""The Lua forms of `running` and `succeeded` (what workers send) and of a new job's enqueue (what
the API and the producer send) do what their command lists do."""

from __future__ import annotations

from typing import Any

import dramatiq
import fakeredis
import pytest

from app.broker.enqueue import Enqueuer
from app.connection.commands import Command, coalesce
from app.jobs import JobRegistry
from app.keys import Keys
from app.outcomes.log import OutcomeLog
from app.settings import Settings
from tests.connection.test_batching import dump, run_multi

KEYS = Keys()
LISTS = OutcomeLog(keys=KEYS, retention_seconds=3600)
SCRIPTS = OutcomeLog(keys=KEYS, retention_seconds=3600, scripts=True)
IDS = {"job_id": "j1", "job_name": "webhookJob"}


def seeded(state: str) -> fakeredis.FakeRedis:
    """A record in `state`, listed in that state's indexes, with fields a transition must clear."""
    client = fakeredis.FakeRedis()
    client.hset(KEYS.job("j1"), mapping={"state": state, "attempts": 1, "runAt": 5, "nextRetryAt": 6, "executions": 1})
    for index in (KEYS.state_index(state), KEYS.state_index(state, "webhookJob")):
        client.zadd(index, {"j1": 1})
    return client


def run(client: fakeredis.FakeRedis, commands: list[Command]) -> Any:
    run_multi(client, commands)
    return client


# (Attempt 1 of a job whose record shows attempt 1 succeeded: see the test after next.)
@pytest.mark.parametrize(("state", "attempt"), [("queued", 1), ("queued", 2), ("retrying", 2), ("running", 1),
                                                ("running", 2), ("succeeded", 2)])  # fmt: skip
def test_running_script_matches_its_commands(state: str, attempt: int) -> None:
    args = {"queue": "default", "attempt": attempt, "at_ms": 1_700_000_000_123, **IDS}
    with_lists, with_script = seeded(state), seeded(state)
    run(with_lists, LISTS.running(**args))
    (script,) = SCRIPTS.running(**args)
    deliveries = with_script.execute_command(*script)
    assert dump(with_script) == dump(with_lists)
    assert deliveries == int(with_lists.hget(KEYS.job("j1"), "deliveries"))


@pytest.mark.parametrize("attempt", [None, 3])
@pytest.mark.parametrize(("state", "started"), [("running", False), ("queued", False), ("retrying", False),
                                                ("running", True)])  # fmt: skip
def test_succeeded_script_matches_its_commands(state: str, started: bool, attempt: int | None) -> None:
    args = {"duration_ms": 12, "at_ms": 1_700_000_000_456, "attempt": attempt, "started": started, **IDS}
    with_lists, with_script = seeded(state), seeded(state)
    run(with_lists, LISTS.succeeded(**args))
    run(with_script, SCRIPTS.succeeded(**args))
    assert dump(with_script) == dump(with_lists)


@pytest.mark.parametrize("jobs", [70, 1_500])
def test_enqueue_script_matches_its_commands(monkeypatch: pytest.MonkeyPatch, jobs: int) -> None:
    """New jobs, delayed or not, of two job types: one merged ENQUEUE_SCRIPT call leaves what
    their coalesced command lists leave (wake-up tokens included; 1,500 jobs write in chunks)."""
    enqueuer = Enqueuer(registry=JobRegistry(), keys=KEYS, log=LISTS, settings=Settings(max_retries=5))
    items = [(new_message(f"job-{n}", "emailJob"), None) for n in range(jobs)]
    items += [(new_message("late", "webhookJob"), 60_000), (new_message("hook", "webhookJob"), None)]
    with_lists, with_script = fakeredis.FakeRedis(), fakeredis.FakeRedis()
    lists: list[Command] = []
    scripts: list[Command] = []
    # The same redis id both ways (it is random, and names the stored message): each one twice.
    redis_ids = iter([f"r-{n // 2}" for n in range(2 * len(items))])
    monkeypatch.setattr("app.broker.enqueue.new_redis_id", lambda: next(redis_ids))
    for sequence, (message, delay) in enumerate(items):
        lists += enqueuer.commands(message, delay, at_ms=1_700_000_000_000, sequence=sequence)[1]
        scripts += enqueuer.commands(message, delay, at_ms=1_700_000_000_000, sequence=sequence, as_script=True)[1]
    (merged,) = coalesce(scripts)
    run(with_lists, coalesce(lists))
    assert with_script.execute_command(*merged) == len(items)
    assert dump(with_script) == dump(with_lists)


def test_requeued_and_moved_messages_keep_their_command_lists() -> None:
    """Only new jobs take the script: a requeue or a delayed message moved to its queue also
    changes an existing record, which the command lists do."""
    enqueuer = Enqueuer(registry=JobRegistry(), keys=KEYS, log=LISTS, settings=Settings(max_retries=5))
    requeued = new_message("again", "emailJob")
    requeued.options["requeue"] = True
    moved = new_message("moved", "emailJob")
    moved.options["enqueued_at"] = 1
    for message in (requeued, moved):
        (_, commands) = enqueuer.commands(message, None, as_script=True)
        assert all(command[0] != "EVAL" for command in commands)


def new_message(job_id: str, job_name: str) -> dramatiq.Message[Any]:
    return dramatiq.Message(
        queue_name="default", actor_name=job_name, args=(job_id, {"n": job_id}), kwargs={}, options={},
        message_id=job_id,
    )  # fmt: skip


@pytest.mark.parametrize("state", ["succeeded", "failed", "skipped"])
def test_a_start_that_arrives_after_its_finish_only_counts_the_execution(state: str) -> None:
    """A worker posts a job's start without waiting for the reply; one Redis refused (a script
    not loaded yet) is sent again, possibly after the finish, which must stand."""
    client = seeded(state)
    before = dump(client)
    (script,) = SCRIPTS.running(queue="default", attempt=1, at_ms=1_700_000_000_789, **IDS)
    assert client.execute_command(*script) == 0
    assert client.hget(KEYS.job("j1"), "executions") == b"2"
    client.hset(KEYS.job("j1"), "executions", 1)
    assert dump(client) == before


def test_deliveries_reads_each_records_count() -> None:
    client = fakeredis.FakeRedis()
    client.hset(KEYS.job("a"), mapping={"deliveries": 2})
    client.hset(KEYS.job("b"), mapping={"state": "queued"})
    assert client.execute_command(*SCRIPTS.deliveries(["a", "b", "missing"])) == [2, 0, 0]
