"""Commands run atomically in one round trip (app/connection/atomic.py), on a real redis-server."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from app.connection.atomic import run_atomically
from app.errors import BrokerUnavailable
from tests.support.services import running_redis


def test_run_atomically_runs_all_or_reports_the_error(tmp_path: Path) -> None:
    with running_redis(tmp_path / "redis") as server:
        client = server.client()
        run_atomically(client, [("SET", "a", 1), ("INCR", "a"), ("RPUSH", "l", "x", "y")])
        assert client.get("a") == b"2" and client.lrange("l", 0, -1) == [b"x", b"y"]
        with pytest.raises(redis.ResponseError):
            run_atomically(client, [("SET", "b", 1), ("HSET", "a", "f", "v")])
        assert client.ping()  # the connection went back to the pool in a usable state
        server.stop()
        with pytest.raises(BrokerUnavailable):
            run_atomically(client, [("SET", "c", 1)])
