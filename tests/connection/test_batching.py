"""Coalesced writes (app/batching.py): the same effects in fewer commands and round trips."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import dramatiq
import fakeredis
import pytest
import redis

from app.broker.enqueue import Enqueuer
from app.connection.atomic import run_atomically
from app.connection.commands import Command, coalesce, pack
from app.connection.worker_writes import MAX_UNREAD_UNITS, WorkerWrites
from app.errors import BrokerUnavailable
from app.jobs import JobRegistry
from app.keys import Keys
from app.outcomes.log import OutcomeLog
from app.settings import Settings
from tests.support.services import ROOT, RedisServer, running_redis, wait_until

KEYS = Keys()
ENQUEUER = Enqueuer(
    registry=JobRegistry(),
    keys=KEYS,
    log=OutcomeLog(keys=KEYS, retention_seconds=3600),
    settings=Settings(max_retries=5),
)


def message(job_id: str, **options: Any) -> dramatiq.Message[Any]:
    return dramatiq.Message(
        queue_name="default", actor_name="emailJob", args=(job_id, {"n": job_id}), kwargs={}, options=options
    ).copy(message_id=job_id)


def dump(client: fakeredis.FakeRedis) -> dict[bytes, Any]:
    """Every key's type, value and whether it expires."""
    readers = {
        b"hash": client.hgetall,
        b"list": lambda key: client.lrange(key, 0, -1),
        b"zset": lambda key: client.zrange(key, 0, -1, withscores=True),
        b"set": client.smembers,
        b"string": client.get,
    }
    return {key: (client.type(key), readers[client.type(key)](key), client.ttl(key) > 0) for key in client.keys("*")}


def run_multi(client: fakeredis.FakeRedis, commands: list[Command]) -> None:
    with client.pipeline(transaction=True) as pipeline:
        for command in commands:
            pipeline.execute_command(*command)
        pipeline.execute()


def test_coalesced_enqueue_commands_have_the_same_effect_in_far_fewer_commands() -> None:
    items = [(message(f"job-{n}"), None) for n in range(50)]
    items += [(message("late-1"), 60_000), (message("again", requeue=True), None)]
    commands: list[Command] = []
    for sequence, (one, delay) in enumerate(items):
        commands += ENQUEUER.commands(one, delay, at_ms=1_700_000_000_000, sequence=sequence)[1]
    merged = coalesce(commands)
    assert len(merged) < len(commands) / 4

    original, coalesced = fakeredis.FakeRedis(), fakeredis.FakeRedis()
    for client in (original, coalesced):  # the requeued job had a record (and a failed entry) before
        client.hset(KEYS.job("again"), mapping={"state": "failed", "requeues": 2})
        client.zadd(KEYS.state_index("failed"), {"again": 1})
    run_multi(original, commands)
    run_multi(coalesced, merged)
    # Redis message ids are random: compare everything else, and the bodies by job.
    assert dump(original).keys() == dump(coalesced).keys()
    for key, (kind, value, expires) in dump(original).items():
        other = dump(coalesced)[key]
        assert (kind, expires) == other[::2], key
        if kind != b"hash" or not key.endswith(b".msgs"):
            assert value == other[1], key


def test_coalesce_leaves_scripts_and_multi_key_commands_alone() -> None:
    commands: list[Command] = [("HSET", "h", "a", 1), ("DEL", "x", "y"), ("HSET", "h", "b", 2)]
    assert coalesce(commands) == commands
    commands = [("ZADD", "z", "NX", 1, "a"), ("ZADD", "z", "NX", 2, "b")]  # options: not merged
    assert coalesce(commands) == commands


def test_pack_is_the_redis_protocol() -> None:
    commands: list[Command] = [("SET", "k", "é"), ("EVAL", "return 1", 0, b"\xff", 1.5, -3)]
    expected = b"".join(redis.connection.Connection().pack_commands(commands))
    assert pack(commands) == expected
    with pytest.raises(redis.DataError):
        pack([("SET", "k", None)])


@pytest.fixture
def server(tmp_path: Any) -> Iterator[RedisServer]:
    with running_redis(tmp_path / "redis") as started:
        yield started


