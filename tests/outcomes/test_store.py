"""JobStore on fakeredis: cursor pagination through ties, bulk requeue and delete in bounded batches."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import fakeredis
import pytest

from app.broker.enqueue import Enqueuer
from app.connection.commands import Command, run_commands
from app.errors import JobStateConflict
from app.keys import Keys
from app.outcomes.log import OutcomeLog
from app.outcomes.record import index_score, now_ms
from app.outcomes.store import JobStore
from app.settings import Settings
from tests.support.any_jobs import any_registry

KEYS = Keys()
LOG = OutcomeLog(keys=KEYS, retention_seconds=3600)


ENQUEUER = Enqueuer(registry=any_registry(), keys=KEYS, log=LOG, settings=Settings(max_retries=2))


def make_store(client: Any) -> JobStore:
    return JobStore(client=client, keys=KEYS, log=LOG, enqueuer=ENQUEUER)


@pytest.fixture
def server() -> fakeredis.FakeServer:
    return fakeredis.FakeServer()


def seed(server: fakeredis.FakeServer, *transitions: list[Command]) -> None:
    client = fakeredis.FakeRedis(server=server)
    with client.pipeline() as pipeline:
        for commands in transitions:
            run_commands(pipeline, commands)
        pipeline.execute()
    client.close()


def enqueued(job_id: str, at_ms: int, sequence: int = 0, job_name: str = "aJob") -> tuple[str, list[Command]]:
    """A new job's enqueue (its record, index entries and message): its redis id and commands."""
    message, _ = ENQUEUER.message(job_name, {"n": job_id}, job_id=job_id)
    stored, commands = ENQUEUER.commands(message, None, at_ms=at_ms, sequence=sequence)
    return stored.options["redis_message_id"], commands


def queued(job_id: str, at_ms: int, sequence: int = 0, job_name: str = "aJob") -> list[Command]:
    return enqueued(job_id, at_ms, sequence, job_name)[1]


def failed(job_id: str, at_ms: int, job_name: str = "aJob") -> list[Command]:
    """Enqueued, fetched and acked by a worker (its message leaves the queue), run and failed."""
    redis_id, commands = enqueued(job_id, at_ms - 10, job_name=job_name)
    return [
        *commands,
        ("LREM", KEYS.queue("default"), 0, redis_id),
        ("HDEL", KEYS.queue_messages("default"), redis_id),
        LOG.running(job_id=job_id, job_name=job_name, queue="default", attempt=1, at_ms=at_ms - 5),
        *LOG.failed(
            job_id=job_id,
            job_name=job_name,
            queue="default",
            error="E",
            traceback="",
            attempts=1,
            data_json=json.dumps({"n": job_id}),
            dead_letter_id="",
            duration_ms=1,
            at_ms=at_ms,
        ),
    ]


def walk(loop: asyncio.AbstractEventLoop, store: JobStore, *, limit: int, **filters: Any) -> list[list[str]]:
    """Every page of a listing, following nextCursor to the end."""
    pages: list[list[str]] = []
    cursor = None
    while True:
        records, next_cursor = loop.run_until_complete(
            store.list(state=filters.get("state"), job_name=filters.get("job_name"), limit=limit, cursor=cursor)
        )
        pages.append([record["jobId"] for record in records])
        assert len(pages) < 1_000, "pagination does not end"
        if next_cursor is None:
            return pages
        assert len(records) == limit, "only the last page may be short"
        score, _, member = next_cursor.partition("-")
        cursor = (int(score), member)


@pytest.mark.parametrize("limit", [1, 7, 50, 200])
def test_pages_walk_every_job_once_newest_first_through_ties(
    loop: asyncio.AbstractEventLoop, server: fakeredis.FakeServer, limit: int
) -> None:
    # 300 jobs in one millisecond with the same score (e.g. finished together, or enqueued by
    # concurrent requests), between older and newer jobs with scores of their own.
    jobs = [queued(f"old-{n:03}", 1_000 + n) for n in range(20)]
    jobs += [queued(f"tie-{n:03}", 5_000) for n in range(300)]
    jobs += [queued(f"new-{n:03}", 9_000 + n, sequence=n) for n in range(20)]
    seed(server, *jobs)
    store = make_store(fakeredis.FakeAsyncRedis(server=server))
    pages = walk(loop, store, limit=limit)
    listed = [job_id for page in pages for job_id in page]
    expected = (
        [f"new-{n:03}" for n in reversed(range(20))]
        + [f"tie-{n:03}" for n in reversed(range(300))]
        + [f"old-{n:03}" for n in reversed(range(20))]
    )
    assert listed == expected
    assert pages[-1], "no empty last page"


