"""The API's errors: each of our own errors mapped once to a status and a message a person can
act on. Redis errors never reach here as such: they became BrokerUnavailable where they were
caught (app/connection/clients.py)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import redis
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from app.connection.clients import translated
from app.errors import (
    BrokerUnavailable,
    InvalidJobData,
    JobNotFound,
    JobStateConflict,
    ReplicasBehind,
    UnknownJob,
    shown,
)

logger = logging.getLogger("app.http")

RETRY_AFTER_S = 5
#: What the HTTP metrics count for a client that went away before it sent its whole request (as nginx does).
#: Never sent: there is no one to send it to.
CLIENT_GONE = 499
#: Reads and writes answer within this even if Redis hangs.
REDIS_DEADLINE_S = 4.0


class ApiError(Exception):
    """An answer other than success: a status and a message a person can act on."""

    def __init__(self, status: int, message: str, *, details: Any = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.details = details
        self.headers = headers or {}


def error_body(status: int, message: str, details: Any = None) -> JSONResponse:
    body: dict[str, Any] = {"error": message}
    if details is not None:
        body["details"] = details
    return JSONResponse(body, status_code=status)


@contextlib.asynccontextmanager
async def deadline() -> AsyncIterator[None]:
    """Reads and writes answer within REDIS_DEADLINE_S even if Redis hangs; a Redis that does
    not answer is BrokerUnavailable."""
    try:
        async with asyncio.timeout(REDIS_DEADLINE_S):
            with translated():
                yield
    except TimeoutError:
        raise BrokerUnavailable("Redis did not answer in time") from None


def refused_credentials(exc: BaseException | None) -> bool:
    """Redis answered, but refused the password in REDIS_URL: retrying will not help until it is fixed."""
    while exc is not None:
        if isinstance(exc, redis.AuthenticationError) or (
            isinstance(exc, redis.ResponseError) and "NOAUTH" in str(exc)
        ):
            return True
        exc = exc.__cause__
    return False


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    response = error_body(exc.status, exc.message, exc.details)
    response.headers.update(exc.headers)
    return response


async def _unavailable(request: Request, exc: Exception) -> Response:
    if refused_credentials(exc):
        logger.error("Answering 503: Redis refused the credentials in REDIS_URL: %s", exc)
        message = (
            "the queue is unavailable: Redis refused the API's credentials (the operator must fix the password "
            "in REDIS_URL); nothing was enqueued: retry later"
        )
    elif isinstance(exc, ReplicasBehind):
        logger.warning("Answering 503: %s", exc)
        message = (
            f"the job may or may not be kept: {exc}, so a failover now could lose it. Retry later; "
            "with the same Idempotency-Key a retry cannot add it twice"
        )
    else:
        logger.warning("Answering 503: %s", exc)
        message = f"the queue is unavailable ({exc}); nothing was enqueued: retry later"
    response = error_body(503, message)
    response.headers["Retry-After"] = str(RETRY_AFTER_S)
    return response


async def _unknown_job(request: Request, exc: Exception) -> Response:
    return error_body(400, str(exc))


async def _invalid_data(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, InvalidJobData)
    return error_body(422, str(exc), {"fields": exc.problems})


async def _not_found(request: Request, exc: Exception) -> Response:
    return error_body(404, f"no job {shown(str(exc))}: it never existed, was deleted, or is older than the retention")


async def _conflict(request: Request, exc: Exception) -> Response:
    return error_body(409, str(exc))


async def _client_gone(request: Request, exc: Exception) -> Response:
    # Not a server error, and nothing was done: the body was never read whole. The server drops
    # this answer (the connection is closed); the HTTP metrics count it under its status.
    logger.info(
        "Client disconnected before sending the whole body of %s %s; nothing was done",
        request.method,
        request.url.path,
    )
    return Response(status_code=CLIENT_GONE)


#: Our errors and their answers.
ERROR_HANDLERS = {
    ApiError: _api_error,
    BrokerUnavailable: _unavailable,
    UnknownJob: _unknown_job,
    InvalidJobData: _invalid_data,
    JobNotFound: _not_found,
    JobStateConflict: _conflict,
    ClientDisconnect: _client_gone,
}
