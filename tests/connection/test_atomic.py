"""Commands run atomically in one round trip (app/connection/atomic.py), on a real redis-server."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import redis
import redis.asyncio

from app.connection.atomic import run_atomically, run_atomically_async
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


def test_scripts_among_the_commands_run_in_one_multi_exec(tmp_path: Path) -> None:
    # A script cannot call another: several commands with scripts among them go as MULTI/EXEC.
    script = "return redis.call('INCRBY', ARGV[1], ARGV[2])"
    commands = [("EVAL", script, 0, "n", 2), ("EVAL", script.replace("INCRBY", "DECRBY"), 0, "m", 1), ("SET", "s", 1)]
    # A command failing inside the EXEC is raised; the others have run, as in any MULTI/EXEC.
    failing = [("EVAL", script, 0, "n", 1), ("HSET", "s", "f", "v"), ("SET", "t", 1)]

    async def run_async(port: int) -> None:
        client = redis.asyncio.Redis(host="127.0.0.1", port=port)
        try:
            await run_atomically_async(client, commands)
            with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
                await run_atomically_async(client, failing)
        finally:
            await client.aclose()

    with running_redis(tmp_path / "redis") as server:
        client = server.client()
        run_atomically(client, commands)
        asyncio.run(run_async(server.port))
        assert client.mget("n", "m", "s", "t") == [b"5", b"-2", b"1", b"1"]  # 2 + 2, then 1 in `failing`
        with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
            run_atomically(client, failing)
        assert client.get("n") == b"6"
        # One that cannot be queued aborts the whole transaction.
        with pytest.raises(redis.ResponseError, match="wrong number of arguments"):
            run_atomically(client, [("EVAL", script, 0, "n", 1), ("SET", "u")])
        assert client.get("n") == b"6" and client.ping()
        client.close()
