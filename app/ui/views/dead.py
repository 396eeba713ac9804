"""Dead letters: failed jobs grouped by job type and by error, and bulk retry or delete of a
filter's matches or a hand-picked set, after a confirmation that says how many."""

from __future__ import annotations

from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from app.api.context import api_of
from app.api.errors import ApiError
from app.outcomes.record import FAILED
from app.ui import bulk, reads
from app.ui.guard import page
from app.ui.render import render
from app.ui.views.jobs import job_filter

#: The confirmation of a filter with an error text counts the matches among at most this many of
#: the newest failed jobs (in Redis, console_scan.lua: about 5 µs a job on a 2-core machine).
COUNT_LIMIT = 5_000


@page()
async def dead_letters(request: Request) -> Response:
    api = api_of(request)
    f = job_filter(request, state=FAILED)
    groups = await reads.dead_letters(api, f.job_name)
    found = await reads.list_jobs(api, f)
    base = urlencode([(k, v) for k, v in request.query_params.multi_items() if k != "cursor"])
    return render(
        request, "dead.html", title="Dead letters", f=f, groups=groups, page=found, job_names=api.registry.names(),
        queues=api.registry.queues(), base_query=base, q=request.query_params,
    )  # fmt: skip


def _bulk_request(api_names: list[str], form: dict[str, object], ids: list[str]) -> bulk.BulkRequest:
    action = form.get("action")
    if action not in bulk.ACTIONS:
        raise ApiError(400, "choose retry or delete")
    job_name = form.get("jobName") or None
    if job_name is not None and job_name not in api_names:
        raise ApiError(400, f"job type must be one of {', '.join(api_names)}")
    error_text = str(form.get("q") or "").strip()[:200] or None
    if form.get("scope") == "selected":
        if not ids:
            raise ApiError(400, "no job selected: tick the jobs to act on, or choose all that match")
        return bulk.BulkRequest(action=str(action), ids=tuple(dict.fromkeys(ids))[: reads.SCAN_LIMIT])
    return bulk.BulkRequest(action=str(action), job_name=str(job_name) if job_name else None, error_text=error_text)


@page(write=True)
async def confirm(request: Request) -> Response:
    """The confirmation page: what will be done, to how many jobs."""
    api = api_of(request)
    form = await request.form()
    ids = [str(value) for value in form.getlist("ids")]
    wanted = _bulk_request(api.registry.names(), dict(form), ids)
    if wanted.ids:
        count, capped = len(wanted.ids), False
    else:
        count, capped = await reads.count_matching_failed(api, wanted.job_name, wanted.error_text, limit=COUNT_LIMIT)
    return render(
        request, "confirm.html", title="Confirm", wanted=wanted, count=count, capped=capped,
        limit=COUNT_LIMIT, ids=wanted.ids,
    )  # fmt: skip


@page(write=True)
async def run_bulk(request: Request) -> Response:
    api = api_of(request)
    form = await request.form()
    ids = [str(value) for value in form.getlist("ids")]
    wanted = _bulk_request(api.registry.names(), dict(form), ids)
    expected = str(form.get("expected") or "0")
    operation = await bulk.start(request.app, api, wanted, int(expected) if expected.isdigit() else 0)
    return RedirectResponse(f"/ui/bulk/{operation}", status_code=303)


@page()
async def bulk_progress(request: Request) -> Response:
    operation = request.path_params["operation"]
    found = await bulk.progress(api_of(request), operation) if operation.isalnum() else None
    if found is None:
        raise ApiError(404, "no such bulk action (its progress is kept for a day)")
    template = "bulk_live.html" if request.headers.get("hx-request") else "bulk.html"
    return render(request, template, title="Bulk action", op=found, operation=operation)
