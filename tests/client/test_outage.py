"""An enqueue retried across a Redis outage: the API answers 503 with Retry-After while Redis is
down, the client resends with the same Idempotency-Key, and exactly one job is made and run."""

from __future__ import annotations

import threading
import time

import pytest

from taskqueue import Client, Unavailable
from tests.client.test_client import Recording
from tests.support.services import RedisServer, Stack, wait_until

pytestmark = pytest.mark.slow


def test_an_enqueue_retried_across_a_redis_outage_makes_exactly_one_job(
    stack: Stack, redis_server: RedisServer
) -> None:
    _, url = stack.api()
    stack.worker(threads=2)
    transport = Recording()
    result: dict[str, object] = {}
    with Client(url, stack.api_key, retry_for=60, max_backoff=0.5, transport=transport) as client:
        redis_server.stop()

        def enqueue() -> None:
            try:
                result["job_id"] = client.enqueue("emailJob", {"email": "outage@example.com"})
            except Exception as error:  # noqa: BLE001 - reported by the assertion below
                result["error"] = error

        thread = threading.Thread(target=enqueue)
        thread.start()
        wait_until(lambda: sum(1 for *_, status in transport.seen if status == 503) >= 2, message="503s")
        redis_server.start()
        back = time.monotonic()
        thread.join(timeout=60)
        assert "error" not in result, result
        print(f"\nenqueued {time.monotonic() - back:.2f} s after Redis came back; answers: "
              f"{[status for *_, status in transport.seen]}")  # fmt: skip
        job_id = str(result["job_id"])

        posts = [seen for seen in transport.seen if seen[0] == "POST"]
        assert {status for *_, status in posts[:-1]} == {503} and posts[-1][3] in (200, 202)
        assert len({headers["idempotency-key"] for _, _, headers, _ in posts}) == 1
        job = client.wait(job_id, timeout=30)
        assert job.state == "succeeded" and job.executions == 1
        assert [j.job_id for j in client.iter_jobs()] == [job_id]  # exactly one job

        # Given less time than the outage lasts, the client gives up with Unavailable, and the 503's hint.
        redis_server.stop()
        with Client(url, stack.api_key, retry_for=1, max_backoff=0.3) as brief, pytest.raises(Unavailable) as raised:
            brief.enqueue("emailJob", {"email": "outage@example.com"})
        assert raised.value.status == 503 and raised.value.retry_after == 5.0
        assert "nothing was enqueued" in raised.value.message
        redis_server.start()  # so that the worker stops at once
