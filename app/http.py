"""The HTTP API (Starlette): where jobs are accepted, and where their outcomes are read and acted on.

Serve it with `uvicorn app.http:app --port 3002`. `create_app(settings)` builds the app;
`app` builds it from the environment when the server starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hmac
import importlib
import json
import logging
import math
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import redis.asyncio
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app import connections
from app.api_metrics import HttpMetrics, QueueCollector
from app.batching import WriteBatcher
from app.connections import ENQUEUE_IF_ABSENT, REDIS_DOWN_ERRORS, flatten_for_script
from app.enqueue import Enqueuer, check_delay
from app.errors import (
    BrokerUnavailable,
    InvalidJobData,
    JobNotFound,
    JobStateConflict,
    SettingsError,
    UnknownJob,
)
from app.jobs import JobRegistry
from app.jobs import registry as registered_jobs
from app.jobstore import JobStore, public
from app.keys import Keys
from app.openapi import JOB_ID_PATTERN, MAX_PAGE, document
from app.outcomes import STATES, OutcomeLog, now_ms
from app.settings import Settings

logger = logging.getLogger(__name__)

RETRY_AFTER_S = 5
#: Deeper JSON is refused: no job needs it, and it would exhaust the stack of the encoders downstream.
MAX_JSON_DEPTH = 64
REDIS_DEADLINE_S = 4.0
BULK_BATCH = 100
BULK_MAX = 10_000
_job_id = re.compile(JOB_ID_PATTERN)


class ApiError(Exception):
    """An answer other than success: a status and a message a person can act on."""

    def __init__(self, status: int, message: str, *, details: Any = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.details = details
        self.headers = headers or {}


@dataclass
class Api:
    """What the endpoints share: settings, clients and the components built on them."""

    settings: Settings
    registry: JobRegistry
    keys: Keys
    enqueuer: Enqueuer
    client: redis.asyncio.Redis
    batcher: WriteBatcher
    store: JobStore
    metrics_registry: CollectorRegistry
    http_metrics: HttpMetrics
    enqueue_if_absent: Any


def _api(request: Request) -> Api:
    return request.app.state.api  # type: ignore[no-any-return]


# ----- authentication, body, errors -----


def _authorize(request: Request, *, write: bool) -> None:
    api = _api(request)
    given = request.headers.get("x-api-key")
    if not given:
        raise ApiError(401, "missing x-api-key header: send the API key the service was started with (API_KEY)")
    given_bytes = given.encode()
    if hmac.compare_digest(given_bytes, api.settings.api_key.encode()):
        return
    readonly = api.settings.api_readonly_key
    if readonly and hmac.compare_digest(given_bytes, readonly.encode()):
        if write:
            raise ApiError(403, "this key is read-only: use the full API key to change jobs")
        return
    raise ApiError(401, "wrong API key in x-api-key: check API_KEY")


def _whole_number(text: str | None) -> int | None:
    """The value of a decimal number in ASCII digits, else None (str.isdigit also takes '²')."""
    if text and text.isascii() and text.isdigit():
        return int(text)
    return None


async def _json_body(request: Request) -> Any:
    limit = _api(request).settings.max_body_bytes
    too_large = ApiError(413, f"request body is larger than {limit} bytes: split it or send fewer jobs")
    declared = _whole_number(request.headers.get("content-length"))
    if declared is not None and declared > limit:
        raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_large
    return _parse_json(bytes(body))


def _not_json(constant: str) -> float:
    raise ValueError(f"{constant} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"number {text[:20]} is out of range")
    return value


_DECODER = json.JSONDecoder(parse_constant=_not_json, parse_float=_finite)


def _parse_json(body: bytes) -> Any:
    """A request body as JSON, or a 400: not JSON, NaN or Infinity, an unpaired surrogate, or nested too deep."""
    try:
        # As json.loads(body), with one decoder for every request instead of a new one each.
        value = _DECODER.decode(body.decode(json.detect_encoding(body), "surrogatepass"))
        # A lone surrogate needs a \u escape or a non-ASCII byte, and a depth of more than
        # MAX_JSON_DEPTH as many brackets: most bodies need no walk, and a batch only the depth's.
        if b"\\u" in body or not body.isascii():
            _check_json(value)
        elif body.count(b"{") + body.count(b"[") > MAX_JSON_DEPTH:
            _check_depth(value)
    except (ValueError, RecursionError) as error:
        reason = "nested too deeply" if isinstance(error, RecursionError) else str(error)
        if "integer string conversion" in reason:
            reason = "a number has too many digits"
        raise ApiError(
            400, f"body is not valid JSON ({reason}): send a JSON object with Content-Type: application/json"
        ) from None
    return value


def _check_json(value: Any) -> None:
    """Depth and strings, walked without recursion: what json.loads accepts but Redis, a receiver or an
    SMTP server would not (lone surrogates), or what would exhaust the stack later (deep nesting)."""
    pending = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, str):
            item.encode()  # UnicodeEncodeError (a ValueError) on a lone surrogate
        elif isinstance(item, dict | list):
            if depth > MAX_JSON_DEPTH:
                raise ValueError(f"nested more than {MAX_JSON_DEPTH} levels deep")
            children = [*item.keys(), *item.values()] if isinstance(item, dict) else item
            pending.extend((child, depth + 1) for child in children)


def _check_depth(value: Any) -> None:
    """`_check_json`'s depth check alone, level by level, looking at containers only."""
    level = [value] if isinstance(value, dict | list) else []
    depth = 1
    while level:
        if depth > MAX_JSON_DEPTH:
            raise ValueError(f"nested more than {MAX_JSON_DEPTH} levels deep")
        below: list[Any] = []
        for item in level:
            children = item.values() if isinstance(item, dict) else item
            below += [child for child in children if isinstance(child, dict | list)]
        level = below
        depth += 1


