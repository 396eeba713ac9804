"""POST /jobs/{id}/cancel: a job that has not started never will; a running one is asked to stop.

The decision is made in Redis, atomically against the job's record (cancel.lua): from then on no
fetch hands the job out and no delayed message of it goes back on its queue. A worker process may
have fetched it before: each live one decides under the lock its starts take
(app/middleware/start_gate.py) and answers "stopped" (it never starts there) or "started" (it
had started: 202, its cancel requested; with ?force=true interrupted); all "stopped" is a 200. A
worker that is dead cannot start it: its messages go back through a fetch, which drops a
canceled job. A job put back on its queue on purpose after (retry) runs again.
"""

from __future__ import annotations

import time
from typing import Any

import redis.asyncio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from app.api.auth import authorize
from app.api.context import Api, api_of
from app.api.errors import ApiError, deadline
from app.api.jobs import path_job_id
from app.broker.messages import CANCEL_STARTED as STARTED
from app.broker.messages import CANCEL_STOPPED as STOPPED
from app.connection.shards import Shard
from app.errors import JobNotFound
from app.outcomes import packed
from app.outcomes.record import DETAIL_FIELDS, RUNNING, SUCCEEDED, now_ms, public

#: How long the API waits for the worker holding the job to answer (it reads every 0.1 s).
ANSWER_WAIT_S = 2.0


async def cancel_job(request: Request) -> Response:
    authorize(request, write=True)
    api = api_of(request)
    job_id = path_job_id(request)
    force = request.query_params.get("force", "false")
    if force not in ("true", "false"):
        raise ApiError(400, "force takes true or false")
    status, body = await cancel(api, job_id, force=force == "true")
    return JSONResponse(body, status_code=status)


async def cancel(api: Api, job_id: str, *, force: bool = False) -> tuple[int, dict[str, Any]]:
    """Cancel a job: the status (200 or 202) and the job as it is then, with a message; JobNotFound,
    or ApiError 409 if it has finished. (The console's cancel button calls this too.)"""
    shard = api.store.shard_of(job_id)  # on a Redis Cluster, the job's queue's keyspace
    client = shard.client
    async with deadline():
        job_name = await client.hget(shard.keys.job(job_id), "jobName")
        if job_name is not None:
            outcome = _text(
                await client.execute_command(
                    *api.store.log.cancel(job_id=job_id, job_name=_text(job_name), at_ms=now_ms())
                )
            )
        elif await client.hexists(packed.bucket_key(shard.keys, job_id), job_id):
            outcome = SUCCEEDED  # its record is packed (app/outcomes/packed.py)
        else:
            raise JobNotFound(job_id)
    if outcome == "missing":
        raise JobNotFound(job_id)
    if outcome not in ("canceled", RUNNING):
        raise ApiError(
            409, f"job {job_id} is {outcome}: only queued, delayed, retrying or running jobs can be canceled"
        )
    answer = await _ask_workers(api, shard, job_id, force)
    async with deadline():
        record = await api.store.get(job_id, DETAIL_FIELDS)
    body: dict[str, Any] = public(record, DETAIL_FIELDS)
    if outcome == "canceled" and answer in (None, STOPPED):
        return 200, {**body, "message": "Job canceled: it will not run"}
    if answer is None and outcome == "canceled":
        message = "Cancel recorded, but a worker did not confirm in time: it may have started the job"
    elif outcome == "canceled":
        message = f"The job had started before the cancel: it is {body['state']}"
    else:
        message = "Job is running: its cancel is requested (context.job.cancelled())" + (
            " and it is being interrupted" if force else ""
        )
    return 202, {**body, "message": message}


async def _ask_workers(api: Api, shard: Shard[redis.asyncio.Redis], job_id: str, force: bool) -> str | None:
    """What the live worker processes answer: STARTED if one had started the job, STOPPED if none
    will (none is alive: a dead one cannot start anything, and its jobs come back through a
    fetch, which drops a canceled job), or None if one stayed silent for ANSWER_WAIT_S.

    Every live worker is asked, rather than the one that fetched the job last: that would cost
    each fetch a write to the job's record, and cancels are rare. On a Redis Cluster, those of the
    job's keyspace: every worker that serves its queue stamps its heartbeat there, and reads its
    cancel requests there."""
    keys, client = shard.keys, shard.client
    async with deadline():
        live: list[Any] = await client.zrangebyscore(
            keys.heartbeats(), now_ms() - api.settings.heartbeat_timeout_ms, "+inf"
        )
        if not live:
            return STOPPED
        async with client.pipeline(transaction=True) as pipeline:
            pipeline.delete(keys.cancel_answer(job_id))
            for broker_id in live:
                pipeline.rpush(keys.cancel_requests(_text(broker_id)), f"{job_id}|{int(force)}")
            await pipeline.execute()
    answers: list[str] = []
    give_up = time.monotonic() + ANSWER_WAIT_S
    while len(answers) < len(live):
        left = give_up - time.monotonic()
        reply: Any = await client.blpop([keys.cancel_answer(job_id)], timeout=max(0.01, left)) if left > 0 else None
        if reply is None:
            break
        answers.append(_text(reply[1]))
        if answers[-1] == STARTED:
            return STARTED
    return STOPPED if len(answers) == len(live) else None


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
