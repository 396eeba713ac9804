"""The HTTP API on a Redis Cluster: each queue's keys on the master of its hash tag, a job found from
its id alone, listings and counts gathered from every shard, pause, cancel and dead letters in the
queue's own keyspace. Against a real cluster of three masters on free ports (tests/support/cluster.py),
the API in process, with two job types on queues that land on different masters."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.broker.messages import CANCEL_STOPPED
from app.connection.atomic import run_atomically
from app.connection.clients import make_shards
from app.http import create_app
from app.jobs import JobRegistry
from app.keys import Keys
from app.outcomes.log import OutcomeLog
from app.outcomes.record import now_ms
from app.settings import Settings
from tests.support import cluster_app
from tests.support.cluster import ClusterDeployment
from tests.support.cluster_app import cluster_settings
from tests.support.inprocess import BASE_URL

pytestmark = pytest.mark.anyio

API_KEY = "cluster-api-key-0123456789"
HEADERS = {"x-api-key": API_KEY}

# The shared fixtures (tests/support/cluster_app.py).
anyio_backend = cluster_app.anyio_backend
cluster = cluster_app.cluster
queues = cluster_app.queues
empty_cluster = cluster_app.empty_cluster
registry = cluster_app.registry


@pytest.fixture
def settings(cluster: ClusterDeployment, tmp_path: Path) -> Settings:
    return cluster_settings(cluster, tmp_path, api_key=API_KEY, prefix="clustertest")


@contextlib.asynccontextmanager
async def api_of(settings: Settings, registry: JobRegistry) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, job_registry=registry)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url=BASE_URL, headers=HEADERS, timeout=30) as client,
    ):
        yield client


def job(name: str, n: int = 0) -> dict[str, Any]:
    return {"jobName": name, "data": {"n": n}}


def keys_of(settings: Settings) -> Keys:
    return Keys.root(settings.namespace, cluster=True)


async def enqueued(api: httpx.AsyncClient, name: str, n: int = 0) -> str:
    answer = await api.post("/enqueue", json=job(name, n))
    assert answer.status_code == 202, answer.text
    return str(answer.json()["jobId"])


async def test_each_queue_keys_are_on_the_master_of_its_hash_tag(
    cluster: ClusterDeployment, queues: tuple[str, str], settings: Settings, registry: JobRegistry
) -> None:
    a, b = queues
    async with api_of(settings, registry) as api:
        a_id, b_id = await enqueued(api, "aJob"), await enqueued(api, "bJob")
        assert a_id.endswith(f"-{a}") and b_id.endswith(f"-{b}")
        for job_id, queue in ((a_id, a), (b_id, b)):
            answer = await api.get(f"/jobs/{job_id}")
            assert answer.status_code == 200, answer.text
            assert (answer.json()["state"], answer.json()["queue"]) == ("queued", queue)
    for queue in queues:
        on_master = cluster.keys_on(cluster.master_of(queue), f"*{{{queue}}}*")
        assert on_master, f"no key of queue {queue} on its master"
        keys = keys_of(settings).for_queue(queue)
        assert keys.job(a_id if queue == a else b_id) in on_master
        assert keys.queue(queue) in on_master
    # Every key of a queue is on that queue's master alone.
    for port in {cluster.master_of(a), cluster.master_of(b)}:
        for key in cluster.keys_on(port, f"*{settings.namespace}*"):
            tag = key[key.index("{") + 1 : key.index("}")]
            assert cluster.master_of(tag) == port, key
    for key in [
        *cluster.keys_on(cluster.master_of(a), "dramatiq:*"),
        *cluster.keys_on(cluster.master_of(b), "dramatiq:*"),
    ]:
        tag = key[key.index("{") + 1 : key.index("}")]
        assert cluster.master_of(tag) in (cluster.master_of(a), cluster.master_of(b)), key


async def test_an_id_naming_no_queue_is_an_unknown_job(settings: Settings, registry: JobRegistry) -> None:
    async with api_of(settings, registry) as api:
        for job_id in ("0" * 32, f"{'0' * 32}-nosuchqueue", "not-a-job"):
            for answer in (
                await api.get(f"/jobs/{job_id}"),
                await api.post(f"/jobs/{job_id}/cancel"),
                await api.post(f"/jobs/{job_id}/retry"),
                await api.delete(f"/jobs/{job_id}"),
            ):
                assert answer.status_code == 404, (job_id, answer.text)


async def test_a_batch_across_two_queues_lands_each_job_in_its_queue(
    cluster: ClusterDeployment, queues: tuple[str, str], settings: Settings, registry: JobRegistry
) -> None:
    a, b = queues
    async with api_of(settings, registry) as api:
        answer = await api.post(
            "/enqueue/batch",
            json={"jobs": [job("aJob", 1), job("bJob", 2), job("aJob", 3), {**job("bJob", 4), "queue": a}]},
        )
        assert answer.status_code == 202, answer.text
        ids = answer.json()["jobIds"]
        assert [job_id.rsplit("-", 1)[1] for job_id in ids] == [a, b, a, a]
        for job_id in ids:
            record = (await api.get(f"/jobs/{job_id}?include=data")).json()
            assert record["queue"] == job_id.rsplit("-", 1)[1]
        counts = {q["name"]: q["ready"] for q in (await api.get("/queues")).json()["queues"]}
        assert counts == {a: 3, b: 1}
    messages = cluster.client()
    keys = keys_of(settings)
    assert messages.hlen(keys.for_queue(a).queue_messages(a)) == 3
    assert messages.hlen(keys.for_queue(b).queue_messages(b)) == 1


async def test_an_idempotency_key_holds_per_queue(settings: Settings, registry: JobRegistry) -> None:
    async with api_of(settings, registry) as api:
        first = await api.post("/enqueue", json=job("aJob"), headers={"Idempotency-Key": "order-1"})
        again = await api.post("/enqueue", json=job("aJob"), headers={"Idempotency-Key": "order-1"})
        other = await api.post("/enqueue", json=job("bJob"), headers={"Idempotency-Key": "order-1"})
        assert (first.status_code, again.status_code, other.status_code) == (202, 200, 202), other.text
        assert again.json()["jobId"] == first.json()["jobId"]
        assert other.json()["jobId"] != first.json()["jobId"]
        queues = {q["name"]: q["ready"] for q in (await api.get("/queues")).json()["queues"]}
        assert sorted(queues.values()) == [1, 1]


async def test_the_listing_pages_through_both_queues_newest_first(
    queues: tuple[str, str], settings: Settings, registry: JobRegistry
) -> None:
    async with api_of(settings, registry) as api:
        ids = []
        for n in range(6):
            ids.append(await enqueued(api, "aJob" if n % 2 else "bJob", n))
            ids.append(await enqueued(api, "aJob", n))
        seen: list[str] = []
        cursor = ""
        for _ in range(20):
            page = await api.get("/jobs", params={"limit": 5, "cursor": cursor})
            assert page.status_code == 200, page.text
            seen += [record["jobId"] for record in page.json()["jobs"]]
            cursor = page.json()["nextCursor"]
            if cursor is None:
                break
        # Newest first: by enqueue time, then (jobs of one millisecond) by job id, descending.
        enqueued_at = {job_id: (await api.get(f"/jobs/{job_id}")).json()["enqueuedAt"] for job_id in ids}
        newest_first = sorted(ids, key=lambda job_id: (enqueued_at[job_id], job_id), reverse=True)
        assert seen == newest_first, "newest first, each once, across both queues"
        only_b = (await api.get("/jobs", params={"jobName": "bJob", "limit": 100})).json()["jobs"]
        assert [record["jobId"] for record in only_b] == [i for i in newest_first if i.endswith(f"-{queues[1]}")]
        queued = (await api.get("/jobs", params={"state": "queued", "limit": 100})).json()
        assert len(queued["jobs"]) == len(ids) and queued["nextCursor"] is None


async def test_pause_and_resume_write_the_queue_own_keyspace(
    cluster: ClusterDeployment, queues: tuple[str, str], settings: Settings, registry: JobRegistry
) -> None:
    a, b = queues
    keys = keys_of(settings)
    reader = cluster.client()
    async with api_of(settings, registry) as api:
        paused = await api.post(f"/queues/{b}/pause")
        assert paused.status_code == 200 and paused.json()["paused"] is True, paused.text
        assert reader.hget(keys.for_queue(b).paused(), b) is not None
        assert reader.hget(keys.for_queue(a).paused(), b) is None
        listed = {q["name"]: q["paused"] for q in (await api.get("/queues")).json()["queues"]}
        assert listed == {a: False, b: True}
        assert (await api.get(f"/queues/{a}")).json()["paused"] is False
        resumed = await api.post(f"/queues/{b}/resume")
        assert resumed.status_code == 200 and resumed.json()["paused"] is False, resumed.text
        assert reader.hget(keys.for_queue(b).paused(), b) is None


async def test_a_cancel_asks_the_workers_of_the_job_keyspace(
    queues: tuple[str, str], cluster: ClusterDeployment, settings: Settings, registry: JobRegistry
) -> None:
    a, b = queues
    keys = keys_of(settings).for_queue(b)
    redis = cluster.client()
    async with api_of(settings, registry) as api:
        lone = await enqueued(api, "aJob")
        canceled = await api.post(f"/jobs/{lone}/cancel")  # no worker alive: none can start it
        assert canceled.status_code == 200 and canceled.json()["state"] == "canceled", canceled.text

        # A worker of queue b, alive in b's keyspace: it gets the request there and answers there.
        job_id = await enqueued(api, "bJob")
        redis.zadd(keys.heartbeats(), {"worker-1": now_ms()})
        asked: list[str] = []

        def worker() -> None:
            reply = redis.blpop([keys.cancel_requests("worker-1")], timeout=10)
            if reply is not None:
                asked.append(reply[1].decode())
                redis.rpush(keys.cancel_answer(job_id), CANCEL_STOPPED)

        thread = threading.Thread(target=worker)
        thread.start()
        try:
            answer = await api.post(f"/jobs/{job_id}/cancel")
        finally:
            await asyncio.to_thread(thread.join, 15)
        assert answer.status_code == 200, answer.text
        assert answer.json()["state"] == "canceled"
        assert asked == [f"{job_id}|0"]


def fail(settings: Settings, job_id: str, job_name: str, queue: str) -> None:
    """What a worker writes when a job is dead-lettered, on the master of the job's keyspace."""
    shards = make_shards(settings, keys_of(settings))
    try:
        log = OutcomeLog.for_settings(shards.keys, settings)
        commands = log.failed(
            job_id=job_id, job_name=job_name, queue=queue, error="boom", traceback="Traceback: boom", attempts=1,
            data_json="{}", dead_letter_id="", duration_ms=5, at_ms=now_ms(),
        )  # fmt: skip
        run_atomically(shards.for_job(job_id).client, commands)
    finally:
        shards.close()


