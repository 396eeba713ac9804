"""The jobs list (filters, jump to an id, search by error text), a job's page and its actions."""

from __future__ import annotations

import datetime
import json
import re
import shlex
from typing import Any
from urllib.parse import urlencode

import redis.asyncio
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from app.api.cancel import cancel
from app.api.context import Api, api_of
from app.api.errors import ApiError, deadline
from app.api.openapi import JOB_ID_PATTERN
from app.connection.shards import Shard
from app.errors import JobNotFound
from app.keys import UnknownJobId
from app.outcomes import packed
from app.outcomes.record import (
    CANCELED,
    DETAIL_WITH_DATA_FIELDS,
    FAILED,
    FINAL_STATES,
    MAX_HISTORY,
    QUEUED,
    RETRYING,
    RUNNING,
    SKIPPED,
    STATES,
    SUCCEEDED,
)
from app.ui import reads
from app.ui.guard import page, session
from app.ui.render import render

_job_id = re.compile(JOB_ID_PATTERN)
#: The time range choices: label -> how far back (ms).
SINCE = {"15m": 15 * 60_000, "1h": 3_600_000, "24h": 86_400_000, "7d": 7 * 86_400_000}


def _parse_time(raw: str | None) -> int | None:
    """A datetime-local value (read as UTC) as ms since the epoch."""
    if not raw:
        return None
    try:
        moment = datetime.datetime.fromisoformat(raw)
    except ValueError:
        raise ApiError(400, f"{raw[:40]!r} is not a date and time like 2025-01-31T13:45") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return int(moment.timestamp() * 1000)


def job_filter(request: Request, *, state: str | None = None) -> reads.JobFilter:
    api = api_of(request)
    q = request.query_params
    state = state or q.get("state") or None
    if state is not None and state not in STATES:
        raise ApiError(400, f"state must be one of {', '.join(STATES)}")
    job_name = q.get("jobName") or None
    if job_name is not None and job_name not in api.registry.names():
        raise ApiError(400, f"job type must be one of {', '.join(api.registry.names())}")
    queue = q.get("queue") or None
    if queue is not None and queue not in api.registry.queues():
        raise ApiError(400, f"queue must be one of {', '.join(api.registry.queues())}")
    since = _parse_time(q.get("from"))
    if q.get("since") in SINCE:
        since = reads.now_ms() - SINCE[q["since"]]
    return reads.JobFilter(
        state=state,
        job_name=job_name,
        queue=queue,
        error_text=(q.get("q") or "").strip()[:200] or None,
        since_ms=since,
        until_ms=_parse_time(q.get("to")),
        cursor=reads.parse_cursor(q.get("cursor")),
    )


@page()
async def jobs(request: Request) -> Response:
    api = api_of(request)
    wanted = (request.query_params.get("id") or "").strip()
    if wanted:
        if _job_id.match(wanted) and (shard := _shard_of(api, wanted)) is not None:
            async with deadline():
                exists = await shard.client.exists(shard.keys.job(wanted)) or await shard.client.hexists(
                    packed.bucket_key(shard.keys, wanted), wanted
                )
            if exists:
                return RedirectResponse(f"/ui/jobs/{wanted}", status_code=303)
        message = f"No job has the id {wanted[:128]!r}."
        return render(request, "error.html", status=404, title="No such job", message=message)
    f = job_filter(request)
    found = await reads.list_jobs(api, f)
    base = urlencode([(k, v) for k, v in request.query_params.multi_items() if k != "cursor"])
    return render(
        request, "jobs.html", title="Jobs", f=f, page=found, states=STATES, job_names=api.registry.names(),
        queues=api.registry.queues(), since=request.query_params.get("since", ""), base_query=base,
        q=request.query_params,
    )  # fmt: skip


def _shard_of(api: Api, job_id: str) -> Shard[redis.asyncio.Redis] | None:
    """The keyspace that would hold a job (None on a Redis Cluster for an id naming no queue)."""
    try:
        return api.shards.for_job(job_id)
    except UnknownJobId:
        return None


