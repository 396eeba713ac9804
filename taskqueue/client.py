"""Python clients of the taskqueue API: `Client` (blocking) and `AsyncClient` (asyncio), one method per endpoint.

    from taskqueue import Client

    with Client("http://localhost:3002", api_key) as tq:
        job_id = tq.enqueue("emailJob", {"email": "user@example.com"})
        job = tq.wait(job_id, timeout=30)   # returns once it succeeded, failed, was skipped or canceled

Connection failures and 503s (Redis down) are retried with backoff for up to `retry_for` seconds.
An enqueue always carries an Idempotency-Key (generated when none is given) and every resend
carries the same one, so a retried enqueue never makes a second job. Calls that cannot be made
safe that way (a batch, a retry, a delete, a forced cancel) are resent only when the request surely did not reach
the server or the server answered 503. Needs only httpx (`pip install 'taskqueue[client]'`).
"""

from __future__ import annotations

import asyncio
import builtins
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from datetime import timedelta
from types import TracebackType
from typing import Any, TypeVar

try:
    import httpx
except ImportError as error:  # pragma: no cover - depends on the installation
    raise ImportError("taskqueue.client needs httpx: pip install 'taskqueue[client]'") from error

from taskqueue import _calls
from taskqueue._calls import Attempts, Call
from taskqueue._errors import WaitTimeout
from taskqueue._metrics import Metrics
from taskqueue._models import CancelResult, Job, JobPage, NewJob, QueueState, Schedule

__all__ = ["AsyncClient", "Client"]

T = TypeVar("T")

DEFAULT_TIMEOUT_S = 10.0
DEFAULT_RETRY_FOR_S = 30.0
DEFAULT_MAX_BACKOFF_S = 5.0
#: A long poll that answers a job that has not finished well before the time it asked for means a
#: server that does not hold answers (one without `?wait`): `wait()` then polls at this interval.
FALLBACK_POLL_S = 0.5


def _base_url(url: str) -> str:
    if not url.startswith(("http://", "https://")):
        raise ValueError("url must start with http:// or https:// (for example http://localhost:3002)")
    return url.rstrip("/")


def _key_header(api_key: str | None) -> dict[str, str]:
    if api_key is None:
        return {}  # enough for health(), ready() and metrics(); the job endpoints answer Unauthorized
    if not api_key:
        raise ValueError("api_key is empty: pass the key the service was started with (its API_KEY)")
    return {"x-api-key": api_key}


def _unfinished(job: Job, timeout: float) -> WaitTimeout:
    return WaitTimeout(f"job {job.job_id} is still {job.state} after {timeout:g} s", job=job)


class _Settings:
    """What both clients take: where the API is, the key, and the bounds of each call."""

    def __init__(self, url: str, api_key: str | None, *, timeout: float, retry_for: float, max_backoff: float) -> None:
        self.url = _base_url(url)
        self.headers = {**_key_header(api_key), "User-Agent": "taskqueue-client"}
        self.timeout = httpx.Timeout(timeout)
        self.retry_for = retry_for
        self.max_backoff = max_backoff

    def attempts(self, call: Call[Any]) -> Attempts:
        return Attempts(call, retry_for=self.retry_for, max_backoff=self.max_backoff)


