"""POST /enqueue and POST /enqueue/batch: where jobs are accepted over HTTP."""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from app.api.auth import authorize
from app.api.body import json_body
from app.api.context import Api, api_of
from app.api.errors import ApiError, deadline
from app.broker.enqueue import JOB_REQUEST_FIELDS
from app.connection.api_writes import run_confirmed
from app.connection.commands import Command
from app.errors import InvalidJobData, UnknownJob, shown
from app.keys import Keys
from app.outcomes.record import now_ms

#: The longest Idempotency-Key accepted.
MAX_IDEMPOTENCY_KEY = 200


def _characters(header: str) -> int:
    """How many characters a header's value has. Starlette decodes header bytes as latin-1, one
    character per byte: a UTF-8 value has fewer characters than that (bytes, if it is not UTF-8)."""
    raw = header.encode("latin-1")
    try:
        return len(raw.decode())
    except UnicodeDecodeError:
        return len(raw)


def _job_added(job_id: str) -> Response:
    # JSONResponse's bytes for {"message": "Job added", "jobId": ...}, without encoding a dict
    # on every request (job ids are hex digits: nothing to escape).
    body = b'{"message":"Job added","jobId":"' + job_id.encode() + b'"}'
    return Response(body, status_code=202, media_type="application/json")


def _job_request(api: Api, item: Any) -> tuple[Any, int | None]:
    if not isinstance(item, dict):
        raise ApiError(400, 'body must be a JSON object like {"jobName": "emailJob", "data": {...}}')
    if "jobName" not in item:
        raise ApiError(400, f"jobName is missing: use one of {', '.join(api.registry.names())}")
    if "data" not in item:
        raise InvalidJobData(str(item["jobName"]), {"data": "field required (a JSON object)"})
    unknown = set(item) - set(JOB_REQUEST_FIELDS)
    if unknown:
        raise ApiError(
            400, f"unknown field(s) {shown(', '.join(sorted(unknown)))}: allowed are {', '.join(JOB_REQUEST_FIELDS)}"
        )
    return api.enqueuer.from_request(item)


async def enqueue(request: Request) -> Response:
    authorize(request, write=True)
    api = api_of(request)
    body = await json_body(request)
    message, delay = _job_request(api, body)
    idempotency_key = request.headers.get("idempotency-key")
    if idempotency_key is None:
        stored, commands = api.enqueuer.commands(message, delay)
        # The batcher bounds its own round trip (REDIS_DEADLINE_S): no second timer per request.
        await api.batcher.submit(commands, api.keys.for_queue(stored.queue_name))
        return _job_added(stored.message_id)
    if not idempotency_key.strip():
        # Most likely an unset variable on the client: enqueuing without the key would not be
        # what it asked for (a resend would add the job twice).
        raise ApiError(
            400, f"Idempotency-Key is empty: send a key of 1 to {MAX_IDEMPOTENCY_KEY} characters, or no header"
        )
    if len(idempotency_key) > MAX_IDEMPOTENCY_KEY and _characters(idempotency_key) > MAX_IDEMPOTENCY_KEY:
        raise ApiError(400, f"Idempotency-Key is longer than {MAX_IDEMPOTENCY_KEY} characters")
    stored, command = api.enqueuer.command_once(message, delay, idempotency_key, api.settings.idempotency_ttl_seconds)
    # On a Redis Cluster the key is kept in the queue's keyspace: a key is unique per queue there.
    shard = api.shards.for_queue(stored.queue_name)
    async with deadline():
        existing = await run_confirmed(
            shard.client,
            command,
            fence=shard.keys.replication_fence(),
            wait_replicas=api.settings.redis_wait_replicas,
            wait_timeout_ms=api.settings.redis_wait_timeout_ms,
        )
    if existing:
        return JSONResponse({"message": "Job already added", "jobId": existing.decode()}, status_code=200)
    return _job_added(stored.message_id)


async def enqueue_batch(request: Request) -> Response:
    authorize(request, write=True)
    api = api_of(request)
    body = await json_body(request)
    jobs = body.get("jobs") if isinstance(body, dict) else None
    if not isinstance(jobs, list) or not jobs:
        raise ApiError(400, 'body must be {"jobs": [{"jobName": ..., "data": {...}}, ...]} with at least one job')
    unknown = set(body) - {"jobs"}
    if unknown:
        raise ApiError(400, f"unknown field(s) {shown(', '.join(sorted(unknown)))}: the only one allowed is jobs")
    limit = api.settings.max_batch_jobs
    if len(jobs) > limit:
        raise ApiError(413, f"{len(jobs)} jobs in one batch; the limit is {limit}: split the batch")
    prepared, problems = [], []
    for index, item in enumerate(jobs):
        try:
            prepared.append(_job_request(api, item))
        except ApiError as error:
            problems.append({"index": index, "error": error.message})
        except UnknownJob as error:
            problems.append({"index": index, "error": str(error)})
        except InvalidJobData as error:
            problems.append({"index": index, "error": str(error), "fields": error.problems})
    if problems:
        raise ApiError(422, f"{len(problems)} of {len(jobs)} jobs are invalid; nothing was enqueued", details=problems)
    at = now_ms()
    # By keyspace: one atomic write per keyspace (on one Redis, the one: all or none; on a Redis
    # Cluster, one per queue's keyspace, each all or none).
    commands: dict[Keys, list[Command]] = {}
    ids = []
    for sequence, (message, delay) in enumerate(prepared):
        stored, job_commands = api.enqueuer.commands(message, delay, at_ms=at, sequence=sequence)
        commands.setdefault(api.keys.for_queue(stored.queue_name), []).extend(job_commands)
        ids.append(stored.message_id)
    async with deadline():
        if len(commands) == 1:
            [(keys, only)] = commands.items()
            await api.batcher.submit(only, keys)
        else:
            await _submit_all(api, commands)
    return JSONResponse({"message": f"{len(ids)} jobs added", "jobIds": ids}, status_code=202)


async def _submit_all(api: Api, commands: dict[Keys, list[Command]]) -> None:
    """Each keyspace's commands in its own write, at once; the first failure is raised once all
    have answered (the others' jobs are then enqueued: a batch is all or none per keyspace)."""
    results = await asyncio.gather(
        *(api.batcher.submit(some, keys) for keys, some in commands.items()), return_exceptions=True
    )
    for result in results:
        if isinstance(result, BaseException):
            raise result