def test_expired_records_are_passed_over_and_filters_apply(
    loop: asyncio.AbstractEventLoop, server: fakeredis.FakeServer
) -> None:
    seed(
        server,
        *[queued(f"a-{n}", 1_000 + n) for n in range(10)],
        *[queued(f"b-{n}", 2_000 + n, job_name="bJob") for n in range(5)],
    )
    seed(server, failed("a-f", 3_000), failed("b-f", 3_001, job_name="bJob"))
    client = fakeredis.FakeRedis(server=server)
    client.delete(KEYS.job("a-3"), KEYS.job("a-4"))  # expired: index entries remain until cleanup
    store = make_store(fakeredis.FakeAsyncRedis(server=server))
    listed = [j for page in walk(loop, store, limit=3) for j in page]
    assert listed == [
        "b-f",
        "a-f",
        *[f"b-{n}" for n in reversed(range(5))],
        *[f"a-{n}" for n in (9, 8, 7, 6, 5, 2, 1, 0)],
    ]
    assert [j for page in walk(loop, store, limit=2, job_name="aJob") for j in page] == [
        "a-f",
        *[f"a-{n}" for n in (9, 8, 7, 6, 5, 2, 1, 0)],
    ]
    assert [j for page in walk(loop, store, limit=2, state="failed") for j in page] == ["b-f", "a-f"]
    assert walk(loop, store, limit=5, state="failed", job_name="bJob") == [["b-f"]]
    assert walk(loop, store, limit=5, state="succeeded") == [[]]


def test_bulk_requeue_goes_in_batches_and_passes_over_jobs_that_changed(
    loop: asyncio.AbstractEventLoop, server: fakeredis.FakeServer
) -> None:
    seed(server, *[failed(f"f-{n:02}", 1_000 + n) for n in range(25)], failed("b-f", 1_100, job_name="bJob"))
    client = fakeredis.FakeRedis(server=server)
    # Two entries whose job is no longer failed sit at the head of the index (oldest first).
    client.hset(KEYS.job("f-00"), "state", "queued")
    client.hset(KEYS.job("f-01"), "state", "succeeded")
    store = make_store(fakeredis.FakeAsyncRedis(server=server))
    assert loop.run_until_complete(store.requeue_many(job_name="aJob", batch_size=4, max_jobs=10)) == 10
    assert loop.run_until_complete(store.requeue_many(job_name="aJob", batch_size=4, max_jobs=1_000)) == 13
    assert loop.run_until_complete(store.requeue_many(job_name="aJob", batch_size=4, max_jobs=1_000)) == 0
    assert client.zrange(KEYS.state_index("failed", "aJob"), 0, -1) == [b"f-00", b"f-01"]
    assert client.zrange(KEYS.state_index("failed"), 0, -1) == [b"f-00", b"f-01", b"b-f"]
    assert client.llen(KEYS.queue("default")) == 23
    record = loop.run_until_complete(store.get("f-10"))
    assert record["state"] == "queued" and record["attempts"] == 0 and record["requeues"] == 1
    assert record["error"] == "E"  # the earlier failure stays visible
    with pytest.raises(JobStateConflict):
        loop.run_until_complete(store.requeue("f-10"))


def test_a_bulk_requeue_takes_each_job_once_even_if_it_fails_again_meanwhile(
    loop: asyncio.AbstractEventLoop, server: fakeredis.FakeServer
) -> None:
    seed(server, *[failed(f"f-{n}", 1_000 + n) for n in range(3)])
    client = fakeredis.FakeRedis(server=server)
    store = make_store(fakeredis.FakeAsyncRedis(server=server))
    requeue = store._requeue
    taken: list[str] = []

    async def requeue_and_fail_again(job_id: str) -> None:
        await requeue(job_id)
        taken.append(job_id)
        # A worker fails it again at once (a receiver that always refuses): it is failed anew.
        client.hset(KEYS.job(job_id), "state", "failed")
        client.zadd(KEYS.state_index("failed", "aJob"), {job_id: index_score(now_ms() + 5)})

    store._requeue = requeue_and_fail_again  # type: ignore[method-assign]
    assert loop.run_until_complete(store.requeue_many(job_name="aJob", batch_size=1, max_jobs=1_000)) == 3
    assert taken == ["f-0", "f-1", "f-2"]


def test_bulk_delete_goes_in_batches_and_keeps_other_jobs(
    loop: asyncio.AbstractEventLoop, server: fakeredis.FakeServer
) -> None:
    seed(server, *[failed(f"f-{n:02}", 1_000 + n) for n in range(12)], failed("b-f", 1_100, job_name="bJob"))
    seed(server, queued("q-1", 5_000))
    client = fakeredis.FakeRedis(server=server)
    client.hset(KEYS.job("f-00"), "state", "running")
    store = make_store(fakeredis.FakeAsyncRedis(server=server))
    assert loop.run_until_complete(store.delete_many(job_name=None, batch_size=5, max_jobs=1_000)) == 12
    assert client.zrange(KEYS.state_index("failed"), 0, -1) == [b"f-00"]
    assert not client.exists(KEYS.job("f-05"), KEYS.failed_job_compat("f-05"), KEYS.job("b-f"))
    assert client.zscore(KEYS.all_index(), "f-05") is None and client.zscore(KEYS.all_index("aJob"), "f-05") is None
    assert client.exists(KEYS.job("q-1")) and client.exists(KEYS.job("f-00"))
    with pytest.raises(JobStateConflict):
        loop.run_until_complete(store.delete("q-1"))