def test_run_atomically_runs_all_or_reports_the_error(server: RedisServer) -> None:
    client = server.client()
    run_atomically(client, [("SET", "a", 1), ("INCR", "a"), ("RPUSH", "l", "x", "y")])
    assert client.get("a") == b"2" and client.lrange("l", 0, -1) == [b"x", b"y"]
    with pytest.raises(redis.ResponseError):
        run_atomically(client, [("SET", "b", 1), ("HSET", "a", "f", "v")])
    assert client.ping()  # the connection went back to the pool in a usable state
    server.stop()
    with pytest.raises(BrokerUnavailable):
        run_atomically(client, [("SET", "c", 1)])


def test_worker_writes_coalesce_threads_and_keep_deferred_ones(server: RedisServer) -> None:
    client = server.client()
    writes = WorkerWrites(client)
    done: list[Any] = []
    script = "return redis.call('INCR', KEYS[1])"

    posted: list[Any] = []

    def thread() -> None:
        for _ in range(200):
            writes.write([("EVAL", script, 1, "counted")])
            writes.defer([("INCR", "deferred"), ("INCR", "deferred")], on_done=done.append)
            writes.post([("EVAL", script, 1, "posted")], on_done=posted.append)

    threads = [threading.Thread(target=thread) for _ in range(6)]
    for started in threads:
        started.start()
    for started in threads:
        started.join()
    assert writes.flush(10)
    assert client.get("counted") == b"1200" and client.get("deferred") == b"2400"
    assert len(done) == 1200  # each deferred unit reported once, with its last reply
    assert client.get("posted") == b"1200" and sorted(posted) == list(range(1, 1201))
    assert writes.write([("SET", "x", 1), ("INCR", "x")]) == 2

    client.script_flush()  # as after a Redis restart: the script must be sent again, transparently
    assert writes.write([("EVAL", script, 1, "counted")]) == 1201


def test_a_deferred_write_waits_for_redis_to_come_back(tmp_path: Any) -> None:
    with running_redis(tmp_path / "redis", appendonly=True) as server:
        client = server.client()
        writes = WorkerWrites(client, max_pause_s=0.2)
        server.stop()
        with pytest.raises(BrokerUnavailable):
            writes.write([("SET", "now", 1)])
        acked: list[Any] = []
        writes.post([("SET", "start", 1)])  # does not raise: it is tried again, first in line
        writes.defer([("SET", "ack", 1)], on_done=acked.append)
        server.start()
        wait_until(lambda: acked, timeout=20, message="the deferred write to go through")
        assert client.get("start") == b"1" and client.get("ack") == b"1"


def test_posts_go_out_at_once_and_their_replies_are_read_in_order_later(server: RedisServer) -> None:
    client = server.client()
    writes = WorkerWrites(client, linger_s=60)  # no flusher reading replies behind the test's back
    replies: list[Any] = []
    script = f"return redis.call('INCR', KEYS[1]) -- {uuid.uuid4()}"  # new to this Redis
    writes.post([("EVAL", script, 1, "posted")], on_done=replies.append)
    assert replies == []  # a post does not read its own reply
    for _ in range(199):
        writes.post([("EVAL", script, 1, "posted")], on_done=replies.append)
    # Posts read earlier replies only once many wait: never more than that are left unread.
    assert replies == list(range(1, len(replies) + 1)) and 1 <= 200 - len(replies) <= MAX_UNREAD_UNITS
    # An exchange that waits for its own reply reads them all first, in order.
    assert writes.write([("GET", "posted")]) == b"200" and replies == list(range(1, 201))
    # The script was loaded before its first call, so no call had to be sent again.
    assert "errorstat_NOSCRIPT" not in client.info("errorstats")


def test_a_post_reaches_redis_even_if_its_process_dies_right_after(server: RedisServer) -> None:
    """What a job's start relies on: a job that kills its process is still counted."""
    script = f"return redis.call('INCR', KEYS[1]) -- {uuid.uuid4()}"
    code = (
        "import os, signal, redis\n"
        "from app.connection.worker_writes import WorkerWrites\n"
        f"writes = WorkerWrites(redis.Redis.from_url({server.url!r}))\n"
        f"writes.post([('EVAL', {script!r}, 1, 'started')])\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    died = subprocess.run([sys.executable, "-c", code], cwd=ROOT, timeout=60, capture_output=True, text=True)
    assert died.returncode == -signal.SIGKILL, died.stderr
    client = server.client()
    wait_until(lambda: client.get("started") == b"1", timeout=5, message="the posted start to be applied")
