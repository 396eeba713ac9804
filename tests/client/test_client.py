"""taskqueue.Client against the real API, worker and a private Redis: every method, the long-poll
wait, typed errors, and resends that never enqueue twice."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
from datetime import UTC, datetime

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

import taskqueue
from app.keys import Keys
from taskqueue import (
    BadRequest,
    Client,
    Conflict,
    Forbidden,
    InvalidJob,
    Job,
    NewJob,
    NotFound,
    Unauthorized,
    Unavailable,
    WaitTimeout,
    _calls,
)
from taskqueue._metrics import parse_samples
from tests.client.conftest import Served
from tests.support.services import ROOT, free_port, wait_until

pytestmark = pytest.mark.slow

KEYS = Keys()


class Recording(httpx.HTTPTransport):
    """A real transport that records each request and the status answered (None: no answer).
    `lose` answers: the first `lose` requests matching `path` reach the server, but their answer
    is dropped and the client sees a broken connection."""

    def __init__(self, *, lose: int = 0, path: str = "/enqueue") -> None:
        super().__init__()
        self.lose = lose
        self.path = path
        self.seen: list[tuple[str, str, dict[str, str], int | None]] = []
        self._lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        headers = dict(request.headers)
        try:
            response = super().handle_request(request)
        except httpx.TransportError:
            self._record(request, headers, None)
            raise
        with self._lock:
            losing = self.lose > 0 and request.url.path == self.path
            if losing:
                self.lose -= 1
        if losing:
            response.read()
            response.close()
            self._record(request, headers, None)
            raise httpx.ReadError("connection lost before the answer (test)", request=request)
        self._record(request, headers, response.status_code)
        return response

    def _record(self, request: httpx.Request, headers: dict[str, str], status: int | None) -> None:
        with self._lock:
            self.seen.append((request.method, request.url.path, headers, status))


def enqueued_total(served: Served) -> int:
    with served.redis.client() as redis_client:
        return sum(int(v) for v in redis_client.hgetall(KEYS.enqueued_counts()).values())


def test_enqueue_then_wait_returns_the_finished_job(client: Client) -> None:
    job_id = client.enqueue("emailJob", {"email": "wait@example.com"})
    job = client.wait(job_id, timeout=20)
    assert job.job_id == job_id and job.job_name == "emailJob" and job.state == "succeeded"
    assert job.finished and job.succeeded and not job.failed
    assert job.attempts == 1 and job.executions == 1 and job.queue == "default"
    assert isinstance(job.enqueued_at, datetime) and job.enqueued_at.tzinfo is UTC
    assert job.finished_at is not None and job.finished_at >= job.enqueued_at
    assert job.raw["jobId"] == job_id and client.get(job_id) == job
    # Its worker process (host:pid); succeeded at its first attempt, it has no history of attempts.
    assert job.worker and job.worker.rpartition(":")[2].isdigit() and job.history == []


def test_wait_is_one_long_poll_answered_when_the_job_finishes(served: Served) -> None:
    transport = Recording()
    with Client(served.url, served.api_key, transport=transport) as client:
        job_id = client.enqueue("emailJob", {"email": "later@example.com"}, delay=1.0)
        started = time.monotonic()
        job = client.wait(job_id, timeout=20)
        elapsed = time.monotonic() - started
    print(f"\nwait answered {elapsed:.2f} s after a 1 s delay")
    assert job.state == "succeeded"
    assert 0.5 <= elapsed < 5
    polls = [seen for seen in transport.seen if seen[0] == "GET"]
    assert len(polls) == 1, polls  # the server held the answer: the client did not poll


def test_wait_times_out_cleanly_with_the_last_record(client: Client) -> None:
    job_id = client.enqueue("emailJob", {"email": "never@example.com"}, delay=300)
    started = time.monotonic()
    with pytest.raises(WaitTimeout) as raised:
        client.wait(job_id, timeout=1.0)
    elapsed = time.monotonic() - started
    assert 0.9 <= elapsed < 3, elapsed
    assert isinstance(raised.value, TimeoutError)
    assert raised.value.job.job_id == job_id and raised.value.job.state == "queued"
    assert "still queued after 1 s" in str(raised.value)


def test_a_long_wait_is_several_long_polls(served: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_calls, "WAIT_CHUNK_S", 0.4)
    transport = Recording()
    with Client(served.url, served.api_key, transport=transport) as client:
        job_id = client.enqueue("emailJob", {"email": "chunks@example.com"}, delay=300)
        with pytest.raises(WaitTimeout):
            client.wait(job_id, timeout=1.5)
    polls = [seen for seen in transport.seen if seen[0] == "GET"]
    assert 3 <= len(polls) <= 5, polls


def test_the_same_idempotency_key_returns_the_first_job(served: Served, client: Client) -> None:
    before = enqueued_total(served)
    first = client.enqueue("emailJob", {"email": "once@example.com"}, idempotency_key="order-42")
    again = client.enqueue("emailJob", {"email": "once@example.com"}, idempotency_key="order-42")
    assert again == first
    assert enqueued_total(served) == before + 1
    with pytest.raises(ValueError, match="idempotency_key is empty"):
        client.enqueue("emailJob", {"email": "once@example.com"}, idempotency_key="")


def test_an_enqueue_whose_answer_was_lost_is_resent_with_the_same_key_and_makes_one_job(served: Served) -> None:
    before = enqueued_total(served)
    transport = Recording(lose=2)
    with Client(served.url, served.api_key, transport=transport, max_backoff=0.2) as client:
        job_id = client.enqueue("emailJob", {"email": "lost@example.com"})
        assert client.wait(job_id, timeout=20).state == "succeeded"
    posts = [seen for seen in transport.seen if seen[0] == "POST"]
    assert [status for *_, status in posts] == [None, None, 200]  # the third answer: "Job already added"
    keys = {headers["idempotency-key"] for _, _, headers, _ in posts}
    assert len(keys) == 1 and len(keys.pop()) == 32  # generated once, sent each time
    assert enqueued_total(served) == before + 1


def test_a_batch_is_not_resent_once_it_may_have_reached_the_server(served: Served) -> None:
    before = enqueued_total(served)
    transport = Recording(lose=1, path="/enqueue/batch")
    with (
        Client(served.url, served.api_key, transport=transport, max_backoff=0.2) as client,
        pytest.raises(Unavailable) as raised,
    ):
        client.enqueue_many([("emailJob", {"email": "b@example.com"})])
    assert raised.value.maybe_applied and "check before resending" in str(raised.value)
    assert len(transport.seen) == 1
    assert enqueued_total(served) == before + 1  # it was applied: resending would have made a second job


def test_enqueue_many_is_all_or_none_and_keeps_the_order(served: Served, client: Client) -> None:
    ids = client.enqueue_many(
        [("emailJob", {"email": "m1@example.com"}), NewJob("emailJob", {"email": "m2@example.com"}, delay=0.1)]
    )
    assert len(ids) == 2 and len(set(ids)) == 2
    assert [client.wait(job_id, timeout=20).state for job_id in ids] == ["succeeded", "succeeded"]

    before = enqueued_total(served)
    with pytest.raises(InvalidJob) as raised:
        client.enqueue_many([("emailJob", {"email": "ok@example.com"}), ("emailJob", {"email": "not-an-address"})])
    assert raised.value.status == 422
    assert [problem["index"] for problem in raised.value.jobs] == [1]
    assert set(raised.value.jobs[0]["fields"]) == {"data.email"}
    assert enqueued_total(served) == before
    with pytest.raises(ValueError, match="at least one job"):
        client.enqueue_many([])


def test_refused_jobs_raise_invalid_job_with_the_field_details(served: Served, client: Client) -> None:
    before = enqueued_total(served)
    with pytest.raises(InvalidJob) as raised:
        client.enqueue("emailJob", {"email": "not-an-address"})
    assert raised.value.status == 422 and set(raised.value.fields) == {"data.email"}
    with pytest.raises(InvalidJob) as unknown:
        client.enqueue("noSuchJob", {})
    assert unknown.value.status == 400 and "emailJob" in unknown.value.message
    with pytest.raises(ValueError, match="delay must be zero or more"):
        client.enqueue("emailJob", {"email": "a@example.com"}, delay=-1)
    assert enqueued_total(served) == before


def test_errors_are_typed(served: Served, client: Client) -> None:
    with Client(served.url, "wrong-key", retry_for=0) as wrong, pytest.raises(Unauthorized) as unauthorized:
        wrong.get("anything")
    assert unauthorized.value.status == 401 and not isinstance(unauthorized.value, Forbidden)
    with Client(served.url, served.readonly_key) as readonly:
        with pytest.raises(Forbidden):
            readonly.enqueue("emailJob", {"email": "ro@example.com"})
        assert readonly.list(limit=1).jobs  # the read-only key reads

    with pytest.raises(NotFound, match="no job"):
        client.get("no-such-job")
    with pytest.raises(NotFound):
        client.wait("no-such-job", timeout=5)

    queued = client.enqueue("emailJob", {"email": "conflict@example.com"}, delay=300)
    with pytest.raises(Conflict):
        client.delete(queued)
    with pytest.raises(Conflict):
        client.retry(queued)

    with pytest.raises(BadRequest) as bad:
        client.list(job_name="noSuchJob")
    assert bad.value.status == 400 and not isinstance(bad.value, InvalidJob)
    with pytest.raises(ValueError, match="state 'bogus'"):
        client.list(state="bogus")
    with pytest.raises(ValueError, match="url must start with http"):
        Client("localhost:3002", "key")
    with pytest.raises(ValueError, match="api_key is empty"):
        Client(served.url, "")
    assert served.api_key not in repr(client) and repr(client) == f"Client({served.url!r})"


def test_list_pages_newest_first_and_iter_jobs_walks_them(client: Client) -> None:
    ids = client.enqueue_many([NewJob("emailJob", {"email": f"page{n}@example.com"}, delay=300) for n in range(5)])
    newest_first = list(reversed(ids))
    first = client.list(state="queued", job_name="emailJob", limit=2)
    assert [job.job_id for job in first.jobs] == newest_first[:2] and first.next_cursor
    second = client.list(state="queued", job_name="emailJob", limit=2, cursor=first.next_cursor)
    assert [job.job_id for job in second.jobs] == newest_first[2:4]
    walked = [job.job_id for job in client.iter_jobs(state="queued", job_name="emailJob", page_size=2)]
    assert walked[:5] == newest_first and all(job_id in walked for job_id in ids)
    assert all(job.state == "queued" and job.run_at is not None for job in first.jobs)


def test_retry_and_delete_one_failed_job(served: Served, client: Client) -> None:
    failed = served.failed_job(client)
    assert failed.failed and failed.error and "400" in failed.error
    assert failed.traceback and "PermanentJobError" in failed.traceback and failed.data is None
    assert client.get(failed.job_id, include_data=True).data == served.failing_hook()
    assert client.wait(failed.job_id, timeout=5, include_data=True).data == served.failing_hook()
    requeued = client.retry(failed.job_id)
    assert requeued.job_id == failed.job_id and requeued.state in ("queued", "running", "failed")
    again = client.wait(failed.job_id, timeout=20)
    assert again.state == "failed" and (again.requeues or 0) >= 1
    client.delete(failed.job_id)
    with pytest.raises(NotFound):
        client.get(failed.job_id)
    with pytest.raises(NotFound):
        client.delete(failed.job_id)


def test_retry_failed_and_delete_failed_in_bulk(served: Served, client: Client) -> None:
    client.delete_failed()  # what earlier tests left
    failed = [served.failed_job(client) for _ in range(3)]
    assert client.retry_failed("emailJob") == 0
    # Held by the receiver, the requeued jobs cannot fail again while the pass goes on (the API's
    # pass would meet them again in the failed index and requeue them once more).
    with served.held():
        assert client.retry_failed("webhookJob") == 3
    for job in failed:
        assert client.wait(job.job_id, timeout=20).state == "failed"  # the receiver still answers 400
    with served.held():
        assert client.retry_failed() == 3
    wait_until(lambda: len(client.list(state="failed").jobs) == 3, message="the requeued jobs to fail again")
    assert client.delete_failed("emailJob") == 0
    assert client.delete_failed("webhookJob") == 3
    assert client.list(state="failed").jobs == []


def test_metrics_health_ready_and_the_openapi_document(client: Client) -> None:
    metrics = client.metrics()
    assert "default" in metrics.queues and metrics.queues["default"].ready >= 0
    assert metrics.workers_alive == 1 and metrics.redis_up is True
    assert sum(metrics.enqueued_per_queue().values()) >= 1
    assert client.health() is True and client.ready() is True
    assert "/jobs/{job_id}" in client.openapi()["paths"]


def test_the_metrics_parser_reads_what_prometheus_client_reads(served: Served) -> None:
    texts = [httpx.get(served.url + "/metrics").text, httpx.get(served.worker_metrics_url).text]
    texts.append('odd{a="x\\"y",b="c\\\\d\\ne",} 1.5 1700000000000\nplain NaN\nempty{} +Inf\n')
    for text in texts:
        ours = [(s.name, s.labels, s.value) for s in parse_samples(text)]
        theirs = [(s.name, s.labels, s.value) for f in text_string_to_metric_families(text) for s in f.samples]
        assert repr(ours) == repr(theirs)  # repr: NaN is not equal to itself


def test_the_client_agrees_with_the_service() -> None:
    from app.api.long_poll import MAX_WAIT_S
    from app.outcomes.record import FINAL_STATES, STATES

    assert taskqueue.STATES == STATES and taskqueue.FINAL_STATES == FINAL_STATES
    assert _calls.MAX_WAIT_S == MAX_WAIT_S


def test_a_jobs_history_is_its_list_of_earlier_attempts() -> None:
    entry = {"attempt": 1, "startedAt": 1_000, "finishedAt": 1_250, "durationMs": 250, "error": "E",
             "traceback": "T", "worker": "host-1:42"}  # fmt: skip
    job = Job.from_api({"jobId": "j1", "state": "running", "attempts": 2, "worker": "host-2:7", "history": [entry]})
    assert job.history == [entry] and job.worker == "host-2:7"
    assert Job.from_api({"jobId": "j1", "history": None}).history == []  # none retried
    assert Job.from_api({"jobId": "j1", "history": "not a list"}).history == []


BLOCKED = ("app", "starlette", "dramatiq", "redis", "pydantic", "prometheus_client", "uvicorn", "click", "rich")


def test_the_client_works_without_the_server_dependencies(served: Served) -> None:
    """In a fresh interpreter where the service's packages (and the CLI's) cannot be imported at all."""
    code = textwrap.dedent(
        f"""
        import importlib.abc, sys

        class Blocked(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {BLOCKED!r}:
                    raise ImportError(f"{{name}} is blocked")
                return None

        sys.meta_path.insert(0, Blocked())
        from taskqueue import Client
        with Client(sys.argv[1], sys.argv[2]) as client:
            job_id = client.enqueue("emailJob", {{"email": "alone@example.com"}})
            print(client.wait(job_id, timeout=20).state)
        print(sorted(m for m in sys.modules if m.split(".")[0] in {BLOCKED!r}))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code, served.url, served.api_key], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:2] == ["succeeded", "[]"]


