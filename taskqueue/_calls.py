"""What each client method sends and how its answer is read, shared by Client and AsyncClient;
and the retry schedule both follow."""

from __future__ import annotations

import json
import random
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx

from taskqueue._errors import (
    BadRequest,
    Conflict,
    Forbidden,
    InvalidJob,
    NotFound,
    ServerError,
    TaskQueueError,
    Unauthorized,
    Unavailable,
)
from taskqueue._metrics import Metrics, parse_samples
from taskqueue._models import STATES, CancelResult, Job, JobPage, NewJob, QueueState, Schedule, delay_ms

T = TypeVar("T")

#: The longest wait the service grants one long poll (app/api/long_poll.py's MAX_WAIT_S).
MAX_WAIT_S = 60.0
#: `wait()` asks for at most this much at a time, so a proxy's idle timeout does not cut it.
WAIT_CHUNK_S = 30.0
#: Transport errors that prove the request never left the client.
NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
#: The first backoff between attempts, in seconds (doubled each time, up to the client's max_backoff).
FIRST_BACKOFF_S = 0.1


@dataclass(frozen=True)
class Call(Generic[T]):
    """One HTTP request of a client method and how to read its answer.

    `replayable`: sending it again cannot do anything twice (a read, or an enqueue with its
    Idempotency-Key), so it is resent after any connection failure; otherwise only when the
    request surely never reached the server (the connection was not made) or the server said 503
    (it enqueues and changes nothing then)."""

    method: str
    path: str
    read: Callable[[httpx.Response], T]
    params: Mapping[str, str] | None = None
    body: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    replayable: bool = False
    invalid: type[BadRequest] = BadRequest
    #: Seconds the server may hold the answer on purpose (a long poll), added to the read timeout.
    held_s: float = 0.0
    #: Error statuses that are this call's answer (given to `read`), not errors to raise or retry.
    answers: tuple[int, ...] = ()

    def unavailable(self, response: httpx.Response) -> bool:
        """A 503 to retry after a while."""
        return response.status_code == 503 and 503 not in self.answers

    def request(self, http: httpx.Client | httpx.AsyncClient, timeout: httpx.Timeout) -> httpx.Request:
        if self.held_s:
            timeout = httpx.Timeout(
                connect=timeout.connect, read=(timeout.read or 0) + self.held_s, write=timeout.write, pool=timeout.pool
            )
        content = None if self.body is None else json.dumps(self.body, separators=(",", ":")).encode()
        headers = {**self.headers, **({"Content-Type": "application/json"} if content is not None else {})}
        return http.build_request(
            self.method,
            self.path,
            params=dict(self.params) if self.params else None,
            content=content,
            headers=headers,
            extensions={"timeout": timeout.as_dict()},
        )

    def answer(self, response: httpx.Response) -> T:
        """The method's result, or the typed error for the response's status."""
        if response.is_success or response.status_code in self.answers:
            return self.read(response)
        raise error_for(response, invalid=self.invalid)


def error_for(response: httpx.Response, *, invalid: type[BadRequest] = BadRequest) -> TaskQueueError:
    status = response.status_code
    message, details = _error_body(response)
    kind: type[TaskQueueError]
    if status == 401:
        kind = Unauthorized
    elif status == 403:
        kind = Forbidden
    elif status == 404:
        kind = NotFound
    elif status == 409:
        kind = Conflict
    elif status == 422:
        kind = InvalidJob
    elif status in (400, 413):
        kind = invalid
    elif status == 503:
        return Unavailable(message, status=status, details=details, retry_after=retry_after(response))
    else:
        kind = ServerError
    return kind(message, status=status, details=details)


def _error_body(response: httpx.Response) -> tuple[str, Any]:
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return body["error"], body.get("details")
    text = response.text.strip()[:200]
    return f"unexpected answer {response.status_code} {response.reason_phrase}" + (f": {text}" if text else ""), None


def retry_after(response: httpx.Response) -> float | None:
    try:
        return max(0.0, float(response.headers.get("Retry-After", "")))
    except ValueError:
        return None  # absent, or an HTTP date (the service sends seconds)


