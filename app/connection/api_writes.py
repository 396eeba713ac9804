"""The API's writes: while one is in flight, those of requests arriving meanwhile gather and go
together in the next, one atomic Lua call (new jobs' calls of the enqueue script merge into one).
An idle API adds no delay: the first request is sent at once."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import redis.asyncio

from app.connection.atomic import run_atomically_async
from app.connection.clients import REDIS_DOWN_ERRORS, unavailable
from app.connection.commands import Command, coalesce

#: Upper bound on commands in one pipeline, so a burst does not build one huge transaction.
MAX_COMMANDS_PER_FLUSH = 20_000


class WriteBatcher:
    """Runs each submitted command list exactly once, batched with its concurrent neighbours."""

    def __init__(self, client: redis.asyncio.Redis, *, timeout_s: float) -> None:
        self.client = client
        self.timeout_s = timeout_s
        self._pending: list[tuple[Sequence[Command], asyncio.Future[None]]] = []
        self._flushing = False

    async def submit(self, commands: Sequence[Command]) -> None:
        """Once Redis has run `commands` (with others, in one transaction)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((commands, future))
        if not self._flushing:
            self._flushing = True
            asyncio.create_task(self._flush_all())
        await future

    async def _flush_all(self) -> None:
        try:
            while self._pending:
                batch: list[tuple[Sequence[Command], asyncio.Future[None]]] = []
                size = 0
                while self._pending and (not batch or size + len(self._pending[0][0]) <= MAX_COMMANDS_PER_FLUSH):
                    item = self._pending.pop(0)
                    batch.append(item)
                    size += len(item[0])
                await self._flush(batch)
        finally:
            self._flushing = False

    async def _flush(self, batch: list[tuple[Sequence[Command], asyncio.Future[None]]]) -> None:
        # One transaction: coalesced (a request's dozen commands shrink to about two, the rest
        # shared with its neighbours) and sent as one atomic call (a Lua call, whose one reply is
        # all to read). Sent once: again only if it could not be sent at all (app/connection/atomic.py).
        commands = coalesce([command for commands, _ in batch for command in commands])
        try:
            await asyncio.wait_for(run_atomically_async(self.client, commands), self.timeout_s)
        except (TimeoutError, *REDIS_DOWN_ERRORS) as error:
            failure = unavailable(error)
            for _, future in batch:
                if not future.done():
                    future.set_exception(failure)
            return
        except Exception as error:  # a bug or a Redis error reply: fail these requests, not the loop
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
            return
        for _, future in batch:
            if not future.done():
                future.set_result(None)
