"""Fuzzing the API from its own /openapi.json with schemathesis, in process, on a private Redis.

Every check schemathesis has (what `--checks all` runs), with what the document states and nothing
else: data the document allows is accepted (emails included: the document says which domains are
refused), data it does not is refused, and every status, header, content type and body is
documented. Besides: no 5xx, and a refused request enqueues nothing. With the key, one request
at a time, then the stateful phase, which follows the document's links from a new job to reading,
retrying and deleting it. Without the key (none, or one schemathesis makes up): every /jobs,
/enqueue and /queues operation answers 401 and enqueues nothing.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from schemathesis.config import SchemathesisConfig
from schemathesis.python import asgi
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from app.api import long_poll
from app.api.errors import CLIENT_GONE, RETRY_AFTER_S
from app.api.openapi import document
from app.api.operations import OPERATIONS
from app.delivery.email_domains import normalized_email
from app.http import ROUTES, create_app
from app.jobs import load_job_types
from app.outcomes.record import HISTORY_ENTRY_FIELDS
from app.settings import Settings
from tests.support.accepted import enqueued
from tests.support.services import RedisServer, running_redis

API_KEY = "fuzz-api-key-0123456789"
MAX_BATCH_JOBS = 20
SEED = 20_240_601
MAX_EXAMPLES = 40
#: The stateful phase: this many scenarios of up to STATEFUL_STEPS requests each.
STATEFUL_SCENARIOS = 30
STATEFUL_STEPS = 6
#: A long poll on a job that never finishes here (no worker) waits all its time: a short one.
SHORT_WAIT_S = 0.01
#: How the API refuses data the document does not allow.
REFUSALS = [400, 401, 403, 404, 405, 422]


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
        # Only the document's links: the stateful phase tests what the document says.
        "phases": {"stateful": {"max-steps": STATEFUL_STEPS, "inference": {"algorithms": []}}},
        "checks": {"enabled": True, "negative_data_rejection": {"expected-statuses": REFUSALS}},
        "operations": [
            {
                # A long poll on a job that never finishes here (no worker) waits all its time: a short wait.
                "include-path": "/jobs/{job_id}",
                "include-method": "GET",
                "parameters": {"query.wait": str(SHORT_WAIT_S)},
            },
            {
                # The document says it: more than maxItems jobs are refused with 413, as a body over the limit is.
                "include-path": "/enqueue/batch",
                "checks": {"negative_data_rejection": {"expected-statuses": [*REFUSALS, 413]}},
            },
        ],
    }
    if with_key:
        config["auth"] = {"openapi": {"apiKey": {"api_key": API_KEY}}}
    return SchemathesisConfig.from_dict(config)


# /openapi.json reads nothing from Redis: this app's Redis URL is never contacted.
APP = _AppUnderTest(create_app(_settings("redis://127.0.0.1:1/0")))
with_key = schemathesis.openapi.from_asgi("/openapi.json", APP, config=_config(with_key=True))
without_key = schemathesis.openapi.from_asgi("/openapi.json", APP, config=_config(with_key=False))

#: The routes that need a key.
PROTECTED_PREFIXES = ("/jobs", "/enqueue", "/queues", "/schedules")
SECURED = {
    (method, route.path)
    for route in ROUTES
    for method in route.methods or ()
    if route.path.startswith(PROTECTED_PREFIXES)
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


def _refusal_enqueued_nothing(response: Any, before: Any, client: redis.Redis, documented: bool) -> None:
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert enqueued(client) == before, f"refused with {response.status_code} but enqueued: {response.text}"
        if documented:
            assert response.json()["error"], response.text


@with_key.parametrize()
@HEALTH
def test_with_the_key_every_answer_is_documented_and_refusals_enqueue_nothing(
    case: Any, app_under_test: _AppUnderTest, fuzz_client: redis.Redis
) -> None:
    before = enqueued(fuzz_client)
    response = case.call()
    _refusal_enqueued_nothing(response, before, fuzz_client, _documented(case))
    case.validate_response(response)


@without_key.parametrize()
@HEALTH
def test_without_the_key_every_protected_operation_answers_401(
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


class _Workflow(with_key.as_state_machine()):  # type: ignore[misc]
    """Sequences of requests that follow the document's links; each step also checks ours."""

    client: redis.Redis

    def setup(self) -> None:
        # Each scenario from an empty Redis: a replayed scenario meets the answers it met the first
        # time (an Idempotency-Key seen before would turn a 202 into a 200), as Hypothesis requires.
        self.client.flushall()

    def before_call(self, case: Any) -> None:
        # The stateful phase does not apply the config's fixed `wait`: a valid one is cut short here.
        wait = (case.query or {}).get("wait")
        with contextlib.suppress(TypeError, ValueError):
            if 0 <= float(wait) <= long_poll.MAX_WAIT_S:
                case.query["wait"] = str(min(float(wait), SHORT_WAIT_S))
        self.before = enqueued(self.client)

    def after_call(self, response: Any, case: Any) -> None:
        super().after_call(response, case)
        _refusal_enqueued_nothing(response, self.before, self.client, documented=True)


