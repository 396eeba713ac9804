"""Reading outcome records and acting on them (requeue, delete) for the API."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import redis.asyncio
from redis.exceptions import WatchError

from app.enqueue import Enqueuer
from app.errors import JobNotFound, JobStateConflict
from app.keys import Keys
from app.outcomes import FAILED, Command, OutcomeLog, decode_record, run_commands

PUBLIC_FIELDS = (
    "jobId",
    "jobName",
    "queue",
    "state",
    "attempts",
    "maxRetries",
    "enqueuedAt",
    "startedAt",
    "finishedAt",
    "durationMs",
    "error",
    "nextRetryAt",
    "runAt",
    "executions",
    "redeliveries",
    "requeues",
)


def public(record: dict[str, Any]) -> dict[str, Any]:
    """A record as `GET /jobs/{id}` shows it (timestamps in ms since the epoch)."""
    return {name: record.get(name) for name in PUBLIC_FIELDS}


@dataclass
class JobStore:
    client: redis.asyncio.Redis
    keys: Keys
    log: OutcomeLog
    enqueuer: Enqueuer

    async def get(self, job_id: str) -> dict[str, Any]:
        raw = await self.client.hgetall(self.keys.job(job_id))
        if not raw:
            raise JobNotFound(job_id)
        record = decode_record(raw)
        record["redeliveries"] = int(raw.get(b"redeliveries", 0))
        return record

    async def list(
        self, *, state: str | None, job_name: str | None, limit: int, cursor: tuple[int, str] | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Newest first; the cursor is `<score>-<jobId>` of the last item of the previous page."""
        index = self.keys.state_index(state or "all", job_name)
        records: list[dict[str, Any]] = []
        max_score: str = "+inf"
        if cursor:
            max_score = str(cursor[0])
        next_cursor = None
        while len(records) < limit:
            want = limit - len(records) + 1
            rows = await self.client.zrevrangebyscore(index, max_score, "-inf", start=0, num=want + 50, withscores=True)
            if cursor:
                # Same-score members come in descending order; skip those already shown.
                rows = [(m, s) for m, s in rows if int(s) < cursor[0] or m.decode() < cursor[1]]
            if not rows:
                break
            ids = [member.decode() for member, _ in rows]
            async with self.client.pipeline(transaction=False) as pipeline:
                for job_id in ids:
                    pipeline.hgetall(self.keys.job(job_id))
                raws = await pipeline.execute()
            last = None
            for (member, score), raw in zip(rows, raws, strict=True):
                last = (int(score), member.decode())
                if raw:
                    records.append(public(decode_record(raw)))
                if len(records) == limit:
                    break
            if last is None:
                break
            cursor = last
            max_score = str(last[0])
            next_cursor = f"{last[0]}-{last[1]}"
            if len(rows) < want:
                next_cursor = None if len(records) < limit else next_cursor
                break
        if len(records) < limit:
            next_cursor = None
        return records, next_cursor

    async def requeue(self, job_id: str) -> dict[str, Any]:
        """Put a failed job back on its queue with the same jobId; JobStateConflict if not failed."""
        key = self.keys.job(job_id)
        async with self.client.pipeline(transaction=True) as pipeline:
            try:
                await pipeline.watch(key)
                raw = await pipeline.hgetall(key)
                if not raw:
                    raise JobNotFound(job_id)
                record = decode_record(raw)
                if record["state"] != FAILED:
                    raise JobStateConflict(
                        f"job {job_id} is {record['state']}, not failed: only failed jobs can be retried"
                    )
                pipeline.multi()
                run_commands(pipeline, self._requeue_commands(record))
                await pipeline.execute()
            except WatchError:
                raise JobStateConflict(f"job {job_id} changed while it was being retried; try again") from None
        return await self.get(job_id)

    async def requeue_many(self, *, job_name: str | None, batch_size: int, max_jobs: int) -> int:
        """Requeue failed jobs, oldest failures first, in bounded batches; returns how many."""
        index = self.keys.state_index(FAILED, job_name)
        done = 0
        while done < max_jobs:
            ids = [m.decode() for m in await self.client.zrange(index, 0, min(batch_size, max_jobs - done) - 1)]
            if not ids:
                break
            moved = 0
            for job_id in ids:
                try:
                    await self.requeue(job_id)
                    moved += 1
                except JobNotFound:
                    await self.client.zrem(index, job_id)
                except JobStateConflict:
                    continue
            done += moved
            if moved == 0:
                break
        return done

    def _requeue_commands(self, record: dict[str, Any]) -> list[Command]:
        message, _ = self.enqueuer.message(record["jobName"], record["data"] or {}, job_id=record["jobId"])
        message = message.copy(options={"requeue": True})
        _, commands = self.enqueuer.commands(message, None)
        dead = record.get("deadLetterId")
        if dead:
            queue = record.get("queue") or message.queue_name
            commands += [
                ("ZREM", self.keys.dead_letters(queue), dead),
                ("HDEL", self.keys.dead_letter_messages(queue), dead),
            ]
        return commands

    async def delete(self, job_id: str) -> None:
        record = await self.get(job_id)
        if record["state"] not in ("failed", "succeeded", "skipped"):
            raise JobStateConflict(
                f"job {job_id} is {record['state']}: only finished jobs (failed, succeeded, skipped) can be deleted"
            )
        commands = self.log.delete(job_id, record["jobName"])
        if record.get("deadLetterId") and record.get("queue"):
            commands += [
                ("ZREM", self.keys.dead_letters(record["queue"]), record["deadLetterId"]),
                ("HDEL", self.keys.dead_letter_messages(record["queue"]), record["deadLetterId"]),
            ]
        async with self.client.pipeline(transaction=True) as pipeline:
            run_commands(pipeline, commands)
            await pipeline.execute()

    async def delete_many(self, *, job_name: str | None, batch_size: int, max_jobs: int) -> int:
        index = self.keys.state_index(FAILED, job_name)
        done = 0
        while done < max_jobs:
            ids = [m.decode() for m in await self.client.zrange(index, 0, min(batch_size, max_jobs - done) - 1)]
            if not ids:
                break
            for job_id in ids:
                try:
                    await self.delete(job_id)
                    done += 1
                except (JobNotFound, JobStateConflict):
                    await self.client.zrem(index, job_id)
        return done


def encode_data(data: Any) -> str:
    return json.dumps(data, separators=(",", ":"))
