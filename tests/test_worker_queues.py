"""A worker started with Dramatiq's `--queues` runs the jobs of those queues only: real API and
worker processes on a private Redis, with a job type on a second queue (tests/support/reports_queue.py)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.services import Stack, wait_until

pytestmark = pytest.mark.slow

#: Loaded by the processes only: imported here, it would declare its job type in every in-process
#: test's registry too.
JOB_MODULES = "tests.support.reports_queue"
REPORTS = "reports"


def queue_state(api: Any, name: str) -> dict[str, Any]:
    response = api.http.get(f"/queues/{name}")
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def test_a_worker_of_one_queue_leaves_the_other_queues_jobs_ready(stack: Stack) -> None:
    _, base = stack.api(JOB_MODULES=JOB_MODULES)
    api = stack.client(base)
    assert [queue["name"] for queue in api.http.get("/queues").json()["queues"]] == ["default", REPORTS]
    stack.worker("default-worker", threads=2, queues=["default"], JOB_MODULES=JOB_MODULES)

    report = api.enqueue("reportJob", {"n": 1})
    # Emails enqueued after the report run: the worker kept fetching while the report was ready.
    emails = [api.enqueue("emailJob", {"email": f"user{n}@example.com"}) for n in range(3)]
    wait_until(lambda: all(api.state(job_id) == "succeeded" for job_id in emails), timeout=30, message="the emails")
    assert api.state(report) == "queued"
    reports = queue_state(api, REPORTS)
    assert (reports["ready"], reports["running"]) == (1, 0), reports
    assert queue_state(api, "default")["ready"] == 0

    # A worker of the other queue takes it.
    stack.worker("reports-worker", threads=1, queues=[REPORTS], JOB_MODULES=JOB_MODULES)
    wait_until(lambda: api.state(report) == "succeeded", timeout=30, message="the report")
    assert queue_state(api, REPORTS)["ready"] == 0