class Attempts:
    """The retry schedule of one call: after each failed attempt, how long to wait before the next,
    or None when the call must not be resent or its time (`retry_for` seconds) is spent."""

    def __init__(self, call: Call[Any], *, retry_for: float, max_backoff: float) -> None:
        self.call = call
        self.deadline = time.monotonic() + retry_for
        self.max_backoff = max_backoff
        self.count = 0

    def after_error(self, error: httpx.TransportError) -> float | None:
        # Only a connection never made (or never taken from the pool) proves the request was not sent.
        if not self.call.replayable and not isinstance(error, NOT_SENT):
            return None
        return self._next(None)

    def after_unavailable(self, response: httpx.Response) -> float | None:
        return self._next(retry_after(response))

    def _next(self, hint: float | None) -> float | None:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            return None
        backoff = min(self.max_backoff, FIRST_BACKOFF_S * 2.0**self.count) * random.uniform(0.5, 1.0)
        self.count += 1
        if hint is not None:
            backoff = max(backoff, min(hint, self.max_backoff))  # the server's Retry-After, within our bound
        return min(backoff, remaining)

    def unreachable(self, error: httpx.TransportError) -> Unavailable:
        sent = not isinstance(error, NOT_SENT)
        maybe = sent and not self.call.replayable
        message = f"could not reach the taskqueue API ({type(error).__name__}: {error or 'no detail'})"
        if self.count:
            message += f" after {self.count + 1} attempts"
        if maybe:
            message += "; the request may have been applied before the connection broke: check before resending"
        return Unavailable(message, maybe_applied=maybe)


# The calls, one per endpoint.


def _record(response: httpx.Response) -> Job:
    return Job.from_api(response.json())


def _job_path(job_id: str) -> str:
    if not job_id:
        raise ValueError("job_id is empty")
    return "/jobs/" + quote(job_id, safe="")


def _job_request(
    job_name: str,
    data: Any,
    delay: float | timedelta | None,
    *,
    priority: str | None = None,
    max_retries: int | None = None,
    queue: str | None = None,
) -> dict[str, Any]:
    """The job as the API takes it; the service checks the options (priority, maxRetries 0..100, a
    declared queue) and refuses a bad one with InvalidJob naming the field."""
    body: dict[str, Any] = {"jobName": job_name, "data": data}
    milliseconds = delay_ms(delay)
    if milliseconds:
        body["delayMs"] = milliseconds
    if priority is not None:
        body["priority"] = priority
    if max_retries is not None:
        body["maxRetries"] = max_retries
    if queue is not None:
        body["queue"] = queue
    return body


def enqueue(
    job_name: str,
    data: Any,
    *,
    delay: float | timedelta | None,
    idempotency_key: str | None,
    priority: str | None = None,
    max_retries: int | None = None,
    queue: str | None = None,
) -> Call[str]:
    key = uuid.uuid4().hex if idempotency_key is None else idempotency_key
    if not key:
        raise ValueError("idempotency_key is empty: pass None to have one generated")
    return Call(
        "POST",
        "/enqueue",
        lambda response: str(response.json()["jobId"]),
        body=_job_request(job_name, data, delay, priority=priority, max_retries=max_retries, queue=queue),
        headers={"Idempotency-Key": key},
        replayable=True,  # the same key answers the first job's id: a resend enqueues nothing
        invalid=InvalidJob,
    )


def _new_job_request(job: NewJob) -> dict[str, Any]:
    return _job_request(
        job.job_name, job.data, job.delay, priority=job.priority, max_retries=job.max_retries, queue=job.queue
    )


def enqueue_many(jobs: Iterable[NewJob | tuple[str, Any]]) -> Call[list[str]]:
    items = [job if isinstance(job, NewJob) else NewJob(job[0], job[1]) for job in jobs]
    if not items:
        raise ValueError("enqueue_many needs at least one job")
    return Call(
        "POST",
        "/enqueue/batch",
        lambda response: [str(job_id) for job_id in response.json()["jobIds"]],
        body={"jobs": [_new_job_request(job) for job in items]},
        invalid=InvalidJob,
    )


