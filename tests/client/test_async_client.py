"""taskqueue.AsyncClient against the real API, worker and a private Redis: 200 concurrent enqueues
(and as many concurrent waits), and each method once."""

from __future__ import annotations

import asyncio
import time

import pytest

from taskqueue import AsyncClient, Conflict, InvalidJob, NewJob, NotFound, WaitTimeout
from tests.client.conftest import Served

pytestmark = [pytest.mark.slow, pytest.mark.anyio]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_200_concurrent_enqueues_make_200_jobs_that_all_finish(served: Served) -> None:
    async with AsyncClient(served.url, served.api_key) as client:
        started = time.monotonic()
        ids = await asyncio.gather(*(client.enqueue("emailJob", {"email": f"many{n}@example.com"}) for n in range(200)))
        enqueued_s = time.monotonic() - started
        assert len(set(ids)) == 200
        jobs = await asyncio.gather(*(client.wait(job_id, timeout=30) for job_id in ids))
        print(f"\n200 concurrent enqueues in {enqueued_s:.2f} s, all finished {time.monotonic() - started:.2f} s")
        assert [job.job_id for job in jobs] == list(ids)
        assert {job.state for job in jobs} == {"succeeded"}
        assert all(job.executions == 1 for job in jobs)


async def test_every_method_of_the_async_client(served: Served) -> None:
    async with AsyncClient(served.url, served.api_key, retry_for=5) as client:
        assert await client.health() is True and await client.ready() is True
        assert "/enqueue" in (await client.openapi())["paths"]

        job_id = await client.enqueue("emailJob", {"email": "async@example.com"}, idempotency_key="async-1")
        assert await client.enqueue("emailJob", {"email": "async@example.com"}, idempotency_key="async-1") == job_id
        assert (await client.wait(job_id, timeout=20)).state == "succeeded"
        assert (await client.get(job_id)).job_id == job_id

        queued = await client.enqueue_many(
            [NewJob("emailJob", {"email": f"aq{n}@example.com"}, delay=300) for n in range(3)]
        )
        page = await client.list(state="queued", job_name="emailJob", limit=2)
        assert [job.job_id for job in page.jobs] == queued[::-1][:2] and page.next_cursor
        walked = [job.job_id async for job in client.iter_jobs(state="queued", job_name="emailJob", page_size=2)]
        assert walked[:3] == queued[::-1]
        with pytest.raises(WaitTimeout):
            await client.wait(queued[0], timeout=0.5)
        with pytest.raises(Conflict):
            await client.delete(queued[0])
        with pytest.raises(InvalidJob):
            await client.enqueue("emailJob", {"email": "nope"})
        with pytest.raises(NotFound):
            await client.get("no-such-job")

        failing = await client.enqueue("webhookJob", served.failing_hook())
        assert (await client.wait(failing, timeout=20)).state == "failed"
        assert (await client.retry(failing)).job_id == failing
        assert (await client.wait(failing, timeout=20)).state == "failed"
        with served.held():
            assert await client.retry_failed("webhookJob") >= 1
        assert (await client.wait(failing, timeout=20)).state == "failed"
        await client.delete(failing)
        with pytest.raises(NotFound):
            await client.get(failing)
        again = await client.enqueue("webhookJob", served.failing_hook())
        assert (await client.wait(again, timeout=20)).state == "failed"
        assert await client.delete_failed("webhookJob") >= 1

        metrics = await client.metrics()
        assert metrics.workers_alive == 1 and metrics.queues["default"].delayed >= 3


async def test_the_flow_control_methods_of_the_async_client(served: Served) -> None:
    async with AsyncClient(served.url, served.api_key, retry_for=5) as client:
        delayed = await client.enqueue("orderJob", {}, delay=300, priority="low", max_retries=1, queue="flow")
        record = await client.get(delayed)
        assert (record.priority, record.max_retries, record.queue) == ("low", 1, "flow")
        [batched] = await client.enqueue_many([NewJob("orderJob", {}, delay=300, priority="high")])
        assert (await client.get(batched)).priority == "high"
        for job_id in (delayed, batched):
            outcome = await client.cancel(job_id)
            assert outcome.canceled and outcome.job.state == "canceled"
        assert (await client.wait(delayed, timeout=5)).canceled
        with pytest.raises(NotFound):
            await client.cancel("no-such-job")

        assert [q.name for q in await client.queues()] == ["default", "flow"]
        assert (await client.queue("flow")).name == "flow"
        try:
            assert (await client.pause("flow")).paused
            held = await client.enqueue("orderJob", {})
            await asyncio.sleep(1.0)
            assert (await client.get(held)).state == "queued" and (await client.queue("flow")).paused
        finally:
            assert not (await client.resume("flow")).paused
        assert (await client.wait(held, timeout=20)).succeeded
        with pytest.raises(NotFound):
            await client.pause("nosuchqueue")
        assert [schedule.name for schedule in await client.schedules()] == ["cleanup"]