def curl_command(request: Request, record: dict[str, object]) -> str:
    body = json.dumps({"jobName": record.get("jobName"), "data": record.get("data") or {}}, separators=(",", ":"))
    base = f"{request.url.scheme}://{request.url.netloc}"
    return (
        f"curl -X POST {shlex.quote(base + '/enqueue')} -H 'Content-Type: application/json' "
        f'-H "x-api-key: $TASKQUEUE_API_KEY" -d {shlex.quote(body)}'
    )


#: What the current attempt's outcome reads as on the timeline, by the job's state.
_OUTCOMES = {RUNNING: "running", SUCCEEDED: "succeeded", FAILED: "failed, dead-lettered", RETRYING: "failed, retried",
             CANCELED: "canceled", SKIPPED: "skipped"}  # fmt: skip


def attempts_of(record: dict[str, Any]) -> list[dict[str, Any]]:
    """A job's attempts for its timeline, oldest first: the retried ones its `history` keeps, then
    the current one from the record's own fields (unless it is the history's last: a retrying
    job's). `requeued`: a requeue came before it (the attempts count again from 1). The current
    attempt's traceback is left to the page's last error."""
    history = [entry for entry in record.get("history") or () if isinstance(entry, dict)]
    attempts = [{**entry, "outcome": _OUTCOMES[RETRYING]} for entry in history]
    started = record.get("startedAt")
    last = history[-1] if history else {}
    if started and (last.get("attempt"), last.get("startedAt")) != (record.get("attempts"), started):
        state = record.get("state")
        attempts.append({
            "attempt": record.get("attempts"), "startedAt": started, "worker": record.get("worker"),
            "finishedAt": None if state == RUNNING else record.get("finishedAt"),
            "durationMs": None if state == RUNNING else record.get("durationMs"),
            "error": record.get("error") if state in (FAILED, RETRYING, CANCELED, SKIPPED) else None,
            "outcome": _OUTCOMES.get(str(state), str(state)), "current": True,
        })  # fmt: skip
    for before, attempt in zip(attempts, attempts[1:], strict=False):
        attempt["requeued"] = (attempt.get("attempt") or 0) <= (before.get("attempt") or 0)
    return attempts


@page()
async def job(request: Request) -> Response:
    api = api_of(request)
    job_id = request.path_params["job_id"]
    if not _job_id.match(job_id):
        raise JobNotFound(job_id)
    async with deadline():
        record = await api.store.get(job_id, (*DETAIL_WITH_DATA_FIELDS, "deadLetterId", "updatedAt"))
    state = record["state"]
    actions = []
    if session(request).can_write:
        if state in (FAILED, CANCELED):
            actions.append("retry")
        if state in (QUEUED, RETRYING, RUNNING):
            actions.append("cancel")
        if state in FINAL_STATES:
            actions.append("delete")
    return render(
        request, "job.html", title=f"Job {job_id}", job=record, actions=actions, curl=curl_command(request, record),
        done=request.query_params.get("done"), attempts=attempts_of(record), max_history=MAX_HISTORY,
    )  # fmt: skip


def _path_id(request: Request) -> str:
    job_id = request.path_params["job_id"]
    if not _job_id.match(job_id):
        raise JobNotFound(job_id)
    return str(job_id)


@page(write=True)
async def retry(request: Request) -> Response:
    job_id = _path_id(request)
    async with deadline():
        await api_of(request).store.requeue(job_id)
    return RedirectResponse(f"/ui/jobs/{job_id}?done=retried", status_code=303)


@page(write=True)
async def delete(request: Request) -> Response:
    job_id = _path_id(request)
    async with deadline():
        await api_of(request).store.delete(job_id)
    return RedirectResponse(f"/ui/jobs?done=deleted&deleted={job_id}", status_code=303)


@page(write=True)
async def cancel_job(request: Request) -> Response:
    job_id = _path_id(request)
    form = await request.form()
    await cancel(api_of(request), job_id, force=form.get("force") == "true")
    return RedirectResponse(f"/ui/jobs/{job_id}?done=canceled", status_code=303)
