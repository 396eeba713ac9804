"""A bounded load run with faults: 1,000 jobs through the API and the producer, two workers,
one SIGKILLed and restarted mid-run, Redis SIGKILLed and restarted once. Then the ledger.

1,000 is enough for each fault to land mid-run (the kill at 15 % done, Redis at 45 %, while
workers hold prefetched and running jobs): every job must still succeed, and send its email no
more often than its record counts executions."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from email import message_from_bytes
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from aiosmtpd.controller import Controller

from tests.faults import ledger
from tests.faults.conftest import KEYS
from tests.support.redis_state import records_fields, succeeded_count
from tests.support.services import ROOT, RedisServer, Stack, free_port, wait_until

pytestmark = [pytest.mark.fault, pytest.mark.slow]

API_SINGLE = 200  # POST /enqueue, by 4 concurrent clients
API_BATCHES = 6  # POST /enqueue/batch of 50
BATCH = 50
PRODUCED = 500  # the producer, paced
TOTAL = API_SINGLE + API_BATCHES * BATCH + PRODUCED


class Inbox:
    """An SMTP sink counting messages by Message-ID (a receiver drops duplicates by it)."""

    def __init__(self) -> None:
        self.by_message_id: Counter[str] = Counter()
        self._lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd API
        message_id = str(message_from_bytes(envelope.content)["Message-ID"])
        with self._lock:
            self.by_message_id[message_id] += 1
        return "250 OK"


@pytest.fixture
def inbox() -> Iterator[tuple[Inbox, int]]:
    sink, port = Inbox(), free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    yield sink, port
    controller.stop()


def _post_until_accepted(client: httpx.Client, path: str, body: Any, deadline: float) -> Any:
    """POST, and on 503 (Redis restarting) try again after a short pause, until the deadline."""
    while True:
        try:
            response = client.post(path, json=body)
            if response.status_code == 202:
                return response.json()
            assert response.status_code == 503, response.text
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            return None
        time.sleep(0.2)


def test_load_with_a_worker_killed_and_redis_restarted(
    stack: Stack,
    inbox: tuple[Inbox, int],
    redis_server: RedisServer,
    redis_client: redis.Redis,
    tmp_path: Path,
) -> None:
    sink, smtp_port = inbox
    stack.env["SMTP_URL"] = f"smtp://127.0.0.1:{smtp_port}"
    _, base = stack.api()
    w1 = stack.worker("w1", threads=8)
    stack.worker("w2", threads=8)
    accepted: list[str] = []
    lock = threading.Lock()
    deadline = time.monotonic() + 60
    job = {"jobName": "emailJob", "data": {"email": "load@example.com", "subject": "load"}}

    def single_client(count: int) -> None:
        with httpx.Client(base_url=base, headers={"x-api-key": stack.api_key}, timeout=10) as client:
            for _ in range(count):
                body = _post_until_accepted(client, "/enqueue", job, deadline)
                if body:
                    with lock:
                        accepted.append(body["jobId"])

    def batch_client() -> None:
        with httpx.Client(base_url=base, headers={"x-api-key": stack.api_key}, timeout=10) as client:
            for _ in range(API_BATCHES):
                body = _post_until_accepted(client, "/enqueue/batch", {"jobs": [job] * BATCH}, deadline)
                if body:
                    with lock:
                        accepted.extend(body["jobIds"])

    produced_ids = tmp_path / "produced.ids"
    producer = subprocess.Popen(
        [sys.executable, "-m", "app.producer", "--generate", str(PRODUCED), "--rate", "150", "--batch", "50",
         "--retry-for", "30", "--quiet", "--ids-out", str(produced_ids)],
        env=stack.with_env(), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    clients = [threading.Thread(target=single_client, args=(API_SINGLE // 4,)) for _ in range(4)]
    clients.append(threading.Thread(target=batch_client))
    started = time.monotonic()
    for thread in clients:
        thread.start()

    def succeeded() -> int:
        try:
            return succeeded_count(redis_client, KEYS)
        except redis.ConnectionError:
            return 0

    try:
        wait_until(lambda: succeeded() >= 150, timeout=30, interval=0.05, message="150 jobs done")
        w1.kill_group()
        print(f"\nw1 SIGKILLed at {succeeded()} succeeded ({time.monotonic() - started:.1f} s)")
        stack.worker("w1-restarted", threads=8)
        wait_until(lambda: succeeded() >= 450, timeout=30, interval=0.05, message="450 jobs done")
        print(f"Redis SIGKILLed at {succeeded()} succeeded ({time.monotonic() - started:.1f} s)")
        redis_server.restart(kill=True)
    finally:
        for thread in clients:
            thread.join(timeout=70)
        out, err = producer.communicate(timeout=70)
    print(f"producer: {out.strip()}")
    assert producer.returncode == 0, err[-2000:]
    accepted += produced_ids.read_text().split()
    assert len(accepted) == TOTAL, f"only {len(accepted)} of {TOTAL} accepted before the deadline"

    result = ledger.settle(redis_client, KEYS, accepted, timeout=60)
    print(f"load run: {TOTAL} jobs at rest {time.monotonic() - started:.1f} s after the start")
    ledger.assert_at_rest(result)
    assert result.succeeded == TOTAL and not result.missing
    # Every job reached the SMTP server under its own Message-ID; a job run twice may have sent
    # twice (visible there, harmless to a receiver that drops duplicates).
    assert set(sink.by_message_id) == {f"<{job_id}@taskqueue>" for job_id in accepted}
    print(f"emails: {sum(sink.by_message_id.values())} for {len(accepted)} jobs")
    # ... and never more often than its record counts executions. A run that starts while Redis
    # is down (a prefetched job) must still be counted, or duplicates go unseen.
    executions = _executions(redis_client, accepted)
    uncounted = {j: (sink.by_message_id[f"<{j}@taskqueue>"], executions[j]) for j in accepted}
    uncounted = {j: pair for j, pair in uncounted.items() if pair[0] > pair[1]}
    assert not uncounted, f"{len(uncounted)} jobs sent more emails than their recorded executions: {uncounted}"


def _executions(client: redis.Redis, ids: list[str]) -> dict[str, int]:
    rows = records_fields(client, KEYS, ids, ("executions",))
    return {job_id: int(n or 0) for job_id, (n,) in zip(ids, rows, strict=True)}
