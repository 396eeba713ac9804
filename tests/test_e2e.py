"""End to end with real processes: uvicorn API, dramatiq workers, a private Redis, real receivers."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator
from email import message_from_bytes
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller

from app.delivery.webhooks import DELIVERY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER
from tests.support.fixed_receiver import Receiver
from tests.support.services import Stack, free_port, running_redis, wait_until

pytestmark = pytest.mark.slow


class _Inbox:
    def __init__(self) -> None:
        self.messages: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd API
        self.messages.append(message_from_bytes(envelope.content))
        return "250 Message accepted for delivery"


@pytest.fixture
def smtp_server() -> Iterator[tuple[_Inbox, int]]:
    inbox = _Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    yield inbox, port
    controller.stop()


@pytest.fixture(scope="module")
def default_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, str]]:
    """An API and a worker of the default settings, shared by the tests that need nothing else:
    each reads only its own jobs and receiver (and the lines it looks for in the shared mbox)."""
    tmp = tmp_path_factory.mktemp("e2e")
    with running_redis(tmp / "redis", appendonly=True) as redis_server:
        stack = Stack(redis_server, tmp)
        try:
            _, base = stack.api()
            stack.worker(processes=1, threads=2)
            yield stack, base
        finally:
            stack.discard_all()


@pytest.fixture
def receiver_factory() -> Iterator[Any]:
    made: list[Receiver] = []

    def make(status: int) -> Receiver:
        made.append(Receiver(status))
        return made[-1]

    yield make
    for receiver in made:
        receiver.close()


def test_curl_request_from_the_readme_delivers_a_real_email(stack: Stack, smtp_server: tuple[_Inbox, int]) -> None:
    inbox, port = smtp_server
    stack.env["SMTP_URL"] = f"smtp://127.0.0.1:{port}"
    _, base = stack.api()
    stack.worker(processes=1, threads=2)
    # Exactly the request of the original README.
    response = httpx.post(
        base + "/enqueue",
        headers={"Content-Type": "application/json", "x-api-key": stack.api_key},
        content='{"jobName": "emailJob", "data": {"email": "user@example.com"}}',
    )
    assert response.status_code == 202
    body = response.json()
    assert body["message"] == "Job added"
    job_id = body["jobId"]

    wait_until(lambda: inbox.messages, timeout=20, message="the email to reach the SMTP server")
    message = inbox.messages[0]
    assert message["To"] == "user@example.com"
    assert message["Message-ID"] == f"<{job_id}@taskqueue>"
    api = stack.client(base)
    record = wait_until(lambda: api.job(job_id) if api.state(job_id) == "succeeded" else None, message="succeeded")
    assert record["attempts"] == 1 and record["executions"] == 1


def test_failing_webhook_runs_six_times_with_growing_gaps_then_is_dead_lettered(
    stack: Stack, receiver_factory: Any, redis_client: Any
) -> None:
    receiver = receiver_factory(500)
    _, base = stack.api(RETRY_MIN_BACKOFF_MS="100", RETRY_MAX_BACKOFF_MS="10000")
    stack.worker(processes=1, threads=2, RETRY_MIN_BACKOFF_MS="100", RETRY_MAX_BACKOFF_MS="10000")
    api = stack.client(base)
    job_id = api.enqueue("webhookJob", {"url": receiver.url, "payload": {"n": 1}})

    wait_until(lambda: api.state(job_id) == "failed", timeout=60, message="the webhook job to fail for good")
    times = [at for at, _, _ in receiver.requests]
    assert len(times) == 6, f"expected 1 run + 5 retries, got {len(times)}"
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    # Backoff n is 100 ms * 2**n * U(1, 2) (Dramatiq's compute_backoff): each gap is at least its
    # nominal value (with a margin for scheduling), and the last is several times the first.
    for n, gap in enumerate(gaps):
        assert gap >= 0.1 * 2**n * 0.5 * 0.9, gaps
    assert gaps[-1] > 3 * gaps[0], gaps
    record = api.job(job_id)
    assert record["attempts"] == 6 and record["executions"] == 6
    assert "500" in record["error"]
    failed = redis_client.hgetall(f"failedJobs:{job_id}")
    assert failed[b"jobName"] == b"webhookJob" and failed[b"attempts"] == b"6"
    assert json.loads(failed[b"data"])["url"] == receiver.url


def test_webhook_answering_404_runs_once(default_stack: tuple[Stack, str], receiver_factory: Any) -> None:
    stack, base = default_stack
    receiver = receiver_factory(404)
    api = stack.client(base)
    job_id = api.enqueue("webhookJob", {"url": receiver.url, "payload": {}})
    wait_until(lambda: api.state(job_id) == "failed", timeout=20, message="the 404 job to fail")
    record = api.job(job_id)
    assert len(receiver.requests) == 1
    assert record["attempts"] == 1 and record["nextRetryAt"] is None
    assert "404" in record["error"]


def test_webhook_answering_200_carries_a_valid_signature(
    default_stack: tuple[Stack, str], receiver_factory: Any
) -> None:
    stack, base = default_stack
    receiver = receiver_factory(200)
    api = stack.client(base)
    payload = {"order": 42, "items": ["a", "b"]}
    job_id = api.enqueue("webhookJob", {"url": receiver.url, "payload": payload})
    wait_until(lambda: api.state(job_id) == "succeeded", timeout=20, message="the webhook to be delivered")
    _, headers, body = receiver.requests[0]
    assert json.loads(body) == payload
    timestamp = headers[TIMESTAMP_HEADER]
    expected = hmac.new(b"test-webhook-secret", timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    assert headers[SIGNATURE_HEADER] == f"sha256={expected}"
    assert headers[DELIVERY_HEADER] == job_id


def test_producer_runs_good_lines_and_reports_bad_ones_by_number(
    default_stack: tuple[Stack, str], tmp_path: Path
) -> None:
    stack, base = default_stack
    lines = [
        '{"jobName": "emailJob", "data": {"email": "one@example.com"}}',
        "this is not json",
        '{"jobName": "emailJob", "data": {"email": "two@example.com"}}',
        '{"jobName": "nosuchJob", "data": {}}',
        "",
        '{"jobName": "emailJob", "data": {"email": "not-an-address"}}',
        '{"jobName": "emailJob", "data": {"email": "three@example.com"}}',
    ]
    source = tmp_path / "jobs.jsonl"
    source.write_text("\n".join(lines) + "\n")
    ids_file = tmp_path / "ids.txt"
    result = stack.producer(str(source), "--ids-out", str(ids_file))
    assert result.returncode == 1, result.stderr
    assert "line 2:" in result.stderr and "not valid JSON" in result.stderr
    assert "line 4:" in result.stderr and "nosuchJob" in result.stderr
    assert "line 6:" in result.stderr and "data.email" in result.stderr
    assert "3 enqueued, 3 invalid" in result.stdout
    ids = ids_file.read_text().split()
    assert len(ids) == 3
    api = stack.client(base)
    for job_id in ids:
        wait_until(lambda job_id=job_id: api.state(job_id) == "succeeded", message=f"job {job_id}")
    mbox = Path(stack.env["MBOX_PATH"]).read_text()
    for address in ("one@example.com", "two@example.com", "three@example.com"):
        assert f"To: {address}" in mbox
