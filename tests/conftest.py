"""Shared fixtures: a private redis-server per test, and a Stack of our real processes on it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.support.receivers import ScriptedReceiver
from tests.support.services import RedisServer, Stack, running_redis


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A private redis-server with AOF (so it can be restarted without losing data)."""
    with running_redis(tmp_path / "redis", appendonly=True) as server:
        yield server


@pytest.fixture
def redis_client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis_server.client()
    yield client
    client.close()


@pytest.fixture
def stack(redis_server: RedisServer, tmp_path: Path) -> Iterator[Stack]:
    """Start processes with stack.api(), stack.worker(), ...; all are killed at the end (a test that
    checks a shutdown stops its processes itself)."""
    processes = Stack(redis_server, tmp_path)
    yield processes
    processes.discard_all()


@pytest.fixture
def receivers() -> Iterator[Any]:
    """Make scripted webhook receivers with receivers(script, ...); all are closed at the end."""
    made: list[ScriptedReceiver] = []

    def make(*args: Any, **kwargs: Any) -> ScriptedReceiver:
        made.append(ScriptedReceiver(*args, **kwargs))
        return made[-1]

    yield make
    for receiver in made:
        receiver.close()


def pytest_collection_finish(session: pytest.Session) -> None:
    """Job types of test modules are for the processes under test (JOB_MODULES): imported into
    this process, they would change every in-process API's list of job types."""
    from app.jobs import registry

    strays = sorted(t.name for t in registry if not t.fn.__module__.startswith("app.actors"))
    if strays:
        raise pytest.UsageError(
            f"test collection declared job types {strays} in the test process: import what tests read from "
            "a module that declares none (tests/support/flow_log.py), and load job modules with JOB_MODULES"
        )
