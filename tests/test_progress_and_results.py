"""Progress and results end to end: a job type declared in a test module (JOB_MODULES), run by a
real worker process, read through the real API while it runs and after."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from app.keys import Keys
from tests.support.flow_log import release_key
from tests.support.services import Stack, shared_stack, wait_until

pytestmark = pytest.mark.slow

ENV = {"JOB_MODULES": "tests.support.progress_jobs", "RESULT_MAX_BYTES": "1024"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One API and worker for the module: each test reads only the job it enqueued."""
    with shared_stack(tmp_path_factory.mktemp("progress"), threads=2, **ENV) as processes:
        yield processes


def _started(stack: Stack) -> Any:
    """The module's API client (made with its stack)."""
    return stack.clients[0]


def test_progress_shows_while_running_and_the_result_after(stack: Stack) -> None:
    api = _started(stack)
    job_id = api.enqueue("progressJob", {"result_bytes": 10})

    running = wait_until(
        lambda: (job := api.job(job_id))["progress"] is not None and job,
        timeout=20,
        message="the job's progress",
    )
    assert running["state"] == "running"
    assert running["progress"] == 50.0 and running["progressMessage"] == "half way"
    assert isinstance(running["progressAt"], int) and running["result"] is None

    stack.redis.client().rpush(release_key(job_id), "go")
    done = wait_until(lambda: (job := api.job(job_id))["state"] == "succeeded" and job, timeout=20, message="succeeded")
    assert done["result"] == {"jobId": job_id, "attempt": 1, "filler": "x" * 10}
    assert done["progress"] == 100.0 and done["progressMessage"] == "done"
    assert done["attempts"] == 1


def test_an_oversize_result_fails_the_job_at_once_saying_why(stack: Stack) -> None:
    api = _started(stack)
    job_id = api.enqueue("progressJob", {"report": False, "result_bytes": 2000})

    failed = wait_until(lambda: (job := api.job(job_id))["state"] == "failed" and job, timeout=20, message="failed")
    assert failed["attempts"] == 1 and failed["executions"] == 1  # not retried (it may be retried 3 times)
    error = failed["error"]
    assert error.startswith("InvalidResult: ") and "RESULT_MAX_BYTES" in error and "1024 bytes" in error
    assert "is 2068 bytes of JSON" in error  # {"jobId":"<32 hex digits>","attempt":1,"filler":"xx…"}
    assert failed["result"] is None


def test_a_job_reporting_nothing_and_returning_none_writes_neither(stack: Stack) -> None:
    api = _started(stack)
    job_id = api.enqueue("progressJob", {"report": False, "result_bytes": None})

    done = wait_until(lambda: (job := api.job(job_id))["state"] == "succeeded" and job, timeout=20, message="done")
    assert done["progress"] is None and done["result"] is None
    fields = stack.redis.client().hkeys(Keys().job(job_id))
    assert not {b"progress", b"progressMessage", b"progressAt", b"result"} & set(fields)