def _job_request(api: Api, item: Any) -> tuple[Any, int | None]:
    if not isinstance(item, dict):
        raise ApiError(400, 'body must be a JSON object like {"jobName": "emailJob", "data": {...}}')
    if "jobName" not in item:
        raise ApiError(400, f"jobName is missing: use one of {', '.join(api.registry.names())}")
    if "data" not in item:
        raise InvalidJobData(str(item["jobName"]), {"data": "field required (a JSON object)"})
    unknown = set(item) - {"jobName", "data", "delayMs"}
    if unknown:
        raise ApiError(400, f"unknown field(s) {', '.join(sorted(unknown))}: allowed are jobName, data, delayMs")
    try:
        delay = check_delay(item.get("delayMs"))
    except ValueError as error:
        raise InvalidJobData(str(item["jobName"]), {"delayMs": str(error)}) from None
    message, _ = api.enqueuer.message(item["jobName"], item["data"], delay_ms=delay)
    return message, delay


def _error_body(status: int, message: str, details: Any = None) -> JSONResponse:
    body: dict[str, Any] = {"error": message}
    if details is not None:
        body["details"] = details
    return JSONResponse(body, status_code=status)


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    response = _error_body(exc.status, exc.message, exc.details)
    response.headers.update(exc.headers)
    return response


def _refused_credentials(exc: BaseException) -> bool:
    """Redis answered, but refused the password in REDIS_URL: retrying will not help until it is fixed."""
    while exc is not None:
        if isinstance(exc, redis.AuthenticationError) or (
            isinstance(exc, redis.ResponseError) and "NOAUTH" in str(exc)
        ):
            return True
        exc = exc.__cause__  # type: ignore[assignment]
    return False


async def _unavailable(request: Request, exc: Exception) -> Response:
    if _refused_credentials(exc):
        logger.error("Answering 503: Redis refused the credentials in REDIS_URL: %s", exc)
        message = (
            "the queue is unavailable: Redis refused the API's credentials (the operator must fix the password "
            "in REDIS_URL); nothing was enqueued: retry later"
        )
    else:
        logger.warning("Answering 503: %s", exc)
        message = f"the queue is unavailable ({exc}); nothing was enqueued: retry later"
    response = _error_body(503, message)
    response.headers["Retry-After"] = str(RETRY_AFTER_S)
    return response


async def _unknown_job(request: Request, exc: Exception) -> Response:
    return _error_body(400, str(exc))


async def _invalid_data(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, InvalidJobData)
    return _error_body(422, str(exc), {"fields": exc.problems})


async def _not_found(request: Request, exc: Exception) -> Response:
    return _error_body(404, f"no job {exc}: it never existed, was deleted, or is older than the retention")


async def _conflict(request: Request, exc: Exception) -> Response:
    return _error_body(409, str(exc))


