"""The API's writes: while one is in flight, those of requests arriving meanwhile gather and go
together in the next, one atomic Lua call (new jobs' calls of the enqueue script merge into one).
An idle API adds no delay: the first request is sent at once."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

import redis.asyncio

from app.connection.atomic import run_atomically_async
from app.connection.clients import REDIS_DOWN_ERRORS, unavailable
from app.connection.commands import Command, coalesce
from app.connection.shards import AsyncShards
from app.errors import ReplicasBehind
from app.keys import Keys

#: Upper bound on commands in one pipeline, so a burst does not build one huge transaction.
MAX_COMMANDS_PER_FLUSH = 20_000


class WriteBatcher:
    """Runs each submitted command list exactly once, batched with its concurrent neighbours."""

    def __init__(
        self,
        client: redis.asyncio.Redis,
        *,
        timeout_s: float,
        wait_replicas: int = 0,
        wait_timeout_ms: int = 0,
        client_of: Callable[[], redis.asyncio.Redis] | None = None,
    ) -> None:
        """`wait_replicas`: each batch's write is followed by a WAIT for that many replicas, for
        at most `wait_timeout_ms` (one WAIT covers every request of the batch). `client_of`: asked
        for the client at each flush (on a Redis Cluster, the node of the keyspace's slot then)."""
        self.client = client
        self.client_of = client_of
        self.timeout_s = timeout_s
        self.wait = (wait_replicas, wait_timeout_ms) if wait_replicas else None
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
        client = self.client if self.client_of is None else self.client_of()
        try:
            acknowledged = await asyncio.wait_for(
                run_atomically_async(client, commands, wait_replicas=self.wait), self.timeout_s
            )
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
        if self.wait is not None and acknowledged is not None and acknowledged < self.wait[0]:
            behind = ReplicasBehind(
                f"Redis ran the write, but only {acknowledged} of the {self.wait[0]} replica(s) REDIS_WAIT_REPLICAS "
                f"asks for acknowledged it within {self.wait[1]} ms"
            )
            for _, future in batch:
                if not future.done():
                    future.set_exception(behind)
            return
        for _, future in batch:
            if not future.done():
                future.set_result(None)


class WriteRouter:
    """The API's WriteBatchers: the one, on one Redis (or a Sentinel group); on a Redis Cluster one
    per keyspace, so that a batch never mixes the keys of two queues (Redis refuses a cross-slot
    call)."""

    def __init__(
        self, shards: AsyncShards, *, timeout_s: float, wait_replicas: int = 0, wait_timeout_ms: int = 0
    ) -> None:
        self.shards = shards
        self._options: dict[str, Any] = {
            "timeout_s": timeout_s,
            "wait_replicas": wait_replicas,
            "wait_timeout_ms": wait_timeout_ms,
        }
        self._batchers: dict[Keys, WriteBatcher] = {}
        self._one = None if shards.cluster else WriteBatcher(shards.client(shards.keys), **self._options)

    def for_keys(self, keys: Keys) -> WriteBatcher:
        """The batcher of a keyspace's writes."""
        if self._one is not None:
            return self._one
        batcher = self._batchers.get(keys)
        if batcher is None:
            shards = self.shards
            batcher = self._batchers[keys] = WriteBatcher(
                shards.client(keys), client_of=lambda: shards.client(keys), **self._options
            )
        return batcher

    async def submit(self, commands: Sequence[Command], keys: Keys | None = None) -> None:
        """Once Redis has run `commands`, all of them keys of the keyspace `keys` (default: the
        root keys; on a Redis Cluster, name the queue's: `keys.for_queue(queue)`)."""
        await self.for_keys(self.shards.keys if keys is None else keys).submit(commands)


async def run_confirmed(
    client: redis.asyncio.Redis, command: Command, *, fence: str, wait_replicas: int, wait_timeout_ms: int
) -> Any:
    """One idempotent write's reply, once `wait_replicas` replicas have acknowledged it (ReplicasBehind
    otherwise). Its reply may be "already done" by an earlier request: a PUBLISH to `fence` (an
    unheard channel, but replicated) makes the WAIT cover that earlier write too, in one round trip."""
    if not wait_replicas:
        return await client.execute_command(*command)
    async with client.pipeline(transaction=False) as pipeline:
        pipeline.execute_command(*command)
        pipeline.execute_command("PUBLISH", fence, "")
        pipeline.execute_command("WAIT", wait_replicas, wait_timeout_ms)
        reply, _, acknowledged = await pipeline.execute()
    if int(acknowledged) < wait_replicas:
        raise ReplicasBehind(
            f"Redis ran the write, but only {acknowledged} of the {wait_replicas} replica(s) REDIS_WAIT_REPLICAS "
            f"asks for acknowledged it within {wait_timeout_ms} ms"
        )
    return reply
