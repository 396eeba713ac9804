"""Redis down while jobs are enqueued: the API says 503 + Retry-After, the producer reports the
lines it could not enqueue, and both carry on by themselves once Redis is back."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from tests.faults import ledger
from tests.faults.conftest import KEYS
from tests.support.services import ROOT, RedisServer, Stack, wait_until

pytestmark = pytest.mark.fault

JOB = {"jobName": "emailJob", "data": {"email": "down@example.com"}}


def _ids(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def test_api_and_producer_while_redis_is_down_and_after(
    stack: Stack, redis_server: RedisServer, redis_client: redis.Redis, tmp_path: Path
) -> None:
    api_service, base = stack.api()
    stack.worker("w1", threads=4)
    api = stack.client(base)
    accepted = [api.enqueue("emailJob", JOB["data"]) for _ in range(5)]

    redis_server.stop()
    for path, body in (("/enqueue", JOB), ("/enqueue/batch", {"jobs": [JOB, JOB]})):
        started = time.monotonic()
        response = api.http.post(path, json=body)
        elapsed = time.monotonic() - started
        print(f"\n{path} with Redis down: {response.status_code} in {elapsed * 1000:.0f} ms: {response.text}")
        assert response.status_code == 503 and response.headers["Retry-After"] == "5"
        assert "nothing was enqueued" in response.json()["error"]
        assert elapsed < 5

    # A producer that may retry for 2 s gives up and names the lines it could not enqueue.
    short_ids = tmp_path / "short.ids"
    short = stack.producer(
        "--generate", "50", "--batch", "20", "--retry-for", "2", "--ids-out", str(short_ids), "--quiet", timeout=60
    )
    print(short.stdout, short.stderr[-300:])
    assert short.returncode == 1
    assert "0 enqueued" in short.stdout and "50 not enqueued" in short.stdout
    assert "not enqueued: lines 1-50" in short.stderr
    assert _ids(short_ids) == []

    # One that may retry for longer waits for Redis and then enqueues everything.
    long_ids, long_err = tmp_path / "long.ids", tmp_path / "long.err"
    with open(long_err, "w") as err:
        long = subprocess.Popen(
            [sys.executable, "-m", "app.producer", "--generate", "50", "--retry-for", "60", "--quiet",
             "--ids-out", str(long_ids)],
            env=stack.with_env(), cwd=ROOT, stdout=subprocess.PIPE, stderr=err, text=True,
        )  # fmt: skip
        try:
            wait_until(lambda: "retrying" in long_err.read_text(), message="the producer to wait for Redis")
            redis_server.start()
            back = time.monotonic()
            assert long.wait(timeout=30) == 0, long_err.read_text()
        finally:
            if long.poll() is None:
                long.kill()
            stdout = long.stdout.read() if long.stdout else ""
            if long.stdout:
                long.stdout.close()
    print(f"long-running producer: {stdout.strip()}")
    assert "50 enqueued" in stdout and len(_ids(long_ids)) == 50

    # The same API process accepts jobs again, without a restart.
    def enqueue_again() -> str | None:
        response = api.http.post("/enqueue", json=JOB)
        return str(response.json()["jobId"]) if response.status_code == 202 else None

    accepted.append(wait_until(enqueue_again, timeout=10, interval=0.1, message="the API to accept jobs again"))
    print(f"API accepting again {time.monotonic() - back:.2f} s after Redis came back")
    assert api_service.alive()

    again_ids = tmp_path / "again.ids"
    again = stack.producer("--generate", "50", "--retry-for", "2", "--ids-out", str(again_ids), "--quiet")
    assert again.returncode == 0, again.stderr
    assert len(_ids(again_ids)) == 50

    result = ledger.settle(redis_client, KEYS, [*accepted, *_ids(long_ids), *_ids(again_ids)], timeout=30)
    ledger.assert_at_rest(result)
    assert result.accepted == 106 and result.succeeded == 106