async def _redis_down(request: Request, exc: Exception) -> Response:
    unavailable = BrokerUnavailable(f"{type(exc).__name__}: {exc}")
    unavailable.__cause__ = exc
    return await _unavailable(request, unavailable)


@contextlib.asynccontextmanager
async def _deadline() -> AsyncIterator[None]:
    """Reads and writes answer within seconds even if Redis hangs."""
    try:
        async with asyncio.timeout(REDIS_DEADLINE_S):
            yield
    except TimeoutError:
        raise BrokerUnavailable("Redis did not answer in time") from None


# ----- endpoints -----


def _job_added(job_id: str) -> Response:
    # JSONResponse's bytes for {"message": "Job added", "jobId": ...}, without encoding a dict
    # on every request (job ids are hex digits: nothing to escape).
    body = b'{"message":"Job added","jobId":"' + job_id.encode() + b'"}'
    return Response(body, status_code=202, media_type="application/json")


async def enqueue(request: Request) -> Response:
    _authorize(request, write=True)
    api = _api(request)
    body = await _json_body(request)
    message, delay = _job_request(api, body)
    idempotency_key = request.headers.get("idempotency-key")
    if idempotency_key is None:
        stored, commands = api.enqueuer.commands(message, delay, as_script=True)
        # The batcher bounds its own round trip (REDIS_DEADLINE_S): no second timer per request.
        await api.batcher.submit(commands)
        return _job_added(stored.message_id)
    if not idempotency_key.strip():
        # Most likely an unset variable on the client: enqueuing without the key would not be
        # what it asked for (a resend would add the job twice).
        raise ApiError(400, "Idempotency-Key is empty: send a key of 1 to 200 characters, or no header")
    if len(idempotency_key) > 200:
        raise ApiError(400, "Idempotency-Key is longer than 200 characters")
    stored, commands = api.enqueuer.commands(message, delay)
    async with _deadline():
        existing = await api.enqueue_if_absent(
            keys=[],
            args=[
                api.keys.idempotency(idempotency_key),
                stored.message_id,
                api.settings.idempotency_ttl_seconds,
                *flatten_for_script(commands),
            ],
        )
    if existing:
        return JSONResponse({"message": "Job already added", "jobId": existing.decode()}, status_code=200)
    return _job_added(stored.message_id)


async def enqueue_batch(request: Request) -> Response:
    _authorize(request, write=True)
    api = _api(request)
    body = await _json_body(request)
    jobs = body.get("jobs") if isinstance(body, dict) else None
    if not isinstance(jobs, list) or not jobs:
        raise ApiError(400, 'body must be {"jobs": [{"jobName": ..., "data": {...}}, ...]} with at least one job')
    unknown = set(body) - {"jobs"}
    if unknown:
        raise ApiError(400, f"unknown field(s) {', '.join(sorted(unknown))}: the only one allowed is jobs")
    limit = api.settings.max_batch_jobs
    if len(jobs) > limit:
        raise ApiError(413, f"{len(jobs)} jobs in one batch; the limit is {limit}: split the batch")
    prepared, problems = [], []
    for index, item in enumerate(jobs):
        try:
            prepared.append(_job_request(api, item))
        except ApiError as error:
            problems.append({"index": index, "error": error.message})
        except UnknownJob as error:
            problems.append({"index": index, "error": str(error)})
        except InvalidJobData as error:
            problems.append({"index": index, "error": str(error), "fields": error.problems})
    if problems:
        raise ApiError(422, f"{len(problems)} of {len(jobs)} jobs are invalid; nothing was enqueued", details=problems)
    at = now_ms()
    commands, ids = [], []
    for sequence, (message, delay) in enumerate(prepared):
        stored, job_commands = api.enqueuer.commands(message, delay, at_ms=at, sequence=sequence, as_script=True)
        commands += job_commands
        ids.append(stored.message_id)
    async with _deadline():
        await api.batcher.submit(commands)
    return JSONResponse({"message": f"{len(ids)} jobs added", "jobIds": ids}, status_code=202)


def _path_job_id(request: Request) -> str:
    job_id = request.path_params["job_id"]
    if not _job_id.match(job_id):
        raise JobNotFound(job_id)
    return str(job_id)


async def get_job(request: Request) -> Response:
    _authorize(request, write=False)
    async with _deadline():
        record = await _api(request).store.get(_path_job_id(request))

    return JSONResponse(public(record))


