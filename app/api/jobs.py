"""The job endpoints: read one job or a page of them, retry and delete, one by one or in bulk."""

from __future__ import annotations

import re

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from app.api import long_poll
from app.api.auth import authorize
from app.api.body import json_body, whole_number
from app.api.context import api_of
from app.api.errors import ApiError, deadline
from app.api.openapi import JOB_ID_PATTERN, MAX_PAGE
from app.connection.clients import translated
from app.errors import JobNotFound, shown
from app.outcomes.record import DETAIL_FIELDS, DETAIL_WITH_DATA_FIELDS, STATES, public

#: Bulk actions read the index this many jobs at a time, and act on at most BULK_MAX.
BULK_BATCH = 100
BULK_MAX = 10_000
_job_id = re.compile(JOB_ID_PATTERN)


def path_job_id(request: Request) -> str:
    job_id = request.path_params["job_id"]
    if not _job_id.match(job_id):
        raise JobNotFound(job_id)
    return str(job_id)


async def get_job(request: Request) -> Response:
    authorize(request, write=False)
    include = request.query_params.get("include") or None
    if include not in (None, "data"):
        raise ApiError(400, "include takes one value, data (the job's data): leave it out otherwise")
    fields = DETAIL_WITH_DATA_FIELDS if include else DETAIL_FIELDS
    job_id = path_job_id(request)
    record = await long_poll.read_record(request, job_id, lambda: api_of(request).store.get(job_id, fields))
    return JSONResponse(public(record, fields))


def _filters(request: Request) -> tuple[str | None, str | None]:
    api = api_of(request)
    state = request.query_params.get("state") or None
    job_name = request.query_params.get("jobName") or None
    if state is not None and state not in STATES:
        raise ApiError(400, f"state {shown(state, quoted=True)} is not one of {', '.join(STATES)}")
    if job_name is not None and job_name not in api.registry.names():
        raise ApiError(400, f"jobName {shown(job_name, quoted=True)} is not one of {', '.join(api.registry.names())}")
    return state, job_name


async def list_jobs(request: Request) -> Response:
    authorize(request, write=False)
    state, job_name = _filters(request)
    limit = whole_number(request.query_params.get("limit", "50"))
    if limit is None or not 1 <= limit <= MAX_PAGE:
        raise ApiError(400, f"limit must be a whole number from 1 to {MAX_PAGE}")
    cursor = None
    raw_cursor = request.query_params.get("cursor")
    if raw_cursor:
        score, _, member = raw_cursor.partition("-")
        cursor_score = whole_number(score)
        if cursor_score is None or not member:
            raise ApiError(400, "cursor is not valid: pass the nextCursor of the previous page unchanged")
        cursor = (cursor_score, member)
    async with deadline():
        jobs, next_cursor = await api_of(request).store.list(state=state, job_name=job_name, limit=limit, cursor=cursor)
    return JSONResponse({"jobs": jobs, "nextCursor": next_cursor})


async def retry_job(request: Request) -> Response:
    authorize(request, write=True)
    async with deadline():
        record = await api_of(request).store.requeue(path_job_id(request))

    return JSONResponse(public(record), status_code=202)


async def retry_jobs(request: Request) -> Response:
    authorize(request, write=True)
    body = await json_body(request)
    if not isinstance(body, dict) or body.get("state") != "failed" or set(body) - {"state", "jobName"}:
        raise ApiError(400, 'body must be {"state": "failed"} with an optional "jobName"')
    api = api_of(request)
    job_name = body.get("jobName")
    if job_name is not None and job_name not in api.registry.names():
        raise ApiError(400, f"jobName {shown(job_name, quoted=True)} is not one of {', '.join(api.registry.names())}")
    with translated():
        requeued = await api.store.requeue_many(job_name=job_name, batch_size=BULK_BATCH, max_jobs=BULK_MAX)
    return JSONResponse({"requeued": requeued})


async def delete_job(request: Request) -> Response:
    authorize(request, write=True)
    async with deadline():
        await api_of(request).store.delete(path_job_id(request))
    return Response(status_code=204)


async def delete_jobs(request: Request) -> Response:
    authorize(request, write=True)
    state, job_name = _filters(request)
    if state != "failed":
        raise ApiError(400, "bulk delete takes state=failed (and an optional jobName)")
    with translated():
        deleted = await api_of(request).store.delete_many(job_name=job_name, batch_size=BULK_BATCH, max_jobs=BULK_MAX)
    return JSONResponse({"deleted": deleted})
