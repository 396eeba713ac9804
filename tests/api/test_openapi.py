"""Fuzzing the API from its own /openapi.json with schemathesis, in process, on a private Redis.

With the key: no 5xx, every status, content type and body as documented, and a refused request
enqueues nothing. Without it (no key, or one schemathesis makes up): every /jobs and /enqueue
operation answers 401 and enqueues nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.config import SchemathesisConfig
from schemathesis.python import asgi
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from app.api.openapi import document
from app.http import OPERATIONS, ROUTES, create_app
from app.jobs import load_job_types
from app.settings import Settings
from tests.support.accepted import enqueued
from tests.support.services import RedisServer, running_redis

API_KEY = "fuzz-api-key-0123456789"
MAX_BATCH_JOBS = 20
SEED = 20_240_601
MAX_EXAMPLES = 40

# A job type's data is checked by pydantic, and pydantic's email check refuses the special-use
# domains (.test, .local, ...) that hypothesis may pick for `format: email`; generate addresses
# that are valid by both, so that a 422 for valid data still fails the run.
schemathesis.openapi.format("email", st.emails(domains=st.sampled_from(["example.com", "mail.example.org"])))


def _settings(redis_url: str) -> Settings:
    return Settings.from_env({"REDIS_URL": redis_url, "API_KEY": API_KEY, "MAX_BATCH_JOBS": str(MAX_BATCH_JOBS)})


class _AppUnderTest:
    """The schema is read from /openapi.json when this module is imported, the app on a private Redis
    is made by a fixture: this forwards to whichever app is current. (schemathesis.pytest.from_fixture
    is meant for this, but schemathesis 4.32 fails with pytest 9 there: it sets Function._nodeid.)"""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


def _config(*, with_key: bool) -> SchemathesisConfig:
    config: dict[str, Any] = {
        "seed": SEED,
        "generation": {
            "max-examples": MAX_EXAMPLES,
            "database": "none",
            # Unknown query parameters are ignored, as HTTP APIs do; not a defect.
            "allow-extra-parameters": False,
        },
        # Constants analysis feeds string literals of our code into the data, such as MAIL_FROM's default
        # taskqueue@localhost: a `format: email` value that emailJob rightly refuses (special-use domain).
        "analysis": {"constants": {"enabled": False}},
        "checks": {
            # 413 is how the API refuses a body or a batch over its limits.
            "negative_data_rejection": {"expected-statuses": [400, 401, 403, 404, 405, 413, 422]},
        },
    }
    if with_key:
        config["auth"] = {"openapi": {"apiKey": {"api_key": API_KEY}}}
    return SchemathesisConfig.from_dict(config)


# /openapi.json reads nothing from Redis: this app's Redis URL is never contacted.
APP = _AppUnderTest(create_app(_settings("redis://127.0.0.1:1/0")))
with_key = schemathesis.openapi.from_asgi("/openapi.json", APP, config=_config(with_key=True))
without_key = schemathesis.openapi.from_asgi("/openapi.json", APP, config=_config(with_key=False))

SECURED = {
    (method, route.path)
    for route in ROUTES
    for method in route.methods or ()
    if route.path.startswith(("/jobs", "/enqueue"))
}


@pytest.fixture(scope="module")
def fuzz_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with running_redis(tmp_path_factory.mktemp("fuzz-redis")) as server:
        yield server


@pytest.fixture(scope="module")
def app_under_test(fuzz_redis: RedisServer) -> Iterator[_AppUnderTest]:
    # Schemathesis runs an app's lifespan once, on its own event loop, and ends it at exit: end the
    # schema-loading one now and this one before its Redis stops.
    asgi.shutdown_lifespans()
    APP.app = create_app(_settings(fuzz_redis.url))
    yield APP
    asgi.shutdown_lifespans()


@pytest.fixture(scope="module")
def fuzz_client(fuzz_redis: RedisServer) -> Iterator[redis.Redis]:
    client = fuzz_redis.client()
    yield client
    client.close()


def _documented(case: Any) -> bool:
    return bool(case.method.upper() == case.operation.method.upper())


# Each example is a request and several Redis round trips: time is not a health problem here.
HEALTH = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


@with_key.parametrize()
@HEALTH
def test_with_the_key_every_answer_is_documented_and_refusals_enqueue_nothing(
    case: Any, app_under_test: _AppUnderTest, fuzz_client: redis.Redis
) -> None:
    before = enqueued(fuzz_client)
    response = case.call()
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert enqueued(fuzz_client) == before, f"refused with {response.status_code} but enqueued: {response.text}"
        if _documented(case):
            assert response.json()["error"], response.text
    case.validate_response(response)


@without_key.parametrize()
@HEALTH
def test_without_the_key_every_jobs_and_enqueue_operation_answers_401(
    case: Any, app_under_test: _AppUnderTest, fuzz_client: redis.Redis
) -> None:
    before = enqueued(fuzz_client)
    response = case.call()
    assert response.status_code < 500, response.text
    if (case.operation.method.upper(), case.operation.path) in SECURED:
        if response.status_code == 404:
            # A generated job id with a '/' matches no route at all: nothing to authorize.
            assert "no such endpoint" in response.json()["error"], response.text
        else:
            assert response.status_code == (401 if _documented(case) else 405), response.text
        assert enqueued(fuzz_client) == before
    case.validate_response(response)


def test_the_document_covers_every_route() -> None:
    """The fuzzing above reaches only what /openapi.json lists: every route, the document itself included."""
    documented = {(method.upper(), path) for path, item in with_key.raw_schema["paths"].items() for method in item}
    served = {(method, route.path) for route in ROUTES for method in route.methods or () if method != "HEAD"}
    assert documented == served


def test_each_operation_is_its_routes_declaration_with_what_its_access_answers() -> None:
    paths = with_key.raw_schema["paths"]
    ids = []
    for route in ROUTES:
        declared = OPERATIONS[route.endpoint]
        for method in set(route.methods or ()) - {"HEAD"}:
            described = paths[route.path][method.lower()]
            ids.append(described["operationId"])
            assert described["operationId"] == declared.operation_id
            statuses = set(described["responses"])
            assert {str(status) for status in declared.answers} <= statuses
            protected = route.path.startswith(("/jobs", "/enqueue"))
            assert (declared.access is not None) == protected, route.path
            if protected:
                assert described["security"] == [{"apiKey": []}]
                assert {"401", "503"} <= statuses
                assert ("403" in statuses) == (declared.access == "write"), route.path
    assert len(ids) == len(set(ids)), "operationIds must be unique"


def test_one_job_is_documented_with_its_traceback_and_on_request_its_data() -> None:
    get_job = with_key.raw_schema["paths"]["/jobs/{job_id}"]["get"]
    assert {"name": "include", "in": "query"}.items() <= get_job["parameters"][1].items()
    detail = get_job["responses"]["200"]["content"]["application/json"]["schema"]
    schemas = with_key.raw_schema["components"]["schemas"]
    fields = schemas[detail["$ref"].rpartition("/")[2]]["properties"]
    assert {"traceback", "data"} <= set(fields) and "include=data" in fields["data"]["description"]
    assert not {"traceback", "data"} & set(schemas["JobRecord"]["properties"])  # the lists keep their fields


def test_a_route_without_an_operation_is_not_left_out_silently() -> None:
    async def endpoint(request: Any) -> None: ...

    with pytest.raises(LookupError, match="/somewhere"):
        document([Route("/somewhere", endpoint)], OPERATIONS, load_job_types(), max_batch_jobs=1)
