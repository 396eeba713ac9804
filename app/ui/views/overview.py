"""The overview: every queue, the outcome charts, the live workers; its live part refreshes itself."""

from __future__ import annotations

import dataclasses
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from app.api.context import api_of
from app.api.errors import ApiError, deadline
from app.connection.commands import run_commands
from app.outcomes.record import now_ms
from app.ui import charts, reads
from app.ui.guard import page
from app.ui.render import render


async def _context(request: Request) -> dict[str, Any]:
    figures = await reads.overview(api_of(request))
    return {
        "o": figures,
        "hour_chart": charts.bars(figures.hour, label="last hour, per minute"),
        "day_chart": charts.bars(figures.day, label="last day, per 10 minutes"),
    }


@page()
async def overview(request: Request) -> Response:
    return render(request, "overview.html", title="Overview", **await _context(request))


@page()
async def live(request: Request) -> Response:
    """The part of the overview that refreshes (htmx swaps it in)."""
    return render(request, "overview_live.html", **await _context(request))


async def _queue_action(request: Request, action: str) -> Response:
    api = api_of(request)
    reader = reads.queue_reader(api)
    queue = request.path_params["name"]
    if queue not in reader.queues:
        raise ApiError(404, f"no queue {queue!r}: the declared queues are {', '.join(reader.queues)}")
    # In the queue's own keyspace (on a Redis Cluster, on its node): workers look there.
    shard = api.shards.for_queue(queue)
    local = dataclasses.replace(reader, keys=shard.keys)
    command = local.pause_command(queue, now_ms()) if action == "pause" else local.resume_command(queue)
    async with deadline(), shard.client.pipeline(transaction=False) as pipeline:
        run_commands(pipeline, [command])
        await pipeline.execute()
    return RedirectResponse(f"/ui/?done={action}d&queue={queue}", status_code=303)


@page(write=True)
async def pause(request: Request) -> Response:
    return await _queue_action(request, "pause")


@page(write=True)
async def resume(request: Request) -> Response:
    return await _queue_action(request, "resume")