def _filters(request: Request) -> tuple[str | None, str | None]:
    api = _api(request)
    state = request.query_params.get("state") or None
    job_name = request.query_params.get("jobName") or None
    if state is not None and state not in STATES:
        raise ApiError(400, f"state {state!r} is not one of {', '.join(STATES)}")
    if job_name is not None and job_name not in api.registry.names():
        raise ApiError(400, f"jobName {job_name!r} is not one of {', '.join(api.registry.names())}")
    return state, job_name


async def list_jobs(request: Request) -> Response:
    _authorize(request, write=False)
    state, job_name = _filters(request)
    limit = _whole_number(request.query_params.get("limit", "50"))
    if limit is None or not 1 <= limit <= MAX_PAGE:
        raise ApiError(400, f"limit must be a whole number from 1 to {MAX_PAGE}")
    cursor = None
    raw_cursor = request.query_params.get("cursor")
    if raw_cursor:
        score, _, member = raw_cursor.partition("-")
        cursor_score = _whole_number(score)
        if cursor_score is None or not member:
            raise ApiError(400, "cursor is not valid: pass the nextCursor of the previous page unchanged")
        cursor = (cursor_score, member)
    async with _deadline():
        jobs, next_cursor = await _api(request).store.list(state=state, job_name=job_name, limit=limit, cursor=cursor)
    return JSONResponse({"jobs": jobs, "nextCursor": next_cursor})


async def retry_job(request: Request) -> Response:
    _authorize(request, write=True)
    async with _deadline():
        record = await _api(request).store.requeue(_path_job_id(request))

    return JSONResponse(public(record), status_code=202)


async def retry_jobs(request: Request) -> Response:
    _authorize(request, write=True)
    body = await _json_body(request)
    if not isinstance(body, dict) or body.get("state") != "failed" or set(body) - {"state", "jobName"}:
        raise ApiError(400, 'body must be {"state": "failed"} with an optional "jobName"')
    api = _api(request)
    job_name = body.get("jobName")
    if job_name is not None and job_name not in api.registry.names():
        raise ApiError(400, f"jobName {job_name!r} is not one of {', '.join(api.registry.names())}")
    requeued = await api.store.requeue_many(job_name=job_name, batch_size=BULK_BATCH, max_jobs=BULK_MAX)
    return JSONResponse({"requeued": requeued})


async def delete_job(request: Request) -> Response:
    _authorize(request, write=True)
    async with _deadline():
        await _api(request).store.delete(_path_job_id(request))
    return Response(status_code=204)


async def delete_jobs(request: Request) -> Response:
    _authorize(request, write=True)
    state, job_name = _filters(request)
    if state != "failed":
        raise ApiError(400, "bulk delete takes state=failed (and an optional jobName)")
    deleted = await _api(request).store.delete_many(job_name=job_name, batch_size=BULK_BATCH, max_jobs=BULK_MAX)
    return JSONResponse({"deleted": deleted})


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    try:
        async with asyncio.timeout(2):
            await _api(request).client.ping()
    except (*REDIS_DOWN_ERRORS, TimeoutError, redis.RedisError) as error:
        if _refused_credentials(error):
            return JSONResponse({"error": "Redis refused the credentials in REDIS_URL: not ready"}, status_code=503)
        return JSONResponse({"error": "Redis does not answer: not ready"}, status_code=503)
    return JSONResponse({"status": "ready"})


async def metrics(request: Request) -> Response:
    output = await run_in_threadpool(generate_latest, _api(request).metrics_registry)
    return Response(output, media_type=CONTENT_TYPE_LATEST)


async def openapi(request: Request) -> Response:
    api = _api(request)
    return JSONResponse(document(api.registry, max_batch_jobs=api.settings.max_batch_jobs))


ROUTES = [
    Route("/enqueue", enqueue, methods=["POST"]),
    Route("/enqueue/batch", enqueue_batch, methods=["POST"]),
    Route("/jobs", list_jobs, methods=["GET"]),
    Route("/jobs", delete_jobs, methods=["DELETE"]),
    Route("/jobs/retry", retry_jobs, methods=["POST"]),
    Route("/jobs/{job_id}", get_job, methods=["GET"]),
    Route("/jobs/{job_id}", delete_job, methods=["DELETE"]),
    Route("/jobs/{job_id}/retry", retry_job, methods=["POST"]),
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
    Route("/openapi.json", openapi, methods=["GET"]),
]


