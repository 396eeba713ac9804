"""Coalescing the Redis writes of concurrent requests into one round trip.

While one pipeline is in flight, the writes of requests that arrive meanwhile gather; they go
together in the next pipeline, in one MULTI/EXEC. An idle API adds no delay: the first
request is sent at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import redis.asyncio

from app.connections import REDIS_DOWN_ERRORS
from app.errors import BrokerUnavailable
from app.outcomes import Command, run_commands

#: Upper bound on commands in one pipeline, so a burst does not build one huge transaction.
MAX_COMMANDS_PER_FLUSH = 20_000


class WriteBatcher:
    """Runs each submitted command list exactly once, batched with its concurrent neighbours."""

    def __init__(self, client: redis.asyncio.Redis, *, timeout_s: float) -> None:
        self.client = client
        self.timeout_s = timeout_s
        self._pending: list[tuple[Sequence[Command], asyncio.Future[list[Any]]]] = []
        self._flushing = False

    async def submit(self, commands: Sequence[Command]) -> list[Any]:
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self._pending.append((commands, future))
        if not self._flushing:
            self._flushing = True
            asyncio.create_task(self._flush_all())
        return await future

    async def _flush_all(self) -> None:
        try:
            while self._pending:
                batch: list[tuple[Sequence[Command], asyncio.Future[list[Any]]]] = []
                size = 0
                while self._pending and (not batch or size + len(self._pending[0][0]) <= MAX_COMMANDS_PER_FLUSH):
                    item = self._pending.pop(0)
                    batch.append(item)
                    size += len(item[0])
                await self._flush(batch)
        finally:
            self._flushing = False

    async def _flush(self, batch: list[tuple[Sequence[Command], asyncio.Future[list[Any]]]]) -> None:
        try:
            async with self.client.pipeline(transaction=True) as pipeline:
                for commands, _ in batch:
                    run_commands(pipeline, commands)
                results = await asyncio.wait_for(pipeline.execute(), self.timeout_s)
        except (TimeoutError, *REDIS_DOWN_ERRORS) as error:
            failure = BrokerUnavailable(f"Redis is unavailable ({type(error).__name__}: {error})")
            failure.__cause__ = error
            for _, future in batch:
                if not future.done():
                    future.set_exception(failure)
            return
        except Exception as error:  # a bug or a Redis error reply: fail these requests, not the loop
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
            return
        offset = 0
        for commands, future in batch:
            if not future.done():
                future.set_result(results[offset : offset + len(commands)])
            offset += len(commands)
