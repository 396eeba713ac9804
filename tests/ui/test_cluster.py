"""The console on a Redis Cluster: its pages gather every queue's keyspace (each on the master of
its hash tag) and act in the keyspace of the queue or job they name. Against a real cluster of three
masters on free ports (tests/support/cluster.py), the API in process, with two job types on queues
that land on different masters."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.api.context import Api
from app.api.session import COOKIE, FULL, sessions_for
from app.connection.atomic import run_atomically
from app.connection.clients import make_shards
from app.connection.commands import Command
from app.http import create_app
from app.jobs import JobRegistry
from app.keys import Keys
from app.outcomes.log import OutcomeLog
from app.outcomes.record import now_ms
from app.settings import Settings
from app.ui import reads
from tests.support import cluster_app
from tests.support.cluster import ClusterDeployment
from tests.support.cluster_app import cluster_settings
from tests.support.inprocess import BASE_URL

pytestmark = pytest.mark.anyio

API_KEY = "cluster-console-key-0123456789"

# The shared fixtures (tests/support/cluster_app.py).
anyio_backend = cluster_app.anyio_backend
cluster = cluster_app.cluster
queues = cluster_app.queues
empty_cluster = cluster_app.empty_cluster
registry = cluster_app.registry


@pytest.fixture
def settings(cluster: ClusterDeployment, tmp_path: Path) -> Settings:
    return cluster_settings(cluster, tmp_path, api_key=API_KEY, prefix="consolecluster")


@dataclass
class Console:
    """The app's console, signed in with the full key, and its Api (for reads to compare with)."""

    http: httpx.AsyncClient
    api: Api
    csrf: str

    async def enqueue(self, name: str, n: int = 0) -> str:
        answer = await self.http.post("/enqueue", json={"jobName": name, "data": {"n": n}})
        assert answer.status_code == 202, answer.text
        return str(answer.json()["jobId"])

    async def page(self, path: str, **params: Any) -> str:
        answer = await self.http.get(path, params=params)
        assert answer.status_code == 200, (path, answer.status_code, answer.text[:500])
        return answer.text

    async def post(self, path: str, **form: Any) -> httpx.Response:
        return await self.http.post(path, data={"csrf": self.csrf, **form})


@contextlib.asynccontextmanager
async def console_of(settings: Settings, registry: JobRegistry) -> AsyncIterator[Console]:
    app = create_app(settings, job_registry=registry)
    sessions = sessions_for(settings)
    cookie = sessions.issue(FULL)
    found = sessions.read(cookie)
    assert found is not None
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=transport, base_url=BASE_URL, headers={"x-api-key": API_KEY}, cookies={COOKIE: cookie},
            timeout=30,
        ) as client,
    ):  # fmt: skip
        yield Console(client, app.state.api, found.csrf)


def keys_of(settings: Settings) -> Keys:
    return Keys.root(settings.namespace, cluster=True)


def on_master(settings: Settings, job_id: str, commands: Callable[[OutcomeLog], list[Command] | Command]) -> None:
    """Run what a worker writes for a job, on the master of the job's keyspace."""
    shards = make_shards(settings, keys_of(settings))
    try:
        made = commands(OutcomeLog.for_settings(shards.keys, settings))
        client = shards.for_job(job_id).client
        if isinstance(made, list):
            run_atomically(client, made)
        else:
            client.execute_command(*made)
    finally:
        shards.close()


def fail(settings: Settings, job_id: str, job_name: str, queue: str, error: str = "boom") -> None:
    on_master(
        settings, job_id,
        lambda log: log.failed(
            job_id=job_id, job_name=job_name, queue=queue, error=error, traceback=f"Traceback: {error}", attempts=1,
            data_json="{}", dead_letter_id="", duration_ms=5, at_ms=now_ms(),
        ),
    )  # fmt: skip


def succeed(settings: Settings, job_id: str, job_name: str, queue: str) -> None:
    on_master(
        settings, job_id,
        lambda log: log.succeeded(job_id=job_id, job_name=job_name, queue=queue, duration_ms=3, at_ms=now_ms()),
    )  # fmt: skip


async def eventually(check: Callable[[], Any], *, timeout: float = 15.0, message: str) -> Any:
    """Poll an async check until it returns something true, or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        found = await check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {message}")
        await asyncio.sleep(0.05)


def queue_row(html: str, queue: str) -> list[str]:
    """The numbers of a queue's row on the overview: ready, delayed, waiting, running, retrying, failed."""
    row = re.search(rf'<tr data-queue="{re.escape(queue)}">(.*?)</tr>', html, re.S)
    assert row, f"no row of queue {queue}"
    return re.findall(r'<td class="num">(?:<a [^>]*>)?([^<]*)', row.group(1))[:6]


