"""Bulk retry and delete of failed jobs, run in the API process in bounded batches, with their
progress in Redis (keys.console_bulk) so that any API process can show it.

A filter's pass takes the jobs that had failed when it began, oldest first, BATCH at a time (as
POST /jobs/retry does); a hand-picked set takes those ids. A job that changed meanwhile (retried
by someone else, no longer failed) is counted as skipped.

On a Redis Cluster a filter's pass goes through each queue's keyspace in turn (a job type's failed
jobs can be on any queue), and the progress is kept in the keyspace of the first declared queue
(by name), where every API process of the deployment finds it from the operation id alone.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio
from starlette.applications import Starlette

from app.api.context import Api
from app.api.errors import deadline
from app.connection.shards import Shard
from app.errors import InvalidJobData, JobNotFound, JobStateConflict, UnknownJob
from app.outcomes.record import FAILED, index_score, now_ms

logger = logging.getLogger(__name__)

#: Index entries read at once, and progress written after each batch.
BATCH = 200
#: A bulk action stops after this many jobs (run it again for more).
MAX_JOBS = 1_000_000
#: How long a finished action's progress stays readable.
PROGRESS_TTL_S = 24 * 3600
ACTIONS = ("retry", "delete")


@dataclass(frozen=True)
class BulkRequest:
    action: str
    job_name: str | None = None
    error_text: str | None = None
    ids: tuple[str, ...] = ()

    def describe(self) -> str:
        if self.ids:
            return f"{len(self.ids)} selected failed job(s)"
        parts = ["failed jobs"]
        if self.job_name:
            parts.append(f"of type {self.job_name}")
        if self.error_text:
            parts.append(f"whose error contains “{self.error_text}”")
        return " ".join(parts)


async def start(app: Starlette, api: Api, request: BulkRequest, expected: int) -> str:
    """Start a bulk action in this process; its id, for its progress page (which finds its
    progress at once: the first is written before this returns)."""
    operation_id = secrets.token_hex(8)
    async with deadline():
        await _save(
            api, operation_id, action=request.action, what=request.describe(), expected=expected, done=0,
            skipped=0, state="running", startedAt=now_ms(),
        )  # fmt: skip
    tasks: set[asyncio.Task[None]] = app.state.__dict__.setdefault("console_bulk_tasks", set())
    task = asyncio.create_task(_run(api, operation_id, request))
    tasks.add(task)
    task.add_done_callback(tasks.discard)
    return operation_id


def _progress_shard(api: Api) -> Shard[redis.asyncio.Redis]:
    """Where the progress of bulk actions is kept: the keyspace of the first declared queue (on one
    Redis, the one)."""
    queues = api.registry.queues()
    return api.shards.for_queue(queues[0]) if queues else Shard(api.keys, api.client)


async def _save(api: Api, operation_id: str, **fields: Any) -> None:
    shard = _progress_shard(api)
    key = shard.keys.console_bulk(operation_id)
    async with shard.client.pipeline(transaction=False) as pipeline:
        pipeline.hset(key, mapping={name: str(value) for name, value in fields.items()})
        pipeline.expire(key, PROGRESS_TTL_S)
        await pipeline.execute()


async def progress(api: Api, operation_id: str) -> dict[str, str] | None:
    shard = _progress_shard(api)
    raw = await shard.client.hgetall(shard.keys.console_bulk(operation_id))
    if not raw:
        return None
    return {_text(k): _text(v) for k, v in raw.items()}


async def _run(api: Api, operation_id: str, request: BulkRequest) -> None:
    done = skipped = 0
    act = api.store.requeue if request.action == "retry" else api.store.delete

    async def one(job_id: str) -> bool:
        try:
            await act(job_id)
            return True
        except (JobNotFound, JobStateConflict, InvalidJobData, UnknownJob):
            return False

    try:
        for batch in _batches(request.ids) if request.ids else []:
            for job_id in batch:
                if await one(job_id):
                    done += 1
                else:
                    skipped += 1
            await _save(api, operation_id, done=done, skipped=skipped)
        failed_before = index_score(now_ms(), 999)
        for shard in [] if request.ids else api.shards.of_queues(api.registry.queues()):
            counts = await _filter_pass(api, shard, operation_id, request, one, failed_before, (done, skipped))
            done, skipped = counts
        await _save(api, operation_id, done=done, skipped=skipped, state="finished", finishedAt=now_ms())
    except Exception as error:  # noqa: BLE001 - the page must show that it stopped, and why
        logger.exception("Console bulk %s stopped after %d job(s)", request.action, done)
        await _save(api, operation_id, done=done, skipped=skipped, state="stopped", error=str(error)[:300])


async def _filter_pass(
    api: Api,
    shard: Shard[redis.asyncio.Redis],
    operation_id: str,
    request: BulkRequest,
    one: Callable[[str], Awaitable[bool]],
    failed_before: int,
    counts: tuple[int, int],
) -> tuple[int, int]:
    """A filter's pass over one keyspace's jobs failed before the index score `failed_before`:
    the counts of done and skipped (`counts` before it) after it."""
    keys, client = shard.keys, shard.client
    index = keys.state_index(FAILED, request.job_name)
    done, skipped = counts
    kept = 0  # entries at the head of the index that stay there (not matching, or changed)
    needle = (request.error_text or "").lower()
    while done < MAX_JOBS:
        members: Any = await client.zrangebyscore(index, "-inf", failed_before, start=kept, num=BATCH)
        ids = [m.decode() for m in members]
        if not ids:
            break
        if needle:
            async with client.pipeline(transaction=False) as pipeline:
                for job_id in ids:
                    pipeline.hget(keys.job(job_id), "error")
                errors = await pipeline.execute()
            matching = [
                job_id for job_id, error in zip(ids, errors, strict=True)
                if error is not None and needle in error.decode().lower()
            ]  # fmt: skip
            kept += len(ids) - len(matching)
            ids = matching
        for job_id in ids:
            if await one(job_id):
                done += 1
            else:
                skipped += 1
                kept += 1
        await _save(api, operation_id, done=done, skipped=skipped)
    return done, skipped


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _batches(ids: Sequence[str]) -> list[Sequence[str]]:
    return [ids[i : i + BATCH] for i in range(0, len(ids), BATCH)]