def test_the_stateful_phase_follows_a_new_job_through_the_links(
    app_under_test: _AppUnderTest, fuzz_client: redis.Redis
) -> None:
    _Workflow.client = fuzz_client
    _Workflow.run(
        settings=settings(
            max_examples=STATEFUL_SCENARIOS,
            stateful_step_count=STATEFUL_STEPS,
            derandomize=True,
            database=None,
            deadline=None,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
    )


def test_the_stateful_phase_has_the_documents_links_and_only_them() -> None:
    transitions = _Workflow._transitions.operations
    followed = {
        (link.source.label, link.status_code, link.name, link.target.label)
        for operation in transitions.values()
        for link in operation.outgoing
    }
    new_job = {
        "GetJob": "GET /jobs/{job_id}",
        "RetryJob": "POST /jobs/{job_id}/retry",
        "DeleteJob": "DELETE /jobs/{job_id}",
    }
    expected = {
        (source, status, name, target)
        for source, statuses in (("POST /enqueue", ("200", "202")), ("POST /enqueue/batch", ("202",)))
        for status in statuses
        for name, target in new_job.items()
    }
    assert followed == expected
    assert not any(link.is_inferred for operation in transitions.values() for link in operation.outgoing)


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
            protected = route.path.startswith(PROTECTED_PREFIXES)
            assert (declared.access is not None) == protected, route.path
            if protected:
                assert described["security"] == [{"apiKey": []}]
                assert {"401", "503"} <= statuses
                assert ("403" in statuses) == (declared.access == "write"), route.path
                retry_after = described["responses"]["503"]["headers"]["Retry-After"]
                assert retry_after["required"] and retry_after["schema"]["const"] == RETRY_AFTER_S
            assert str(CLIENT_GONE) not in statuses  # counted in the metrics, never sent
    assert len(ids) == len(set(ids)), "operationIds must be unique"


@pytest.mark.parametrize(
    "address",
    ["user@example.com", "user@test.example.com", "user@mytest.com", "user@example.test", "user@Example.TEST",
     "user@example.local", "user@box.localhost", "user@x.onion", "user@example.invalid", "user@in-addr.arpa"],
)  # fmt: skip
def test_the_email_schema_refuses_the_special_use_domains_email_validation_refuses(address: str) -> None:
    schema = with_key.raw_schema["components"]["schemas"]["emailJobData"]["properties"]["email"]
    # Each address is a valid `format: email`: what tells them apart is `not` (an ECMA-262 regex, the same here).
    documented = re.search(schema["not"]["pattern"], address) is None
    try:
        normalized_email(address)
        accepted = True
    except ValueError:
        accepted = False
    assert documented == accepted
    assert "special-use" in schema["description"] and ".test" in schema["description"]


def test_one_job_is_documented_with_its_traceback_and_on_request_its_data() -> None:
    get_job = with_key.raw_schema["paths"]["/jobs/{job_id}"]["get"]
    assert {"name": "include", "in": "query"}.items() <= get_job["parameters"][1].items()
    detail = get_job["responses"]["200"]["content"]["application/json"]["schema"]
    schemas = with_key.raw_schema["components"]["schemas"]
    fields = schemas[detail["$ref"].rpartition("/")[2]]["properties"]
    assert {"traceback", "data"} <= set(fields) and "include=data" in fields["data"]["description"]
    assert not {"traceback", "data"} & set(schemas["JobRecord"]["properties"])  # the lists keep their fields
    # The attempt history: an array of the earlier attempts, each with its worker.
    assert fields["history"]["type"] == ["array", "null"] and "requeue keeps it" in fields["history"]["description"]
    entry = fields["history"]["items"]
    assert entry["required"] == list(HISTORY_ENTRY_FIELDS) and entry["properties"]["worker"] == {"type": "string"}
    assert "host:pid" in fields["worker"]["description"]
    assert not {"history", "worker"} & set(schemas["JobRecord"]["properties"])


def test_a_route_without_an_operation_is_not_left_out_silently() -> None:
    async def endpoint(request: Any) -> None: ...

    with pytest.raises(LookupError, match="/somewhere"):
        document([Route("/somewhere", endpoint)], OPERATIONS, load_job_types(), max_batch_jobs=1)
