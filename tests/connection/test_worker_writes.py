"""A worker process's writes (app/connection/worker_writes.py), on a real redis-server: coalesced
across threads, deferred ones kept until Redis takes them, posts sent without waiting."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.connection.worker_writes import MAX_UNREAD_UNITS, WorkerWrites
from app.errors import BrokerUnavailable
from tests.support.services import ROOT, RedisServer, running_redis, wait_until


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    with running_redis(tmp_path / "redis") as started:
        yield started


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
    # Scripts in a MULTI/EXEC unit (an ack with its outcome record) go by SHA1 too, and again in
    # full when Redis has lost them.
    other = "return redis.call('INCRBY', KEYS[1], 10)"
    assert writes.write([("EVAL", script, 1, "counted"), ("EVAL", other, 1, "counted")]) == 1212
    client.script_flush()
    writes.defer([("EVAL", script, 1, "counted"), ("EVAL", other, 1, "counted")], on_done=done.append)
    assert writes.flush(10) and done[-1] == 1223 and client.get("counted") == b"1223"


def test_a_deferred_write_waits_for_redis_to_come_back(tmp_path: Path) -> None:
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