class Client:
    """A blocking client of the taskqueue API; safe to share between threads; close it (or use `with`).

    `api_key`: the service's API_KEY (or its read-only key); None only for health, ready and metrics.
    `timeout`: seconds for each request (connect, read, write; a long poll adds its wait).
    `retry_for`: how long a call is retried while the service is unreachable or answers 503 (0: not at all).
    `max_backoff`: the longest pause between two attempts (a 503's Retry-After is honoured up to it).
    """

    def __init__(
        self,
        url: str,
        api_key: str | None,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        retry_for: float = DEFAULT_RETRY_FOR_S,
        max_backoff: float = DEFAULT_MAX_BACKOFF_S,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._settings = _Settings(url, api_key, timeout=timeout, retry_for=retry_for, max_backoff=max_backoff)
        self._http = httpx.Client(
            base_url=self._settings.url,
            headers=self._settings.headers,
            timeout=self._settings.timeout,
            transport=transport,
        )

    def __repr__(self) -> str:
        return f"Client({self._settings.url!r})"  # never the key

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _send(self, call: Call[T]) -> T:
        attempts = self._settings.attempts(call)
        while True:
            try:
                response = self._http.send(call.request(self._http, self._settings.timeout))
            except httpx.TransportError as error:
                delay = attempts.after_error(error)
                if delay is None:
                    raise attempts.unreachable(error) from error
            else:
                if not call.unavailable(response) or (delay := attempts.after_unavailable(response)) is None:
                    return call.answer(response)
            time.sleep(delay)

    def enqueue(
        self,
        job_name: str,
        data: Any,
        *,
        delay: float | timedelta | None = None,
        idempotency_key: str | None = None,
        priority: str | None = None,
        max_retries: int | None = None,
        queue: str | None = None,
    ) -> str:
        """Enqueue one job; returns its jobId. `delay`: run it no earlier than this many seconds from now.
        With the same `idempotency_key` within 24 h, the first job's id is returned and nothing is enqueued.
        `priority` ("high", "normal", "low"), `max_retries` (0 to 100) and `queue` (a declared one)
        override the job type's; a bad one raises InvalidJob naming the field."""
        return self._send(
            _calls.enqueue(
                job_name,
                data,
                delay=delay,
                idempotency_key=idempotency_key,
                priority=priority,
                max_retries=max_retries,
                queue=queue,
            )
        )

    def enqueue_many(self, jobs: Iterable[NewJob | tuple[str, Any]]) -> builtins.list[str]:
        """Enqueue jobs all or none (up to the service's batch limit, 1,000); returns their jobIds in order.
        One invalid job raises InvalidJob with each problem in `.jobs`, and nothing is enqueued."""
        return self._send(_calls.enqueue_many(jobs))

    def get(self, job_id: str, *, include_data: bool = False) -> Job:
        """The job's outcome record (with its data if `include_data`); NotFound if there is none."""
        return self._send(_calls.get(job_id, include_data=include_data))

    def wait(self, job_id: str, timeout: float, *, include_data: bool = False) -> Job:
        """The job's record once it has succeeded, failed or been skipped; WaitTimeout (with the last
        record in `.job`) if it has not after `timeout` seconds. The server holds each request until
        then (a long poll): nothing is polled."""
        deadline = time.monotonic() + timeout
        while True:
            asked = _calls.wait_chunk(deadline - time.monotonic())
            started = time.monotonic()
            job = self._send(_calls.get(job_id, wait=asked, include_data=include_data))
            if job.finished:
                return job
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _unfinished(job, timeout)
            if time.monotonic() - started < asked / 2:
                time.sleep(min(FALLBACK_POLL_S, remaining))

    def list(
        self, *, state: str | None = None, job_name: str | None = None, limit: int = 50, cursor: str | None = None
    ) -> JobPage:
        """A page of jobs, newest first (`limit` up to 200); pass `page.next_cursor` as `cursor` for the next."""
        return self._send(_calls.list_jobs(state=state, job_name=job_name, limit=limit, cursor=cursor))

    def iter_jobs(
        self, *, state: str | None = None, job_name: str | None = None, page_size: int = 200
    ) -> Iterator[Job]:
        """Every matching job, newest first, fetched a page at a time."""
        cursor = None
        while True:
            page = self.list(state=state, job_name=job_name, limit=page_size, cursor=cursor)
            yield from page.jobs
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def retry(self, job_id: str) -> Job:
        """Put a failed job back on its queue with the same jobId; Conflict if it has not failed."""
        return self._send(_calls.retry(job_id))

    def retry_failed(self, job_name: str | None = None) -> int:
        """Requeue failed jobs (of one type, or all); returns how many."""
        return self._send(_calls.retry_failed(job_name))

    def delete(self, job_id: str) -> None:
        """Delete a finished job's record; Conflict while it is queued or running."""
        self._send(_calls.delete(job_id))

    def delete_failed(self, job_name: str | None = None) -> int:
        """Delete failed jobs (of one type, or all); returns how many."""
        return self._send(_calls.delete_failed(job_name))

    def cancel(self, job_id: str, *, force: bool = False) -> CancelResult:
        """Cancel a job. One that has not started (queued, delayed, retrying) never will:
        `.canceled` is True. A running one is asked to stop (`context.job.cancelled()`; with `force`
        it is interrupted, as by its time limit): `.canceled` is False and `.message` says what
        happened. NotFound if there is no such job, Conflict if it has already finished."""
        return self._send(_calls.cancel(job_id, force=force))

    def queues(self) -> builtins.list[QueueState]:
        """Every declared queue: ready (per priority), delayed, waiting, running, failed, oldest age, paused."""
        return self._send(_calls.queues())

    def queue(self, name: str) -> QueueState:
        """One queue's figures; NotFound if no job type declares it."""
        return self._send(_calls.queue(name))

    def pause(self, name: str) -> QueueState:
        """Pause a queue: workers fetch none of its jobs until `resume` (running ones finish; enqueues
        still go in). Pausing a paused queue keeps its first pause time. Returns the queue's figures."""
        return self._send(_calls.pause(name))

    def resume(self, name: str) -> QueueState:
        """Resume a paused queue (its idle workers wake at once); returns the queue's figures."""
        return self._send(_calls.resume(name))

    def schedules(self) -> builtins.list[Schedule]:
        """The recurring jobs of the service's schedules file, each with its next run and its last one."""
        return self._send(_calls.schedules())

    def metrics(self) -> Metrics:
        """The figures of the API's /metrics: queue depths, oldest-job ages, live workers, enqueued totals."""
        return self._send(_calls.metrics())

    def health(self) -> bool:
        """True when the API process answers."""
        return self._send(_calls.health())

    def ready(self) -> bool:
        """True when the API reaches Redis, False when it answers that it does not."""
        return self._send(_calls.ready())

    def openapi(self) -> dict[str, Any]:
        """The OpenAPI document of the service."""
        return self._send(_calls.openapi())


class AsyncClient:
    """The asyncio twin of `Client`, method for method; close it with `await aclose()` (or `async with`)."""

    def __init__(
        self,
        url: str,
        api_key: str | None,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        retry_for: float = DEFAULT_RETRY_FOR_S,
        max_backoff: float = DEFAULT_MAX_BACKOFF_S,
        max_connections: int = 100,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._settings = _Settings(url, api_key, timeout=timeout, retry_for=retry_for, max_backoff=max_backoff)
        self._http = httpx.AsyncClient(
            base_url=self._settings.url,
            headers=self._settings.headers,
            timeout=self._settings.timeout,
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=min(20, max_connections)),
            transport=transport,
        )

    def __repr__(self) -> str:
        return f"AsyncClient({self._settings.url!r})"

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _send(self, call: Call[T]) -> T:
        attempts = self._settings.attempts(call)
        while True:
            try:
                response = await self._http.send(call.request(self._http, self._settings.timeout))
            except httpx.TransportError as error:
                delay = attempts.after_error(error)
                if delay is None:
                    raise attempts.unreachable(error) from error
            else:
                if not call.unavailable(response) or (delay := attempts.after_unavailable(response)) is None:
                    return call.answer(response)
            await asyncio.sleep(delay)

    async def enqueue(
        self,
        job_name: str,
        data: Any,
        *,
        delay: float | timedelta | None = None,
        idempotency_key: str | None = None,
        priority: str | None = None,
        max_retries: int | None = None,
        queue: str | None = None,
    ) -> str:
        """See Client.enqueue."""
        return await self._send(
            _calls.enqueue(
                job_name,
                data,
                delay=delay,
                idempotency_key=idempotency_key,
                priority=priority,
                max_retries=max_retries,
                queue=queue,
            )
        )

    async def enqueue_many(self, jobs: Iterable[NewJob | tuple[str, Any]]) -> builtins.list[str]:
        """See Client.enqueue_many."""
        return await self._send(_calls.enqueue_many(jobs))

    async def get(self, job_id: str, *, include_data: bool = False) -> Job:
        return await self._send(_calls.get(job_id, include_data=include_data))

    async def wait(self, job_id: str, timeout: float, *, include_data: bool = False) -> Job:
        """See Client.wait."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            asked = _calls.wait_chunk(deadline - loop.time())
            started = loop.time()
            job = await self._send(_calls.get(job_id, wait=asked, include_data=include_data))
            if job.finished:
                return job
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise _unfinished(job, timeout)
            if loop.time() - started < asked / 2:
                await asyncio.sleep(min(FALLBACK_POLL_S, remaining))

    async def list(
        self, *, state: str | None = None, job_name: str | None = None, limit: int = 50, cursor: str | None = None
    ) -> JobPage:
        return await self._send(_calls.list_jobs(state=state, job_name=job_name, limit=limit, cursor=cursor))

    async def iter_jobs(
        self, *, state: str | None = None, job_name: str | None = None, page_size: int = 200
    ) -> AsyncIterator[Job]:
        cursor = None
        while True:
            page = await self.list(state=state, job_name=job_name, limit=page_size, cursor=cursor)
            for job in page.jobs:
                yield job
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def retry(self, job_id: str) -> Job:
        return await self._send(_calls.retry(job_id))

    async def retry_failed(self, job_name: str | None = None) -> int:
        return await self._send(_calls.retry_failed(job_name))

    async def delete(self, job_id: str) -> None:
        await self._send(_calls.delete(job_id))

    async def delete_failed(self, job_name: str | None = None) -> int:
        return await self._send(_calls.delete_failed(job_name))

    async def cancel(self, job_id: str, *, force: bool = False) -> CancelResult:
        """See Client.cancel."""
        return await self._send(_calls.cancel(job_id, force=force))

    async def queues(self) -> builtins.list[QueueState]:
        return await self._send(_calls.queues())

    async def queue(self, name: str) -> QueueState:
        return await self._send(_calls.queue(name))

    async def pause(self, name: str) -> QueueState:
        """See Client.pause."""
        return await self._send(_calls.pause(name))

    async def resume(self, name: str) -> QueueState:
        return await self._send(_calls.resume(name))

    async def schedules(self) -> builtins.list[Schedule]:
        return await self._send(_calls.schedules())

    async def metrics(self) -> Metrics:
        return await self._send(_calls.metrics())

    async def health(self) -> bool:
        return await self._send(_calls.health())

    async def ready(self) -> bool:
        return await self._send(_calls.ready())

    async def openapi(self) -> dict[str, Any]:
        return await self._send(_calls.openapi())
