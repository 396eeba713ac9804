"""The Redis master SIGKILLed under a steady enqueue load, with workers running, behind Redis
Sentinel (a master, two replicas, three sentinels): the sentinels promote a replica, the API and
the workers find it by themselves, and every job accepted with a 2xx (REDIS_WAIT_REPLICAS=1)
ends succeeded. Prints how long enqueue answered no 2xx."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import httpx
import pytest

from tests.faults import ledger
from tests.faults.conftest import KEYS
from tests.support.sentinel import SentinelDeployment, running_sentinels
from tests.support.services import RedisServer, Stack, wait_until

pytestmark = [pytest.mark.fault, pytest.mark.slow]

#: The sentinels' down-after-milliseconds: the failover starts about this long after the kill.
DOWN_AFTER_MS = 1000
#: Load before the kill, and after enqueue answers 2xx again.
STEADY_S = 3.0
#: A pause between two requests of the load (a steady rate, not a flood: two shared cores).
GAP_S = 0.01


@dataclass
class Load:
    """A thread enqueuing emailJobs one after another (plain and under an Idempotency-Key in turn),
    keeping the id of each one answered 2xx and when every request started and ended."""

    base: str
    api_key: str
    accepted: list[str] = field(default_factory=list)
    answers: list[tuple[float, float, int]] = field(default_factory=list)  # (sent, answered, status)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        numbers = itertools.count()
        with httpx.Client(base_url=self.base, headers={"x-api-key": self.api_key}, timeout=10) as http:
            while not self.stop.is_set():
                n = next(numbers)
                headers = {"Idempotency-Key": f"failover-{n}"} if n % 2 else {}
                sent = time.monotonic()
                try:
                    response = http.post(
                        "/enqueue",
                        json={"jobName": "emailJob", "data": {"email": f"u{n}@example.com"}},
                        headers=headers,
                    )
                    status = response.status_code
                except httpx.HTTPError:
                    status = 0
                self.answers.append((sent, time.monotonic(), status))
                if status in (200, 202):
                    self.accepted.append(response.json()["jobId"])
                time.sleep(GAP_S)

    def first_2xx_sent_after(self, moment: float) -> float | None:
        """When the first request sent after `moment` was answered 2xx."""
        return next((answered for sent, answered, status in self.answers if sent >= moment and status < 300), None)


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[SentinelDeployment]:
    with running_sentinels(tmp_path / "sentinel", down_after_ms=DOWN_AFTER_MS, failover_timeout_ms=3000) as made:
        yield made


def test_every_job_accepted_before_during_and_after_a_failover_succeeds(
    deployment: SentinelDeployment, tmp_path: Path
) -> None:
    # Stack's Redis is the deployment: its settings replace REDIS_URL with the sentinels.
    stack = Stack(
        cast(RedisServer, deployment),
        tmp_path,
        **deployment.env(),
        REDIS_WAIT_REPLICAS="1",
        REDIS_WAIT_TIMEOUT_MS="1000",
    )
    try:
        _, base = stack.api()
        stack.worker(threads=4)
        load = Load(base, stack.api_key)
        thread = threading.Thread(target=load.run, daemon=True)
        thread.start()
        try:
            wait_until(lambda: len(load.accepted) >= 50, timeout=STEADY_S * 5, message="the load to get going")
            time.sleep(STEADY_S)  # a steady load, jobs running
            old = deployment.master()
            killed = time.monotonic()
            old.kill()
            new = deployment.wait_for_new_master(old, timeout=30)
            promoted = time.monotonic() - killed
            back = wait_until(
                lambda: load.first_2xx_sent_after(killed), timeout=30, interval=0.05, message="a 2xx after the kill"
            )
            time.sleep(STEADY_S)  # more load on the new master
        finally:
            load.stop.set()
            thread.join(timeout=15)
        statuses = sorted({status for _, _, status in load.answers})
        refused = sum(1 for _, _, status in load.answers if status >= 300 or status == 0)
        print(
            f"\nFAILOVER sentinels promoted {new.name} {promoted:.1f}s after the SIGKILL; enqueue answered 2xx "
            f"again {back - killed:.1f}s after it (down-after-milliseconds={DOWN_AFTER_MS}); "
            f"{len(load.answers)} requests, {len(load.accepted)} accepted, {refused} refused (statuses {statuses})"
        )
        assert all(status in (200, 202, 503) for _, _, status in load.answers), statuses
        assert back - killed < DOWN_AFTER_MS / 1000 + 10, "enqueue came back within down-after plus a few seconds"

        with new.client() as client:
            settled = ledger.settle(client, KEYS, load.accepted, timeout=40)
        ledger.assert_at_rest(settled)
        assert settled.succeeded == settled.accepted == len(set(load.accepted)), settled.details()
        # And as a client sees them: a sample read through the API.
        api = stack.client(base)
        for job_id in load.accepted[:: max(1, len(load.accepted) // 20)]:
            assert api.state(job_id) == "succeeded", job_id
    finally:
        stack.discard_all()