def get(job_id: str, *, wait: float | None = None, include_data: bool = False) -> Call[Job]:
    params = {"include": "data"} if include_data else {}
    held = 0.0
    if wait is not None and wait > 0:
        held = min(wait, MAX_WAIT_S)
        params["wait"] = f"{held:.3f}"
    return Call("GET", _job_path(job_id), _record, params=params, replayable=True, held_s=held)


def _filters(state: str | None, job_name: str | None) -> dict[str, str]:
    if state is not None and state not in STATES:
        raise ValueError(f"state {state!r} is not one of {', '.join(STATES)}")
    return {
        **({"state": state} if state else {}),
        **({"jobName": job_name} if job_name else {}),
    }


def list_jobs(*, state: str | None, job_name: str | None, limit: int, cursor: str | None) -> Call[JobPage]:
    def page(response: httpx.Response) -> JobPage:
        body = response.json()
        return JobPage([Job.from_api(record) for record in body["jobs"]], body.get("nextCursor"))

    params = {**_filters(state, job_name), "limit": str(limit), **({"cursor": cursor} if cursor else {})}
    return Call("GET", "/jobs", page, params=params, replayable=True)


def retry(job_id: str) -> Call[Job]:
    return Call("POST", _job_path(job_id) + "/retry", _record)


def retry_failed(job_name: str | None) -> Call[int]:
    body = {"state": "failed", **({"jobName": job_name} if job_name else {})}
    return Call("POST", "/jobs/retry", lambda response: int(response.json()["requeued"]), body=body)


def delete(job_id: str) -> Call[None]:
    return Call("DELETE", _job_path(job_id), lambda response: None)


def delete_failed(job_name: str | None) -> Call[int]:
    params = _filters("failed", job_name)
    return Call("DELETE", "/jobs", lambda response: int(response.json()["deleted"]), params=params)


def cancel(job_id: str, *, force: bool = False) -> Call[CancelResult]:
    """A second cancel of a canceled job answers the same (200), and asking a running job twice to
    stop changes nothing: resent after a lost answer, unless forced (an interrupt is not repeated)."""

    def read(response: httpx.Response) -> CancelResult:
        body = dict(response.json())
        message = str(body.pop("message", ""))
        return CancelResult(Job.from_api(body), response.status_code == 200, message, response.status_code)

    return Call(
        "POST", _job_path(job_id) + "/cancel", read, params={"force": "true"} if force else None, replayable=not force
    )


def _queue_path(name: str) -> str:
    if not name:
        raise ValueError("queue name is empty")
    return "/queues/" + quote(name, safe="")


def _queue(response: httpx.Response) -> QueueState:
    return QueueState.from_api(response.json())


def queues() -> Call[list[QueueState]]:
    return Call(
        "GET",
        "/queues",
        lambda response: [QueueState.from_api(queue) for queue in response.json()["queues"]],
        replayable=True,
    )


def queue(name: str) -> Call[QueueState]:
    return Call("GET", _queue_path(name), _queue, replayable=True)


def pause(name: str) -> Call[QueueState]:
    # Pausing twice keeps the first pause's time and resuming twice changes nothing: both are safe to resend.
    return Call("POST", _queue_path(name) + "/pause", _queue, replayable=True)


def resume(name: str) -> Call[QueueState]:
    return Call("POST", _queue_path(name) + "/resume", _queue, replayable=True)


def schedules() -> Call[list[Schedule]]:
    return Call(
        "GET",
        "/schedules",
        lambda response: [Schedule.from_api(schedule) for schedule in response.json()["schedules"]],
        replayable=True,
    )


def metrics() -> Call[Metrics]:
    return Call(
        "GET",
        "/metrics",
        lambda response: Metrics.from_samples(parse_samples(response.text), at=time.time()),
        replayable=True,
    )


def openapi() -> Call[dict[str, Any]]:
    return Call("GET", "/openapi.json", lambda response: dict(response.json()), replayable=True)


def health() -> Call[bool]:
    return Call("GET", "/healthz", lambda response: True, replayable=True)


def ready() -> Call[bool]:
    """200 when the service reaches Redis; a 503 here is an answer (False), not something to retry."""
    return Call("GET", "/readyz", lambda response: response.status_code == 200, replayable=True, answers=(503,))


def wait_chunk(remaining: float) -> float:
    return max(0.0, min(remaining, WAIT_CHUNK_S))
