"""Reading outcome records and acting on them (requeue, delete) for the API."""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import redis.asyncio
from redis.exceptions import WatchError

from app.connection.commands import Command, run_commands
from app.connection.shards import AsyncShards, Shard
from app.errors import InvalidJobData, JobNotFound, JobStateConflict, UnknownJob
from app.keys import Keys, UnknownJobId
from app.outcomes import packed
from app.outcomes.log import OutcomeLog
from app.outcomes.record import CANCELED, FAILED, FINAL_STATES, SUCCEEDED, decode_record, index_score, now_ms, public

#: Index entries read at once while passing over entries an earlier page showed.
MAX_CHUNK = 1_000


class Requeuer(Protocol):
    """What puts a finished job back on its queue (app/broker/enqueue.py's Enqueuer)."""

    def requeue_commands(
        self, job_name: object, data: Any, job_id: str, *, queue: str | None = None, priority: str | None = None
    ) -> tuple[str, builtins.list[Command]]:
        """The job's queue, and the commands that put the job back on it."""
        ...


@dataclass
class JobStore:
    """The API's side of the outcome log: read and list job records, requeue and delete failed jobs.

    On a Redis Cluster each queue's records are in its own keyspace: a job's is found from its id,
    and a listing or a bulk action goes through the keyspace of every queue in `queues`."""

    client: redis.asyncio.Redis
    keys: Keys
    log: OutcomeLog
    enqueuer: Requeuer
    #: The clients of the keyspaces (default: `client` holds them all).
    shards: AsyncShards | None = None
    #: The declared queues, whose keyspaces a listing reads (without a cluster there is one).
    queues: Sequence[str] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.shards is None:
            self.shards = AsyncShards.single(self.client, self.keys)

    def _shards(self) -> AsyncShards:
        assert self.shards is not None
        return self.shards

    def shard_of(self, job_id: str) -> Shard[redis.asyncio.Redis]:
        """The keyspace of a job and its client; JobNotFound for an id no keyspace can hold."""
        try:
            return self._shards().for_job(job_id)
        except UnknownJobId:
            raise JobNotFound(job_id) from None

    def all_shards(self) -> builtins.list[Shard[redis.asyncio.Redis]]:
        """A shard per keyspace of the declared queues (the one, without a cluster)."""
        return self._shards().of_queues(self.queues)

    async def get(self, job_id: str, fields: Sequence[str] | None = None) -> dict[str, Any]:
        """A job's record, decoded; only `fields` of it are read when given (its data can be large)."""
        shard = self.shard_of(job_id)
        key = shard.keys.job(job_id)
        async with shard.client.pipeline(transaction=False) as pipeline:
            if fields is None:
                pipeline.hgetall(key)
            else:
                pipeline.hmget(key, fields)
            pipeline.hget(packed.bucket_key(shard.keys, job_id), job_id)  # if it succeeded
            found, packed_record = await pipeline.execute()
        if fields is None:
            raw = found
        else:
            raw = {name: value for name, value in zip(fields, found, strict=True) if value is not None}
        record = packed.packed_or_hash(raw, packed_record, job_id)
        if record is None:
            raise JobNotFound(job_id)
        return record

    async def list(
        self, *, state: str | None, job_name: str | None, limit: int, cursor: tuple[int, str] | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Newest first. The cursor is `<score>-<jobId>` of the last entry of the previous page; the
        next page starts right after it, also among entries with the same score (the jobs of one
        batch, or jobs finished in the same millisecond), which come in descending jobId order.
        Succeeded jobs (all, or of no state given) come from their packed records, placed by their
        ids' time, merged with the index's entries. On a Redis Cluster, each keyspace gives its
        page and the pages merge the same way (places are unique: job ids are)."""
        pages = await asyncio.gather(
            *(self._shard_streams(shard, state, job_name, limit, cursor) for shard in self.all_shards())
        )
        records, next_place = packed.merge([stream for streams in pages for stream in streams], limit)
        return records, _format_cursor(next_place)

    async def _shard_streams(
        self,
        shard: Shard[redis.asyncio.Redis],
        state: str | None,
        job_name: str | None,
        limit: int,
        cursor: tuple[int, str] | None,
    ) -> builtins.list[tuple[Any, tuple[int, str] | None]]:
        """One keyspace's listings (its index, and its packed records), as `packed.merge` takes them."""
        index = shard.keys.state_index(state or "all", job_name)
        listed, frontier = await self._index_page(shard, index, limit, cursor)
        streams: builtins.list[tuple[Any, tuple[int, str] | None]] = [(listed, frontier)]
        if state in (None, SUCCEEDED):
            found = await packed.page(
                shard.client, shard.keys, below=cursor, limit=limit,
                keep=lambda record: job_name in (None, record.get("jobName")),
                must_contain=packed.packed_texts(job_name),
                above=listed[limit - 1][0] if len(listed) >= limit else None,  # the page ends there anyway
            )  # fmt: skip
            streams.append(([(e.place, public(e.record)) for e in found.entries], found.last if found.more else None))
        return streams

    async def _index_page(
        self, shard: Shard[redis.asyncio.Redis], index: str, limit: int, cursor: tuple[int, str] | None
    ) -> tuple[builtins.list[tuple[tuple[int, str], dict[str, Any]]], tuple[int, str] | None]:
        """Up to `limit` records of an index's entries after the cursor, each with its place, and
        the place of the last entry examined if there may be more (None at the index's end)."""
        found: builtins.list[tuple[tuple[int, str], dict[str, Any]]] = []
        chunk = limit + 1
        top: int | str = "+inf" if cursor is None else cursor[0]
        skip = 0  # entries scored `top` already walked in this call, at the top of the range
        last: tuple[int, str] | None = None
        while True:
            rows: Any = await shard.client.zrevrangebyscore(index, top, "-inf", start=skip, num=chunk, withscores=True)
            entries = [(int(score), member.decode()) for member, score in rows]
            # Entries of the cursor's score down to the cursor itself were on earlier pages.
            fresh = [e for e in entries if cursor is None or e[0] < cursor[0] or e[1] < cursor[1]]
            raws = await self._raw_records(shard, [job_id for _, job_id in fresh])
            for entry, raw in zip(fresh, raws, strict=True):
                if len(found) == limit:
                    return found, last
                last = entry
                if raw:  # an entry whose record has expired (or was packed meanwhile) is passed over
                    found.append((entry, public(decode_record(raw))))
            if len(entries) < chunk:
                return found, None
            lowest = entries[-1][0]
            same = sum(1 for score, _ in entries if score == lowest)
            skip = skip + same if lowest == top else same
            top = lowest
            if not fresh:
                chunk = min(chunk * 2, MAX_CHUNK)  # walking through a long run of ties: faster

    async def _raw_records(
        self, shard: Shard[redis.asyncio.Redis], job_ids: Sequence[str]
    ) -> Sequence[dict[bytes, bytes]]:
        if not job_ids:
            return []
        async with shard.client.pipeline(transaction=False) as pipeline:
            for job_id in job_ids:
                pipeline.hgetall(shard.keys.job(job_id))
            return await pipeline.execute()  # type: ignore[no-any-return]

    async def requeue(self, job_id: str) -> dict[str, Any]:
        """Put a failed job back on its queue with the same jobId; JobStateConflict if not failed."""
        await self._requeue(job_id)
        return await self.get(job_id)

    async def _requeue(self, job_id: str) -> None:
        await self._change(job_id, (FAILED, CANCELED), "retried", self._requeue_commands)

    async def _change(
        self,
        job_id: str,
        states: tuple[str, ...],
        verb: str,
        commands_for: Callable[[dict[str, Any]], builtins.list[Command]],
    ) -> None:
        """Read a record and apply `commands_for(record)` atomically, if the job is in one of
        `states` and its record does not change in between (WATCH); JobStateConflict otherwise.
        (On a Redis Cluster every key of the transaction is in the job's keyspace.)"""
        shard = self.shard_of(job_id)
        key = shard.keys.job(job_id)
        async with shard.client.pipeline(transaction=True) as pipeline:
            try:
                await pipeline.watch(key)
                raw = await pipeline.hgetall(key)
                if not raw:
                    await pipeline.reset()
                    await self._change_packed(job_id, states, verb)
                    return
                record = decode_record(raw)
                if record["state"] not in states:
                    raise JobStateConflict(_conflict(job_id, record["state"], states, verb))
                pipeline.multi()
                run_commands(pipeline, commands_for(record))
                await pipeline.execute()
            except WatchError:
                raise JobStateConflict(f"job {job_id} changed while it was being {verb}; try again") from None

    async def _change_packed(self, job_id: str, states: tuple[str, ...], verb: str) -> None:
        """`_change` of a job without a hash: one that succeeded, whose record is packed. Deleting it
        is the one change it takes; JobNotFound if it has no packed record either."""
        shard = self.shard_of(job_id)
        record = await packed.get(shard.client, shard.keys, job_id)
        if record is None:
            raise JobNotFound(job_id)
        if record["state"] not in states or verb != "deleted":
            raise JobStateConflict(_conflict(job_id, record["state"], states, verb))
        await shard.client.execute_command(*self.log.packed_deleted(job_id))

    async def requeue_many(self, *, job_name: str | None, batch_size: int, max_jobs: int) -> int:
        """Requeue failed jobs, oldest failures first, in bounded batches; returns how many."""
        return await self._each_failed(self._requeue, job_name=job_name, batch_size=batch_size, max_jobs=max_jobs)

    async def _each_failed(
        self,
        action: Callable[[str], Awaitable[None]],
        *,
        job_name: str | None,
        batch_size: int,
        max_jobs: int,
    ) -> int:
        """Apply `action` to the jobs that had failed when the pass began, oldest first, reading the
        index `batch_size` ids at a time (a job requeued by this pass that fails again meanwhile is
        not taken a second time). On a Redis Cluster, keyspace after keyspace (oldest first in each),
        `max_jobs` in all."""
        failed_before = index_score(now_ms(), 999)
        done = 0
        for shard in self.all_shards():
            if done >= max_jobs:
                break
            done += await self._each_failed_of(
                shard, action, job_name=job_name, batch_size=batch_size, max_jobs=max_jobs - done,
                failed_before=failed_before,
            )  # fmt: skip
        return done

    async def _each_failed_of(
        self,
        shard: Shard[redis.asyncio.Redis],
        action: Callable[[str], Awaitable[None]],
        *,
        job_name: str | None,
        batch_size: int,
        max_jobs: int,
        failed_before: int,
    ) -> int:
        index = shard.keys.state_index(FAILED, job_name)
        done = 0
        kept = 0  # entries at the head of the index that stay there: their job changed meanwhile
        while done < max_jobs:
            members: Any = await shard.client.zrangebyscore(
                index, "-inf", failed_before, start=kept, num=min(batch_size, max_jobs - done)
            )
            ids = [member.decode() for member in members]
            if not ids:
                break
            for job_id in ids:
                try:
                    await action(job_id)
                    done += 1
                except JobNotFound:
                    await shard.client.zrem(index, job_id)  # its record expired: a stale entry
                except (JobStateConflict, InvalidJobData, UnknownJob):
                    kept += 1  # changed meanwhile, or its data no longer passes its job type's schema
        return done

    def _requeue_commands(self, record: dict[str, Any]) -> builtins.list[Command]:
        queue, commands = self.enqueuer.requeue_commands(
            record["jobName"], record["data"] or {}, record["jobId"], queue=record["queue"], priority=record["priority"]
        )
        return commands + self._dead_letter_removal(record, default_queue=queue)

    def _delete_commands(self, record: dict[str, Any]) -> builtins.list[Command]:
        return self.log.delete(record["jobId"], record["jobName"]) + self._dead_letter_removal(record)

    def _dead_letter_removal(self, record: dict[str, Any], default_queue: str | None = None) -> builtins.list[Command]:
        dead, queue = record.get("deadLetterId"), record.get("queue") or default_queue
        if not dead or not queue:
            return []
        keys = self.keys.for_queue(queue)
        return [("ZREM", keys.dead_letters(queue), dead), ("HDEL", keys.dead_letter_messages(queue), dead)]

    async def delete(self, job_id: str) -> None:
        """Delete a finished job's record, index entries and dead letter; JobStateConflict otherwise."""
        await self._change(job_id, FINAL_STATES, "deleted", self._delete_commands)

    async def delete_many(self, *, job_name: str | None, batch_size: int, max_jobs: int) -> int:
        """Delete failed jobs, oldest failures first, in bounded batches; returns how many."""
        return await self._each_failed(self.delete, job_name=job_name, batch_size=batch_size, max_jobs=max_jobs)


def _conflict(job_id: str, state: str, states: tuple[str, ...], verb: str) -> str:
    return f"job {job_id} is {state}, not {' or '.join(states)}: only {', '.join(states)} jobs can be {verb}"


def _format_cursor(entry: tuple[int, str] | None) -> str | None:
    return f"{entry[0]}-{entry[1]}" if entry else None