async def test_overview_charts_and_workers_gather_both_keyspaces(
    cluster: ClusterDeployment, queues: tuple[str, str], settings: Settings, registry: JobRegistry
) -> None:
    a, b = queues
    keys_a, keys_b = keys_of(settings).for_queue(a), keys_of(settings).for_queue(b)
    redis = cluster.client()
    async with console_of(settings, registry) as console:
        a_ids = [await console.enqueue("aJob", n) for n in range(3)]
        b_ids = [await console.enqueue("bJob", n) for n in range(2)]
        fail(settings, a_ids[0], "aJob", a)
        succeed(settings, b_ids[0], "bJob", b)
        # A job of aJob put back for its next retry, in a's keyspace.
        later = now_ms() + 60_000
        on_master(settings, a_ids[1], lambda log: log.retrying(
            job_id=a_ids[1], job_name="aJob", attempt=1, error="later", traceback="", next_retry_at_ms=later,
            duration_ms=1, at_ms=now_ms(), started_at_ms=now_ms() - 1, worker="worker-1",
        ))  # fmt: skip
        # One worker process of both queues (stamped in both keyspaces, as liveness does), with a
        # job in flight on each; another of b alone.
        now = now_ms()
        for keys in (keys_a, keys_b):
            redis.zadd(keys.heartbeats(), {"worker-1": now})
            redis.hset(keys.workers(), "worker-1", json.dumps({"host": "h1", "pid": 11, "ppid": 10, "threads": 4}))
        redis.zadd(keys_b.heartbeats(), {"worker-2": now})
        redis.hset(keys_b.workers(), "worker-2", json.dumps({"host": "h2", "pid": 21, "ppid": 20, "threads": 2}))
        redis.sadd(keys_a.acks("worker-1", a), "m1")
        redis.sadd(keys_b.acks("worker-1", b), "m2", "m3")
        redis.sadd(keys_b.acks("worker-2", b), "m4")

        figures = await reads.overview(console.api)
        ready = {q.name: q.ready for q in figures.queues}
        assert ready == {a: 3, b: 2}, "the messages were never fetched: all still on their lists"
        assert figures.retrying == {a: 1, b: 0}
        assert {q.name: q.running for q in figures.queues} == {a: 1, b: 3}
        assert (figures.hour.total("succeeded"), figures.hour.total("failed"), figures.hour.total("retried")) == (
            1,
            1,
            1,
        )
        assert (figures.day.total("succeeded"), figures.day.total("failed")) == (1, 1)
        workers = {w.broker_id: w for w in figures.workers}
        assert sorted(workers) == ["worker-1", "worker-2"], "one worker per broker id, whatever its keyspaces"
        assert (workers["worker-1"].host, workers["worker-1"].in_flight, workers["worker-1"].threads) == ("h1", 3, 4)
        assert (workers["worker-2"].host, workers["worker-2"].in_flight) == ("h2", 1)

        html = await console.page("/ui/")
        assert queue_row(html, a)[0] == "3" and queue_row(html, b)[0] == "2"
        assert queue_row(html, a)[4] == "1"  # retrying
        assert "Workers alive (2)" in html
        assert "Last hour, per minute: 1 succeeded, 2 failures" in html
        assert "last hour, per minute: 1 succeeded, 1 attempts failed and retried, 1 failed for good" in html
        assert "Workers alive (2)" in await console.page("/ui/live")


