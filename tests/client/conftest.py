"""One real API, worker and private Redis shared by the client tests (a package-scoped stack), and
a webhook receiver whose /fail path answers 400 (a webhook job failing at once, without retries).
Every process also loads the flow-control test jobs (tests/support/flow_jobs.py: orderJob, slowJob,
stubbornJob on the queue "flow"), for cancels and pauses that leave the default queue alone."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from taskqueue import Client, Job
from tests.support.receivers import ScriptedReceiver
from tests.support.services import RedisServer, Service, Stack, free_port, running_redis, wait_until

READONLY_KEY = "test-readonly-key-0123456789"
#: The queue of the flow test jobs, which the pause tests pause (and resume).
FLOW_QUEUE = "flow"


@dataclass
class Served:
    """The shared stack: where the API is, its key, the worker's metrics URL and the receiver."""

    stack: Stack
    redis: RedisServer
    api: Service
    url: str
    api_key: str
    readonly_key: str
    worker_metrics_url: str
    receiver: ScriptedReceiver

    def client(self, *, retry_for: float = 30.0) -> Client:
        return Client(self.url, self.api_key, retry_for=retry_for)

    def ok_hook(self) -> dict[str, object]:
        return {"url": self.receiver.url + "/ok", "payload": {"n": 1}}

    def failing_hook(self) -> dict[str, object]:
        return {"url": self.receiver.url + "/fail", "payload": {"n": 1}}

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Webhook requests arriving in the block wait (their jobs stay running) until it ends."""
        self.receiver.hold()
        try:
            yield
        finally:
            self.receiver.release()

    def running_job(self, client: Client, job_name: str = "slowJob") -> str:
        """A flow test job (slowJob stops when it sees its cancel, stubbornJob only when forced) now running."""
        job_id = client.enqueue(job_name, {"sleepMs": 30_000})
        wait_until(lambda: client.get(job_id).state == "running", timeout=15, message=f"{job_id} to run")
        return job_id

    def failed_job(self, client: Client) -> Job:
        """A webhook job that failed (its receiver answered 400)."""
        job_id = client.enqueue("webhookJob", self.failing_hook())
        failed = wait_until(lambda: _failed(client, job_id), timeout=15, message=f"{job_id} to fail")
        assert failed is not None
        return failed


def _failed(client: Client, job_id: str) -> Job | None:
    job = client.get(job_id)
    return job if job.state == "failed" else None


@pytest.fixture(scope="package")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("client-stack")
    receiver = ScriptedReceiver(lambda job_id, number, path: 400 if path.endswith("/fail") else 200)
    with running_redis(tmp / "redis", appendonly=True) as redis_server:
        stack = Stack(redis_server, tmp, JOB_MODULES="tests.support.flow_jobs")
        try:
            api, url = stack.api(API_READONLY_KEY=READONLY_KEY)
            metrics_port = free_port()
            stack.worker(threads=8, METRICS_PORT=str(metrics_port), METRICS_HOST="127.0.0.1")
            yield Served(
                stack=stack,
                redis=redis_server,
                api=api,
                url=url,
                api_key=stack.api_key,
                readonly_key=READONLY_KEY,
                worker_metrics_url=f"http://127.0.0.1:{metrics_port}/metrics",
                receiver=receiver,
            )
        finally:
            stack.discard_all()
            receiver.close()


@pytest.fixture
def client(served: Served) -> Iterator[Client]:
    with served.client(retry_for=5) as made:
        yield made
