"""The queue endpoints: what each declared queue holds, and pausing and resuming one."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from app.api.auth import authorize
from app.api.context import api_of
from app.api.errors import ApiError, deadline
from app.api.queue_state import QueueReader, QueueState
from app.connection.commands import Command, run_commands
from app.errors import shown
from app.keys import Keys
from app.outcomes.record import now_ms


def _reader(request: Request) -> QueueReader:
    api = api_of(request)
    return QueueReader.of(api.registry, api.keys, heartbeat_timeout_ms=api.settings.heartbeat_timeout_ms)


def _path_queue(request: Request, reader: QueueReader) -> str:
    name = request.path_params["name"]
    if name not in reader.queues:
        raise ApiError(404, f"no queue {shown(name, quoted=True)}: the declared queues are {', '.join(reader.queues)}")
    return str(name)


#: Commands to run before the read, built by the reader of the queue's keyspace (a pause, a resume).
Before = Callable[[QueueReader], Sequence[Command]]


async def _read(
    request: Request, reader: QueueReader, queues: Sequence[str], before: Before | None = None
) -> list[QueueState]:
    """The queues' figures, read in one round trip per keyspace (on one Redis, the one; on a Redis
    Cluster, each queue's own) after the commands `before` gives (a pause, a resume)."""
    api = api_of(request)
    by_keyspace: dict[Keys, list[str]] = {}
    for queue in queues:
        by_keyspace.setdefault(api.keys.for_queue(queue), []).append(queue)
    now = now_ms()

    async def read(keys: Keys, some: list[str]) -> list[QueueState]:
        # The figures that are not a queue's own (live workers) are read in the same keyspace:
        # workers stamp their heartbeats in the keyspace of every queue they declare.
        local = reader if keys == reader.keys else dataclasses.replace(reader, keys=keys)
        commands = [*(before(local) if before is not None else ()), local.command(now, some)]
        async with api.shards.client(keys).pipeline(transaction=False) as pipeline:
            run_commands(pipeline, commands)
            replies: list[Any] = await pipeline.execute()
        return local.parse(replies[-1], now, some)

    async with deadline():
        parts = await asyncio.gather(*(read(keys, some) for keys, some in by_keyspace.items()))
    states = {state.name: state for part in parts for state in part}
    return [states[queue] for queue in queues]


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
    at = now_ms()
    [state] = await _read(request, reader, [queue], lambda local: [local.pause_command(queue, at)])
    return JSONResponse(state.public())


async def resume_queue(request: Request) -> Response:
    authorize(request, write=True)
    reader = _reader(request)
    queue = _path_queue(request, reader)
    [state] = await _read(request, reader, [queue], lambda local: [local.resume_command(queue)])
    return JSONResponse(state.public())