async def test_jobs_list_filters_and_pages_across_both_keyspaces(
    queues: tuple[str, str], settings: Settings, registry: JobRegistry
) -> None:
    a, b = queues
    async with console_of(settings, registry) as console:
        ids = []
        for n in range(5):
            ids.append(await console.enqueue("aJob", n))
            ids.append(await console.enqueue("bJob", n))
        succeed(settings, ids[1], "bJob", b)  # a packed record, in b's keyspace
        fail(settings, ids[2], "aJob", a, error="HTTPError: 503")
        fail(settings, ids[3], "bJob", b, error="HTTPError: 404")

        seen: list[str] = []
        cursor = None
        for _ in range(20):
            page = await reads.list_jobs(console.api, reads.JobFilter(cursor=cursor), limit=3)
            seen += [job["jobId"] for job in page.jobs]
            if page.next_cursor is None:
                break
            cursor = reads.parse_cursor(page.next_cursor)
        assert sorted(seen) == sorted(ids) and len(seen) == len(ids), "each job once, from both keyspaces"
        first = await reads.list_jobs(console.api, reads.JobFilter(), limit=3)
        assert first.total == 10

        html = await console.page("/ui/jobs")
        assert all(job_id in html for job_id in ids)
        only_b = await console.page("/ui/jobs", queue=b)
        assert [i for i in ids if i in only_b] == [i for i in ids if i.endswith(f"-{b}")]
        by_type = await console.page("/ui/jobs", jobName="aJob")
        assert [i for i in ids if i in by_type] == [i for i in ids if i.endswith(f"-{a}")]
        failed = await console.page("/ui/jobs", state="failed")
        assert [i for i in ids if i in failed] == [ids[2], ids[3]]
        searched = await console.page("/ui/jobs", state="failed", q="503")
        assert [i for i in ids if i in searched] == [ids[2]]
        succeeded = await console.page("/ui/jobs", state="succeeded")
        assert [i for i in ids if i in succeeded] == [ids[1]]

        # A job's page, found from its id alone; an id naming no queue is no job.
        detail = await console.page(f"/ui/jobs/{ids[3]}")
        assert ids[3] in detail and "HTTPError: 404" in detail
        assert ids[1] in await console.page(f"/ui/jobs/{ids[1]}")  # packed, in b's keyspace
        for unknown in (f"{'0' * 32}-nosuchqueue", "0" * 32):
            assert (await console.http.get(f"/ui/jobs/{unknown}")).status_code == 404
            assert (await console.http.get("/ui/jobs", params={"id": unknown})).status_code == 404
        jump = await console.http.get("/ui/jobs", params={"id": ids[1]})
        assert (jump.status_code, jump.headers["location"]) == (303, f"/ui/jobs/{ids[1]}")

        dead = await reads.dead_letters(console.api, None)
        assert dict(dead.by_type) == {"aJob": 1, "bJob": 1} and dead.total == 2 and dead.sampled == 2
        assert dict(dead.top_errors) == {"HTTPError: 503": 1, "HTTPError: 404": 1}
        assert await reads.count_matching_failed(console.api, None, "httperror", limit=100) == (2, False)
        assert await reads.count_matching_failed(console.api, None, None, limit=100) == (2, False)
        assert "HTTPError: 404" in await console.page("/ui/dead")


async def test_actions_write_the_keyspace_of_their_queue_or_job(
    cluster: ClusterDeployment, queues: tuple[str, str], settings: Settings, registry: JobRegistry
) -> None:
    a, b = queues
    keys = keys_of(settings)
    redis = cluster.client()
    async with console_of(settings, registry) as console:
        # Pause and resume, in the queue's own keyspace.
        paused = await console.post(f"/ui/queues/{b}/pause")
        assert paused.status_code == 303, paused.text
        assert redis.hget(keys.for_queue(b).paused(), b) is not None
        assert {q.name: q.paused for q in (await reads.overview(console.api)).queues} == {a: False, b: True}
        assert (await console.post(f"/ui/queues/{b}/resume")).status_code == 303
        assert redis.hget(keys.for_queue(b).paused(), b) is None

        # The console's enqueue form, on the queue's keyspace.
        made = await console.post("/ui/enqueue", jobName="bJob")
        assert made.status_code == 303, made.text
        made_id = made.headers["location"].removeprefix("/ui/jobs/").partition("?")[0]
        assert made_id.endswith(f"-{b}") and redis.exists(keys.for_queue(b).job(made_id))

        # A bulk retry of every failed job, over both keyspaces; its progress found again.
        ids = {await console.enqueue("aJob"): ("aJob", a), await console.enqueue("bJob"): ("bJob", b)}
        for job_id, (name, queue) in ids.items():
            fail(settings, job_id, name, queue)
        started = await console.post("/ui/bulk", action="retry", scope="all", expected="2")
        assert started.status_code == 303, started.text
        progress_page = started.headers["location"]

        async def finished() -> bool:
            return "<strong>finished</strong> · 2 retried" in await console.page(progress_page)

        await eventually(finished, message="the bulk retry to finish")
        for job_id in ids:
            record = await console.api.store.get(job_id, ("state",))
            assert record["state"] == "queued", job_id

        # A job's own actions go to its keyspace: delete one of b's after it failed again.
        b_id = next(job_id for job_id, (_, queue) in ids.items() if queue == b)
        fail(settings, b_id, "bJob", b)
        deleted = await console.post(f"/ui/jobs/{b_id}/delete")
        assert deleted.status_code == 303, deleted.text
        assert not redis.exists(keys.for_queue(b).job(b_id))
        # And a cancel of a's queued job (no worker alive: it is canceled at once).
        a_id = next(job_id for job_id, (_, queue) in ids.items() if queue == a)
        canceled = await console.post(f"/ui/jobs/{a_id}/cancel")
        assert canceled.status_code == 303, canceled.text
        assert (await console.api.store.get(a_id, ("state",)))["state"] == "canceled"
