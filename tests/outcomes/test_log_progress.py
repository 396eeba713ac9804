"""The outcome log's progress and result writes (app/outcomes/log.py, progress.lua,
succeeded.lua, running.lua) on a private real redis-server: a late write changes nothing."""

from __future__ import annotations

from typing import Any

import redis

from app.keys import Keys
from app.outcomes.log import OutcomeLog
from tests.support.redis_state import read_record, record_fields

KEYS = Keys()
LOG = OutcomeLog(keys=KEYS, retention_seconds=3600)
IDS = {"job_id": "j1", "job_name": "progressJob"}
PROGRESS = {b"progress", b"progressMessage", b"progressAt"}


def running(client: redis.Redis, attempt: int, at_ms: int = 1_000) -> None:
    client.execute_command(*LOG.running(queue="default", attempt=attempt, at_ms=at_ms, **IDS))


def progress(client: redis.Redis, attempt: int, value: float, message: str = "", at_ms: int = 1_100) -> Any:
    return client.execute_command(
        *LOG.progress(job_id="j1", attempt=attempt, value=value, message=message, at_ms=at_ms)
    )


def record(client: redis.Redis, job_id: str = "j1") -> dict[str, Any]:
    """The record, hash or packed (once it succeeded: app/outcomes/packed.py)."""
    return read_record(client, KEYS, job_id)


def test_progress_is_written_while_its_attempt_runs(redis_client: redis.Redis) -> None:
    running(redis_client, 1)
    assert progress(redis_client, 1, 12.5, "reading", at_ms=1_100) == 1
    shown = record(redis_client)
    assert (shown["progress"], shown["progressMessage"], shown["progressAt"]) == (12.5, "reading", 1_100)
    # The latest wins, a message included: none leaves none.
    assert progress(redis_client, 1, 80, at_ms=1_200) == 1
    shown = record(redis_client)
    assert (shown["progress"], shown["progressMessage"], shown["progressAt"]) == (80.0, None, 1_200)


def test_a_late_progress_changes_nothing(redis_client: redis.Redis) -> None:
    # No record (deleted, expired): none is made.
    assert progress(redis_client, 1, 10) == 0
    assert redis_client.exists(KEYS.job("j1")) == 0
    # A later attempt runs: attempt 1's progress is not its own.
    running(redis_client, 1)
    running(redis_client, 2, at_ms=2_000)
    assert progress(redis_client, 1, 10) == 0
    assert not PROGRESS & set(redis_client.hkeys(KEYS.job("j1")))
    # The attempt finished: its record stands as written (packed: no hash is made again).
    assert progress(redis_client, 2, 90, "almost") == 1
    redis_client.execute_command(*LOG.succeeded(duration_ms=5, at_ms=2_005, started=True, **IDS))
    assert progress(redis_client, 2, 10, "late") == 0
    assert redis_client.exists(KEYS.job("j1")) == 0
    shown = record(redis_client)
    assert shown["state"] == "succeeded" and shown["progress"] == 90.0 and shown["progressMessage"] == "almost"


def test_a_start_clears_the_progress_and_result_of_the_attempt_before(redis_client: redis.Redis) -> None:
    running(redis_client, 1)
    progress(redis_client, 1, 50, "half")
    # Attempt 1's retrying was lost (Redis blinked); its record still holds a result (as a
    # record written before a success was packed could).
    redis_client.hset(KEYS.job("j1"), "result", '{"n":1}')
    running(redis_client, 2, at_ms=2_000)
    fields = set(redis_client.hkeys(KEYS.job("j1")))
    assert b"state" in fields and not (PROGRESS | {b"result"}) & fields


def test_a_start_after_the_success_leaves_the_packed_result_alone(redis_client: redis.Redis) -> None:
    running(redis_client, 1)
    progress(redis_client, 1, 50, "half")
    redis_client.execute_command(*LOG.succeeded(duration_ms=5, at_ms=1_500, started=True, result_json='{"n":1}', **IDS))
    assert record(redis_client)["result"] == {"n": 1}
    running(redis_client, 2, at_ms=2_000)  # sent again late: the job has succeeded
    assert redis_client.exists(KEYS.job("j1")) == 0
    shown = record(redis_client)
    assert shown["result"] == {"n": 1} and shown["progress"] == 50.0 and shown["attempts"] == 1


def test_succeeded_writes_the_result_with_or_without_the_attempt(redis_client: redis.Redis) -> None:
    running(redis_client, 1)
    redis_client.execute_command(*LOG.succeeded(duration_ms=5, at_ms=1_500, result_json='[1,"a"]', **IDS))
    shown = record(redis_client)
    assert shown["state"] == "succeeded" and shown["result"] == [1, "a"] and shown["attempts"] == 1
    other = {"job_id": "j2", "job_name": "progressJob"}
    redis_client.execute_command(*LOG.running(queue="default", attempt=2, at_ms=2_000, **other))
    redis_client.execute_command(*LOG.succeeded(duration_ms=5, at_ms=2_500, attempt=2, result_json='{"b":2}', **other))
    shown = record(redis_client, "j2")
    assert shown["attempts"] == 2 and shown["result"] == {"b": 2}
    # A second success of j1 (delivered again) changes nothing: the first result stands.
    assert redis_client.execute_command(*LOG.succeeded(duration_ms=5, at_ms=2_500, result_json='"x"', **IDS)) == 0
    assert record(redis_client)["result"] == [1, "a"]


def test_a_success_not_known_to_have_started_clears_what_an_earlier_attempt_left(redis_client: redis.Redis) -> None:
    """Its `running` may have been lost (Redis blinked): the record can still hold attempt 1's
    progress (and a result), which are not this attempt's."""
    running(redis_client, 1)
    progress(redis_client, 1, 30, "first")
    redis_client.hset(KEYS.job("j1"), "result", '"old"')
    redis_client.execute_command(*LOG.succeeded(duration_ms=5, at_ms=2_500, attempt=2, **IDS))
    assert redis_client.exists(KEYS.job("j1")) == 0
    fields = record_fields(redis_client, KEYS, "j1")
    assert not {"progress", "progressMessage", "progressAt", "result"} & set(fields) and fields["attempts"] == "2"


def test_no_result_writes_no_field(redis_client: redis.Redis) -> None:
    running(redis_client, 1)
    redis_client.execute_command(*LOG.succeeded(duration_ms=5, at_ms=1_500, started=True, **IDS))
    fields = record_fields(redis_client, KEYS, "j1")
    assert fields["state"] == "succeeded" and "result" not in fields