def test_an_unreachable_api_is_retried_for_retry_for_then_unavailable() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    transport = Recording()
    with Client(url, "key", retry_for=0.6, max_backoff=0.2, transport=transport) as client:
        started = time.monotonic()
        with pytest.raises(Unavailable) as raised:
            client.get("some-job")
        elapsed = time.monotonic() - started
        assert 0.5 <= elapsed < 2 and len(transport.seen) >= 3
        assert not raised.value.maybe_applied and raised.value.status is None
        assert "ConnectError" in str(raised.value) and url not in str(raised.value)
        # No connection was made: a batch is resent too, as nothing can have reached a server.
        sent = len(transport.seen)
        with pytest.raises(Unavailable):
            client.enqueue_many([("emailJob", {})])
        assert len(transport.seen) - sent >= 3


def test_a_503_is_retried_after_its_retry_after_within_max_backoff() -> None:
    answers = iter([503, 503, 202])
    times: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        times.append(time.monotonic())
        status = next(answers)
        if status == 503:
            return httpx.Response(503, headers={"Retry-After": "5"}, json={"error": "the queue is unavailable"})
        return httpx.Response(202, json={"message": "Job added", "jobId": "j1"})

    with Client("http://tq.test", "key", max_backoff=0.3, transport=httpx.MockTransport(handler)) as client:
        assert client.enqueue("emailJob", {}) == "j1"
    gaps = [later - earlier for earlier, later in zip(times, times[1:], strict=False)]
    assert all(0.25 <= gap < 1 for gap in gaps), gaps  # Retry-After 5, bounded by max_backoff

    def down(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503, headers={"Retry-After": "5"}, json={"error": "the queue is unavailable"})

    unavailable = Client("http://tq.test", "key", retry_for=0.5, max_backoff=0.2, transport=httpx.MockTransport(down))
    with unavailable, pytest.raises(Unavailable) as raised:
        unavailable.enqueue("emailJob", {})
    assert raised.value.status == 503 and raised.value.retry_after == 5.0