class HttpMetricsMiddleware:
    """Counts and times requests by route template (never a raw path or id)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            # The router records the route it chose (Starlette >= 0.48); no match means no route.
            route = scope.get("route")
            template = route.path if isinstance(route, Route) else "<unmatched>"
            scope["app"].state.api.http_metrics.observe(template, scope["method"], status, started)


def create_app(settings: Settings, *, job_registry: JobRegistry | None = None) -> Starlette:
    """The API for these settings; Redis connections open and close with the app's lifespan."""
    settings.require_api_key()
    if job_registry is None:
        importlib.import_module("app.actors")  # configures the broker and registers the job types
        job_registry = registered_jobs
    keys = Keys(namespace=settings.namespace)
    log = OutcomeLog(keys=keys, retention_seconds=settings.log_retention_seconds)
    enqueuer = Enqueuer.for_settings(settings, registry=job_registry, keys=keys, log=log)
    client = connections.make_async_client(settings)
    metrics_registry = CollectorRegistry()
    sync_client = connections.make_client(settings)
    metrics_registry.register(
        QueueCollector(
            client=sync_client,
            keys=keys,
            jobs=[(t.name, t.queue) for t in job_registry],
            heartbeat_timeout_ms=settings.heartbeat_timeout_ms,
        )
    )
    api = Api(
        settings=settings,
        registry=job_registry,
        keys=keys,
        enqueuer=enqueuer,
        client=client,
        batcher=WriteBatcher(client, timeout_s=REDIS_DEADLINE_S),
        store=JobStore(client=client, keys=keys, log=log, enqueuer=enqueuer),
        metrics_registry=metrics_registry,
        http_metrics=HttpMetrics(metrics_registry),
        enqueue_if_absent=client.register_script(ENQUEUE_IF_ABSENT),
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        logger.info("API ready; Redis at %s", connections.describe(settings))
        try:
            yield
        finally:
            await client.aclose()
            sync_client.close()

    app = Starlette(
        routes=ROUTES,
        lifespan=lifespan,
        exception_handlers={
            ApiError: _api_error,
            BrokerUnavailable: _unavailable,
            UnknownJob: _unknown_job,
            InvalidJobData: _invalid_data,
            JobNotFound: _not_found,
            JobStateConflict: _conflict,
            redis.ConnectionError: _redis_down,
            redis.TimeoutError: _redis_down,
            404: _not_found_route,
            405: _method_not_allowed,
        },
    )
    app.state.api = api
    app.add_middleware(HttpMetricsMiddleware)
    return app


async def _not_found_route(request: Request, exc: Exception) -> Response:
    return _error_body(404, f"no such endpoint {request.method} {request.url.path}: see /openapi.json")


async def _method_not_allowed(request: Request, exc: Exception) -> Response:
    # Several routes can share a path template (GET and DELETE /jobs): Allow lists the methods of all of them.
    template = next(r.path for r in ROUTES if r.matches(request.scope)[0] != Match.NONE)
    allowed = sorted({m for r in ROUTES if r.path == template for m in r.methods or ()})
    response = _error_body(
        405, f"{request.method} is not allowed on {request.url.path}: use {', '.join(allowed)} (see /openapi.json)"
    )
    response.headers["Allow"] = ", ".join(allowed)
    return response


#: Young-generation threshold of the cyclic garbage collector in the API process (Python: 700).
GC_YOUNG_THRESHOLD = 10_000


def tune_garbage_collector() -> None:
    """For a server process, once it is built. What exists then (modules, the app, its clients)
    lives as long as the process: frozen, the collector's full passes no longer walk it. And a
    request allocates a few hundred short-lived containers (coroutines, futures, dicts) that
    reference counting frees: collecting them every 700 allocations was wasted work. Measured
    with wrk on POST /enqueue: about 95 -> 75 µs of CPU per request (each alone gave part of it)."""
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])


class _AppFromEnvironment:
    """Builds the app from the environment when the server starts (not at import), and stops the
    server with a clear message when a setting is missing or wrong."""

    def __init__(self) -> None:
        self._app: Starlette | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._app is None:
            try:
                self._app = create_app(Settings.from_env())
            except SettingsError as error:
                if scope["type"] == "lifespan":
                    await receive()
                    await send({"type": "lifespan.startup.failed", "message": f"Cannot start the API: {error}"})
                    return
                raise
            tune_garbage_collector()
        await self._app(scope, receive, send)


app = _AppFromEnvironment()