async def test_dead_letters_of_both_queues_are_listed_retried_and_deleted(
    queues: tuple[str, str], settings: Settings, registry: JobRegistry
) -> None:
    a, b = queues
    async with api_of(settings, registry) as api:
        ids = {await enqueued(api, "aJob"): ("aJob", a), await enqueued(api, "bJob"): ("bJob", b)}
        for job_id, (name, queue) in ids.items():
            fail(settings, job_id, name, queue)
        failed = (await api.get("/jobs", params={"state": "failed"})).json()["jobs"]
        assert {record["jobId"] for record in failed} == set(ids)
        counts = {q["name"]: q["ready"] for q in (await api.get("/queues")).json()["queues"]}
        assert counts == {a: 1, b: 1}  # their messages were never fetched: still on their lists

        retried = await api.post("/jobs/retry", json={"state": "failed"})
        assert retried.status_code == 200 and retried.json() == {"requeued": 2}, retried.text
        for job_id in ids:
            assert (await api.get(f"/jobs/{job_id}")).json()["state"] == "queued"
        assert (await api.get("/jobs", params={"state": "failed"})).json()["jobs"] == []

        for job_id, (name, queue) in ids.items():
            fail(settings, job_id, name, queue)
        a_id, b_id = ids
        assert (await api.post(f"/jobs/{a_id}/retry")).status_code == 202
        deleted = await api.delete("/jobs", params={"state": "failed", "jobName": "bJob"})
        assert deleted.status_code == 200 and deleted.json() == {"deleted": 1}, deleted.text
        assert (await api.get(f"/jobs/{b_id}")).status_code == 404
        assert (await api.get(f"/jobs/{a_id}")).json()["state"] == "queued"


async def test_metrics_and_readiness_gather_every_shard(
    queues: tuple[str, str], settings: Settings, registry: JobRegistry, cluster: ClusterDeployment
) -> None:
    a, b = queues
    async with api_of(settings, registry) as api:
        await enqueued(api, "aJob")
        await enqueued(api, "bJob")
        await enqueued(api, "bJob")
        cluster.client().zadd(keys_of(settings).for_queue(a).heartbeats(), {"worker-9": now_ms()})
        cluster.client().zadd(keys_of(settings).for_queue(b).heartbeats(), {"worker-9": now_ms()})
        assert (await api.get("/readyz")).status_code == 200
        text = (await api.get("/metrics")).text
    assert f'taskqueue_queue_depth{{queue="{a}",state="ready"}} 1.0' in text
    assert f'taskqueue_queue_depth{{queue="{b}",state="ready"}} 2.0' in text
    assert f'taskqueue_jobs_enqueued_total{{job="bJob",queue="{b}"}} 2.0' in text
    assert "taskqueue_workers_alive 1.0" in text  # one worker, stamped in both keyspaces
    assert "taskqueue_redis_up 1.0" in text
