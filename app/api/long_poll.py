"""`GET /jobs/{jobId}?wait=<seconds>`: answer as soon as the job's state is final, so callers do not poll.

One poller per API process watches every job a request waits on: each tick is one pipelined round
trip reading the state of all of them, so Redis sees at most 1/POLL_INTERVAL_S round trips a second
from it and at most about MAX_CHECKS_PER_S commands, however many callers wait. At the timeout (at
most MAX_WAIT_S) the record is answered as it is, like a plain GET.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio
from starlette.requests import Request

from app.api.context import api_of
from app.api.errors import REDIS_DEADLINE_S, ApiError, deadline
from app.connection.clients import REDIS_DOWN_ERRORS
from app.connection.shards import AsyncShards
from app.errors import shown
from app.keys import Keys
from app.outcomes.record import FINAL_STATES

logger = logging.getLogger(__name__)

#: The longest wait a request may ask for, in seconds.
MAX_WAIT_S = 60
#: How often the poller reads the states of the waited-on jobs, at most.
POLL_INTERVAL_S = 0.05
#: With more waiters than this many per second, ticks are spaced out to keep Redis load bounded.
MAX_CHECKS_PER_S = 5_000
#: Past this many waiting requests in one process, a wait answers at once (as a plain GET).
MAX_WAITERS = 10_000

#: A decimal number as a query parameter writes it (`30`, `2.5`, `1e-05`).
_seconds = re.compile(r"([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?")
_FINAL = frozenset(state.encode() for state in FINAL_STATES)


def wait_seconds(request: Request) -> float | None:
    """The `wait` query parameter in seconds; None when absent or empty; a 400 when not valid."""
    raw = request.query_params.get("wait")
    if not raw:
        return None
    if len(raw) > 32 or not _seconds.fullmatch(raw) or not float(raw) <= MAX_WAIT_S:
        raise ApiError(
            400,
            f"wait must be a number of seconds from 0 to {MAX_WAIT_S} (such as wait=30), not {shown(raw, quoted=True)}",
        )
    return float(raw)


async def read_record(request: Request, job_id: str, read: Callable[[], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
    """The job's record as `read()` gives it (get_job's read of the store); with `?wait=<s>`, read
    again once its state is final or after s seconds."""
    wait = wait_seconds(request)
    async with deadline():
        record = await read()
    if not wait or record.get("state") in FINAL_STATES:
        return record
    await _poller(request).wait(job_id, wait, request)
    async with deadline():
        return await read()


def _poller(request: Request) -> StatePoller:
    poller = getattr(request.app.state, "long_poll", None)
    if poller is None:
        api = api_of(request)
        poller = request.app.state.long_poll = StatePoller(client=api.client, keys=api.keys, shards=api.shards)
    return poller  # type: ignore[no-any-return]


class StatePoller:
    """Wakes the requests waiting on a job once its record's state is final (or the record is gone)."""

    def __init__(self, *, client: redis.asyncio.Redis, keys: Keys, shards: AsyncShards | None = None) -> None:
        """`shards`: the clients of the keyspaces (on a Redis Cluster, a job's record is on its
        queue's node); default: `client` holds them all."""
        self.client = client
        self.keys = keys
        self.shards = AsyncShards.single(client, keys) if shards is None else shards
        self._waiters: dict[str, set[asyncio.Future[None]]] = {}
        self._count = 0
        self._task: asyncio.Task[None] | None = None

    @property
    def waiting(self) -> int:
        """How many waits are in progress."""
        return self._count

    async def wait(self, job_id: str, timeout: float, request: Request | None = None) -> None:
        """Return when the job's state is final, after `timeout` seconds, or when the client went away."""
        if self._count >= MAX_WAITERS:
            return
        woken: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(job_id, set()).add(woken)
        self._count += 1
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="long-poll")
        gone = asyncio.create_task(_disconnected(request)) if request is not None else None
        try:
            watched: list[asyncio.Future[None]] = [woken] if gone is None else [woken, gone]
            await asyncio.wait(watched, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if gone is not None:
                gone.cancel()
            self._count -= 1
            waiting = self._waiters.get(job_id)
            if waiting is not None:
                waiting.discard(woken)
                if not waiting:
                    del self._waiters[job_id]

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._waiters:
                started = loop.time()
                job_ids = list(self._waiters)
                try:
                    states = await self._states(job_ids)
                except (*REDIS_DOWN_ERRORS, redis.RedisError) as error:
                    # The waits run out at their timeout, and the final read answers 503 if Redis is still down.
                    logger.debug("Long poll: reading job states failed: %r", error)
                    states = [b""] * len(job_ids)
                for job_id, state in zip(job_ids, states, strict=True):
                    if state is None or state in _FINAL:  # final, or the record is gone (the read answers 404)
                        for woken in self._waiters.pop(job_id, ()):
                            if not woken.done():
                                woken.set_result(None)
                interval = max(POLL_INTERVAL_S, len(job_ids) / MAX_CHECKS_PER_S)
                await asyncio.sleep(max(0.0, interval - (loop.time() - started)))
        finally:
            self._task = None

    async def _states(self, job_ids: list[str]) -> list[bytes | None]:
        """Each job's state (None: no record), one pipelined round trip per keyspace."""
        by_keyspace: dict[Keys, list[str]] = {}
        for job_id in job_ids:
            by_keyspace.setdefault(self.shards.for_job(job_id).keys, []).append(job_id)
        async with asyncio.timeout(REDIS_DEADLINE_S):
            parts = await asyncio.gather(*(self._states_of(keys, some) for keys, some in by_keyspace.items()))
        states = {job_id: state for part in parts for job_id, state in part}
        return [states[job_id] for job_id in job_ids]

    async def _states_of(self, keys: Keys, job_ids: list[str]) -> list[tuple[str, bytes | None]]:
        async with self.shards.client(keys).pipeline(transaction=False) as pipeline:
            for job_id in job_ids:
                pipeline.hget(keys.job(job_id), "state")
            states: list[bytes | None] = await pipeline.execute()
        return list(zip(job_ids, states, strict=True))


async def _disconnected(request: Request) -> None:
    """Returns when the client closes the connection. Once the body is read (a GET has none), the
    server's next message is the disconnect; if it cannot be told, this never returns."""
    with contextlib.suppress(Exception):
        message = await request.receive()
        while message["type"] == "http.request" and message.get("more_body"):
            message = await request.receive()
        if message["type"] != "http.disconnect":
            message = await request.receive()
        if message["type"] == "http.disconnect":
            return
    await asyncio.Event().wait()
