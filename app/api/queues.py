"""The queue endpoints: what each declared queue holds, and pausing and resuming one."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from app.api.auth import authorize
from app.api.context import api_of
from app.api.errors import ApiError, deadline
from app.api.queue_state import QueueReader, QueueState
from app.connection.commands import Command, run_commands
from app.errors import shown
from app.outcomes.record import now_ms


def _reader(request: Request) -> QueueReader:
    api = api_of(request)
    return QueueReader.of(api.registry, api.keys, heartbeat_timeout_ms=api.settings.heartbeat_timeout_ms)


def _path_queue(request: Request, reader: QueueReader) -> str:
    name = request.path_params["name"]
    if name not in reader.queues:
        raise ApiError(404, f"no queue {shown(name, quoted=True)}: the declared queues are {', '.join(reader.queues)}")
    return str(name)


async def _read(request: Request, reader: QueueReader, queues: Sequence[str], *before: Command) -> list[QueueState]:
    """The queues' figures, read in one round trip after the commands `before` (a pause, a resume)."""
    now = now_ms()
    async with deadline(), api_of(request).client.pipeline(transaction=False) as pipeline:
        run_commands(pipeline, [*before, reader.command(now, queues)])
        replies: list[Any] = await pipeline.execute()
    return reader.parse(replies[-1], now, queues)


async def list_queues(request: Request) -> Response:
    authorize(request, write=False)
    reader = _reader(request)
    states = await _read(request, reader, reader.queues)
    return JSONResponse({"queues": [state.public() for state in states]})


async def get_queue(request: Request) -> Response:
    authorize(request, write=False)
    reader = _reader(request)
    [state] = await _read(request, reader, [_path_queue(request, reader)])
    return JSONResponse(state.public())


async def pause_queue(request: Request) -> Response:
    authorize(request, write=True)
    reader = _reader(request)
    queue = _path_queue(request, reader)
    [state] = await _read(request, reader, [queue], reader.pause_command(queue, now_ms()))
    return JSONResponse(state.public())


async def resume_queue(request: Request) -> Response:
    authorize(request, write=True)
    reader = _reader(request)
    queue = _path_queue(request, reader)
    [state] = await _read(request, reader, [queue], reader.resume_command(queue))
    return JSONResponse(state.public())
