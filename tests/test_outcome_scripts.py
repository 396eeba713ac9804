"""The Lua forms of `running` and `succeeded` (what workers send) do what their command lists do."""

from __future__ import annotations

from typing import Any

import fakeredis
import pytest

from app.keys import Keys
from app.outcomes import Command, OutcomeLog
from tests.test_batching import dump, run_multi

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


@pytest.mark.parametrize("state", ["queued", "retrying", "running", "succeeded"])
def test_running_script_matches_its_commands(state: str) -> None:
    args = {"queue": "default", "attempt": 2, "at_ms": 1_700_000_000_123, **IDS}
    with_lists, with_script = seeded(state), seeded(state)
    run(with_lists, LISTS.running(**args))
    (script,) = SCRIPTS.running(**args)
    deliveries = with_script.execute_command(*script)
    assert dump(with_script) == dump(with_lists)
    assert deliveries == int(with_lists.hget(KEYS.job("j1"), "deliveries"))


@pytest.mark.parametrize("attempt", [None, 3])
@pytest.mark.parametrize("state", ["running", "queued", "retrying"])
def test_succeeded_script_matches_its_commands(state: str, attempt: int | None) -> None:
    args = {"duration_ms": 12, "at_ms": 1_700_000_000_456, "attempt": attempt, **IDS}
    with_lists, with_script = seeded(state), seeded(state)
    run(with_lists, LISTS.succeeded(**args))
    run(with_script, SCRIPTS.succeeded(**args))
    assert dump(with_script) == dump(with_lists)
