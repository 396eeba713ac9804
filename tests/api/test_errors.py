"""Every error answer of the API: its status, a JSON {"error": ...} a person can act on, and nothing enqueued.

In process (`create_app` behind httpx's ASGI transport) on a private redis-server, plus the real
uvicorn process for what only a server shows: refusing to start, and answering over a socket.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from app.api.body import MAX_JSON_DEPTH
from app.api.errors import REDIS_DEADLINE_S, RETRY_AFTER_S
from app.api.openapi import MAX_PAGE
from app.jobs import load_job_types
from app.keys import delay_queue
from app.settings import Settings
from tests.support.accepted import KEYS, NOTHING, enqueued
from tests.support.inprocess import api_client
from tests.support.services import ROOT, VENV_BIN, RedisServer, Stack, free_port, wait_until

pytestmark = pytest.mark.anyio

API_KEY = "errors-api-key-0123456789"
KNOWN = ", ".join(load_job_types().names())
GOOD_JOB = {"jobName": "emailJob", "data": {"email": "user@example.com"}}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def settings_for(redis_url: str, **env: str) -> Settings:
    return Settings.from_env({"REDIS_URL": redis_url, "API_KEY": API_KEY, **env})


@pytest.fixture
async def api(redis_server: RedisServer) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(settings_for(redis_server.url, MAX_BATCH_JOBS="10"), **{"x-api-key": API_KEY}) as client:
        yield client


def assert_error(response: httpx.Response, status: int, *fragments: str) -> dict[str, Any]:
    """The status, a JSON body {"error": "..."} and each fragment in the message."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    assert isinstance(body, dict) and isinstance(body.get("error"), str) and body["error"], body
    assert set(body) <= {"error", "details"}, body
    for fragment in fragments:
        assert fragment in body["error"], f"{fragment!r} not in {body['error']!r}"
    return body


# ----- authentication -----


async def test_missing_key_is_401_saying_which_header_to_send(
    api: httpx.AsyncClient, redis_client: redis.Redis
) -> None:
    response = await api.post("/enqueue", json=GOOD_JOB, headers={"x-api-key": ""})
    assert_error(response, 401, "missing x-api-key header", "API_KEY")
    assert enqueued(redis_client) == NOTHING


async def test_wrong_key_is_401(api: httpx.AsyncClient, redis_client: redis.Redis) -> None:
    response = await api.post("/enqueue", json=GOOD_JOB, headers={"x-api-key": "not-the-key"})
    body = assert_error(response, 401, "wrong API key")
    assert "not-the-key" not in json.dumps(body)
    assert enqueued(redis_client) == NOTHING


# ----- the body -----


@pytest.mark.parametrize(
    ("content", "fragments"),
    [
        (b'{"jobName": "emailJob", "data": {', ("not valid JSON", "Content-Type: application/json")),
        (b"\xff\xfe", ("not valid JSON",)),
        (b"", ("not valid JSON",)),
        (b'{"jobName": "emailJob", "data": {"email": "a@example.com"}, "delayMs": NaN}', ("NaN",)),
        (b'{"jobName": "webhookJob", "data": {"url": "https://example.com/", "payload": 1e999}}', ("out of range",)),
        (b'{"jobName": "emailJob", "data": {"email": "a@example.com", "body": "\\ud800"}}', ("surrogates",)),
        (
            b'{"jobName": "webhookJob", "data": {"url": "https://example.com/", "payload": '
            + b"[" * (MAX_JSON_DEPTH + 1)
            + b"]" * (MAX_JSON_DEPTH + 1)
            + b"}}",
            (f"nested more than {MAX_JSON_DEPTH} levels",),
        ),
        (b"[" * 100_000 + b"]" * 100_000, ("nested too deeply",)),
        (b'{"payload": ' + b"1" * 5000 + b"}", ("too many digits",)),
    ],
    ids=["truncated", "not-utf8", "empty", "nan", "infinity", "lone-surrogate", "deep", "very-deep", "huge-number"],
)
async def test_malformed_json_is_400(
    api: httpx.AsyncClient, redis_client: redis.Redis, content: bytes, fragments: tuple[str, ...]
) -> None:
    response = await api.post("/enqueue", content=content, headers={"content-type": "application/json"})
    assert_error(response, 400, *fragments)
    assert enqueued(redis_client) == NOTHING


@pytest.mark.parametrize(
    ("body", "fragments"),
    [
        ([GOOD_JOB], ('body must be a JSON object like {"jobName"',)),
        ({"data": {}}, ("jobName is missing", KNOWN)),
        ({"jobName": "sendFax", "data": {}}, ("unknown jobName 'sendFax'", KNOWN)),
        ({"jobName": ["emailJob"], "data": {}}, ("unknown jobName", KNOWN)),
        ({**GOOD_JOB, "colour": 1}, ("unknown field(s) colour", "allowed are jobName, data, delayMs, priority")),
    ],
    ids=["not-an-object", "no-jobName", "unknown-jobName", "jobName-not-a-string", "unknown-field"],
)
async def test_bad_request_is_400_listing_what_is_allowed(
    api: httpx.AsyncClient, redis_client: redis.Redis, body: Any, fragments: tuple[str, ...]
) -> None:
    assert_error(await api.post("/enqueue", json=body), 400, *fragments)
    assert enqueued(redis_client) == NOTHING


async def test_data_failing_the_schema_is_422_naming_each_field(
    api: httpx.AsyncClient, redis_client: redis.Redis
) -> None:
    job = {"jobName": "emailJob", "data": {"email": "not-an-address", "subject": 5, "cc": "x"}}
    body = assert_error(await api.post("/enqueue", json=job), 422, "invalid data for emailJob", "data.email")
    assert set(body["details"]["fields"]) == {"data.email", "data.subject", "data.cc"}
    assert enqueued(redis_client) == NOTHING


@pytest.mark.parametrize(
    ("job", "field"),
    [
        ({"jobName": "emailJob"}, "data"),
        ({"jobName": "emailJob", "data": "user@example.com"}, "data"),
        ({**GOOD_JOB, "delayMs": -1}, "delayMs"),
        ({**GOOD_JOB, "delayMs": 1.5}, "delayMs"),
        ({**GOOD_JOB, "delayMs": "1000"}, "delayMs"),
        ({**GOOD_JOB, "delayMs": 8 * 86_400_000}, "delayMs"),
        ({"jobName": "webhookJob", "data": {"url": "ftp://example.com/x", "payload": {}}}, "data.url"),
        ({"jobName": "webhookJob", "data": {"url": "https://example.com/"}}, "data.payload"),
    ],
    ids=["no-data", "data-not-an-object", "negative-delay", "fractional-delay", "delay-as-text", "delay-over-7-days",
         "url-not-http", "no-payload"],
)  # fmt: skip
async def test_each_invalid_field_is_422_and_named(
    api: httpx.AsyncClient, redis_client: redis.Redis, job: dict[str, Any], field: str
) -> None:
    body = assert_error(await api.post("/enqueue", json=job), 422, field)
    assert field in body["details"]["fields"], body
    assert enqueued(redis_client) == NOTHING


async def test_a_whole_number_of_milliseconds_written_as_a_float_is_a_delay(
    api: httpx.AsyncClient, redis_client: redis.Redis
) -> None:
    # JSON has one number type: 60000.0 is 60000 (JSON Schema's "integer" agrees).
    response = await api.post("/enqueue", json={**GOOD_JOB, "delayMs": 60000.0})
    assert response.status_code == 202, response.text
    assert redis_client.llen(KEYS.queue(delay_queue("default"))) == 1


async def test_body_over_the_limit_is_413_whether_declared_or_streamed(
    api: httpx.AsyncClient, redis_client: redis.Redis
) -> None:
    limit = Settings.max_body_bytes
    padding = "x" * limit
    big = json.dumps({**GOOD_JOB, "data": {"email": "user@example.com", "body": padding}}).encode()
    assert_error(await api.post("/enqueue", content=big), 413, f"larger than {limit} bytes")

    async def chunks() -> AsyncIterator[bytes]:
        # No Content-Length: the app counts while it reads, and stops at the limit.
        for start in range(0, len(big), 65_536):
            yield big[start : start + 65_536]

    assert_error(await api.post("/enqueue", content=chunks()), 413, f"larger than {limit} bytes")
    assert_error(await api.post("/enqueue/batch", content=big), 413, f"larger than {limit} bytes")
    assert enqueued(redis_client) == NOTHING


async def test_a_batch_with_one_invalid_job_enqueues_none(api: httpx.AsyncClient, redis_client: redis.Redis) -> None:
    jobs = [GOOD_JOB, {"jobName": "emailJob", "data": {"email": "nope"}}, {"jobName": "sendFax", "data": {}}]
    body = assert_error(await api.post("/enqueue/batch", json={"jobs": jobs}), 422, "2 of 3 jobs are invalid")
    assert [problem["index"] for problem in body["details"]] == [1, 2]
    assert "data.email" in body["details"][0]["fields"]
    assert KNOWN in body["details"][1]["error"]
    assert enqueued(redis_client) == NOTHING


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ({"jobs": []}, 400, "at least one job"),
        ({"jobs": GOOD_JOB}, 400, "at least one job"),
        ({"jobs": [GOOD_JOB] * 11}, 413, "the limit is 10"),
    ],
    ids=["empty", "not-a-list", "over-MAX_BATCH_JOBS"],
)
async def test_a_malformed_or_oversized_batch_is_refused(
    api: httpx.AsyncClient, redis_client: redis.Redis, body: Any, status: int, fragment: str
) -> None:
    assert_error(await api.post("/enqueue/batch", json=body), status, fragment)
    assert enqueued(redis_client) == NOTHING


async def test_an_idempotency_key_over_200_characters_is_400(api: httpx.AsyncClient, redis_client: redis.Redis) -> None:
    response = await api.post("/enqueue", json=GOOD_JOB, headers={"idempotency-key": "k" * 201})
    assert_error(response, 400, "Idempotency-Key is longer than 200 characters")
    assert enqueued(redis_client) == NOTHING


@pytest.mark.parametrize("key", ["", "   "], ids=["empty", "blank"])
async def test_an_empty_idempotency_key_is_400_not_ignored(
    api: httpx.AsyncClient, redis_client: redis.Redis, key: str
) -> None:
    response = await api.post("/enqueue", json=GOOD_JOB, headers={"idempotency-key": key})
    assert_error(response, 400, "Idempotency-Key is empty")
    assert enqueued(redis_client) == NOTHING


async def test_a_batch_with_an_unknown_field_is_refused(api: httpx.AsyncClient, redis_client: redis.Redis) -> None:
    response = await api.post("/enqueue/batch", json={"jobs": [GOOD_JOB], "priority": "high"})
    assert_error(response, 400, "unknown field(s) priority")
    assert enqueued(redis_client) == NOTHING


LONG = "x" * 10_000
#: Requests that echo a value of 10,000 characters the client sent, and the status they get.
ECHOING = [
    ("POST", "/enqueue", {"jobName": LONG, "data": {}}, 400),
    ("POST", "/enqueue", {"jobName": [LONG], "data": {}}, 400),
    ("POST", "/enqueue", {"jobName": LONG}, 422),
    ("POST", "/enqueue", {**GOOD_JOB, LONG: 1}, 400),
    ("POST", "/enqueue", {"jobName": "emailJob", "data": {"email": "user@example.com", LONG: 1}}, 422),
    ("POST", "/enqueue/batch", {"jobs": [GOOD_JOB], LONG: 1}, 400),
    ("POST", "/enqueue/batch", {"jobs": [{"jobName": LONG, "data": {}}, {"jobName": LONG}]}, 422),
    ("POST", "/jobs/retry", {"state": "failed", "jobName": LONG}, 400),
    ("GET", f"/jobs?state={LONG}", None, 400),
    ("GET", f"/jobs?jobName={LONG}", None, 400),
    ("GET", f"/jobs/{LONG}", None, 404),
    ("GET", f"/jobs/abc?wait={LONG}", None, 400),
    ("GET", f"/{LONG}", None, 404),
    ("PUT", f"/jobs/{LONG}", None, 405),
]


@pytest.mark.parametrize(("method", "path", "body", "status"), ECHOING)
async def test_a_long_value_is_echoed_cut_to_100_characters_with_its_length(
    api: httpx.AsyncClient, redis_client: redis.Redis, method: str, path: str, body: Any, status: int
) -> None:
    response = await api.request(method, path, json=body)
    assert_error(response, status)
    # The value itself, or what names it (its repr, its field's path, the URL path): cut, with its length.
    assert re.search(r"x{90,100}'?… \(100\d\d characters\)", response.text), response.text[:300]
    assert "x" * 101 not in response.text, response.text[:300]
    assert len(response.text) < 2_000, response.text[:300]
    assert enqueued(redis_client) == NOTHING


async def test_an_idempotency_key_counts_characters_not_bytes(
    api: httpx.AsyncClient, redis_client: redis.Redis
) -> None:
    # Sent as UTF-8: 200 Cyrillic characters are 400 bytes.
    key = ("ключ" * 50).encode()
    first = await api.post("/enqueue", json=GOOD_JOB, headers={"idempotency-key": key})
    assert first.status_code == 202, first.text
    again = await api.post("/enqueue", json=GOOD_JOB, headers={"idempotency-key": key})
    assert again.status_code == 200 and again.json()["jobId"] == first.json()["jobId"], again.text
    too_long = await api.post("/enqueue", json=GOOD_JOB, headers={"idempotency-key": key + "й".encode()})
    assert_error(too_long, 400, "Idempotency-Key is longer than 200 characters")
    # Bytes that are not UTF-8 count one character each, as before.
    assert (await api.post("/enqueue", json=GOOD_JOB, headers={"idempotency-key": b"\xff" * 200})).status_code == 202
    assert_error(await api.post("/enqueue", json=GOOD_JOB, headers={"idempotency-key": b"\xff" * 201}), 400, "longer")
    assert redis_client.zcard(KEYS.all_index()) == 2


# ----- the other endpoints -----


@pytest.mark.parametrize(
    ("query", "fragment"),
    [
        (f"limit={MAX_PAGE + 1}", f"limit must be a whole number from 1 to {MAX_PAGE}"),
        ("limit=0", "limit must be a whole number"),
        ("limit=%C2%B2", "limit must be a whole number"),  # '²' passes str.isdigit, not int()
        ("state=lost", "is not one of queued, running"),
        ("jobName=sendFax", KNOWN),
        ("cursor=abc", "pass the nextCursor of the previous page unchanged"),
        ("cursor=%C2%B2-x", "pass the nextCursor"),
    ],
)
async def test_bad_list_parameters_are_400(api: httpx.AsyncClient, query: str, fragment: str) -> None:
    assert_error(await api.get(f"/jobs?{query}"), 400, fragment)


async def test_unknown_job_route_and_method(api: httpx.AsyncClient) -> None:
    assert_error(await api.get("/jobs/nosuchjob"), 404, "no job nosuchjob", "retention")
    assert_error(await api.post("/jobs/nosuchjob/retry"), 404, "no job nosuchjob")
    assert_error(await api.delete("/jobs/nosuchjob"), 404, "no job nosuchjob")
    assert_error(await api.get("/jobs/" + "x" * 200), 404, "no job")
    assert_error(await api.get("/nowhere"), 404, "no such endpoint GET /nowhere", "/openapi.json")
    response = await api.put("/jobs")
    assert_error(response, 405, "PUT is not allowed on /jobs")
    assert response.headers["allow"] == "DELETE, GET, HEAD"


async def test_bulk_actions_check_their_input(api: httpx.AsyncClient) -> None:
    assert_error(await api.post("/jobs/retry", json={"state": "queued"}), 400, '{"state": "failed"}')
    assert_error(await api.post("/jobs/retry", json={"state": "failed", "jobName": "sendFax"}), 400, KNOWN)
    assert_error(await api.post("/jobs/retry", content=b"{"), 400, "not valid JSON")
    assert_error(await api.delete("/jobs"), 400, "state=failed")
    assert_error(await api.delete("/jobs?state=failed&jobName=sendFax"), 400, KNOWN)


async def test_healthz_and_readyz_answer_200_with_redis_up(api: httpx.AsyncClient) -> None:
    for path, status in (("/healthz", "ok"), ("/readyz", "ready")):
        response = await api.get(path, headers={"x-api-key": ""})
        assert response.status_code == 200, response.text
        assert response.json() == {"status": status}


# ----- Redis unavailable -----

UNAVAILABLE_REQUESTS = [
    ("POST", "/enqueue", GOOD_JOB, {}),
    ("POST", "/enqueue", GOOD_JOB, {"idempotency-key": "once"}),
    ("POST", "/enqueue/batch", {"jobs": [GOOD_JOB]}, {}),
    ("GET", "/jobs", None, {}),
    ("GET", "/jobs/abc", None, {}),
    ("POST", "/jobs/abc/retry", None, {}),
    ("DELETE", "/jobs/abc", None, {}),
    ("POST", "/jobs/retry", {"state": "failed"}, {}),
    ("DELETE", "/jobs?state=failed", None, {}),
]


async def _assert_unavailable(client: httpx.AsyncClient, *, within_s: float) -> None:
    for method, path, body, headers in UNAVAILABLE_REQUESTS:
        started = time.monotonic()
        response = await client.request(method, path, json=body, headers=headers)
        elapsed = time.monotonic() - started
        assert_error(response, 503, "unavailable", "retry later")
        assert response.headers["retry-after"] == str(RETRY_AFTER_S)
        assert elapsed < within_s, f"{method} {path} took {elapsed:.1f}s"
    started = time.monotonic()
    assert_error(await client.get("/readyz"), 503, "Redis")
    assert time.monotonic() - started < within_s
    assert (await client.get("/healthz")).status_code == 200


async def test_redis_refusing_connections_is_503_with_retry_after_at_once() -> None:
    closed = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    async with api_client(settings_for(closed), **{"x-api-key": API_KEY}) as client:
        await _assert_unavailable(client, within_s=3)


@pytest.fixture
def silent_redis() -> Iterator[str]:
    """A port that accepts connections (the kernel's backlog) and never answers: a hung Redis."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        yield f"redis://127.0.0.1:{listener.getsockname()[1]}/0"


async def test_a_hung_redis_is_503_within_seconds(silent_redis: str) -> None:
    async with api_client(settings_for(silent_redis), **{"x-api-key": API_KEY}) as client:
        started = time.monotonic()
        response = await client.post("/enqueue", json=GOOD_JOB)
        assert_error(response, 503, "unavailable", "nothing was enqueued", "retry later")
        assert response.headers["retry-after"] == str(RETRY_AFTER_S)
        assert time.monotonic() - started < REDIS_DEADLINE_S + 3
        started = time.monotonic()
        assert_error(await client.get("/readyz"), 503, "Redis")
        assert time.monotonic() - started < 5


async def test_redis_stopping_turns_answers_into_503_and_back(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    async with api_client(settings_for(redis_server.url), **{"x-api-key": API_KEY}) as client:
        assert (await client.post("/enqueue", json=GOOD_JOB)).status_code == 202
        redis_server.stop()
        try:
            await _assert_unavailable(client, within_s=5)
        finally:
            redis_server.start()
        # Back: the one accepted job is there (AOF), the refused ones are not.
        assert (await client.get("/readyz")).status_code == 200
        assert sorted(redis_client.hgetall(KEYS.enqueued_counts()).values()) == [b"1"]
        assert redis_client.llen(KEYS.queue("default")) == 1
        assert (await client.post("/enqueue", json=GOOD_JOB)).status_code == 202


# ----- the real server -----


def _environment(**env: str) -> dict[str, str]:
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "API_", "PROMETHEUS_"))}
    return {**inherited, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0", "PYTHONUNBUFFERED": "1", **env}


def _uvicorn(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(VENV_BIN / "uvicorn"), "app.http:app", "--host", "127.0.0.1", "--port", str(free_port())],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_server_refuses_to_start_without_an_api_key_and_says_how_to_set_one() -> None:
    result = _uvicorn(_environment())
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "API_KEY is not set" in output, output
    assert "export API_KEY=" in output and "secrets.token_urlsafe" in output, output


@pytest.mark.parametrize(
    ("variable", "value", "fragment"),
    [
        ("API_PORT", "abc", "API_PORT='abc' is not valid: expected a whole number"),
        ("MAX_RETRIES", "-1", "MAX_RETRIES=-1 is out of range"),
        (
            "REDIS_URL",
            "http://:hunter2@127.0.0.1:6390/0",
            "REDIS_URL='http://:***@127.0.0.1:6390/0' is not a Redis URL",
        ),
        ("WEBHOOK_ALLOWED_HOSTS", "10.0.0.0/33", "WEBHOOK_ALLOWED_HOSTS entry '10.0.0.0/33'"),
    ],
)
def test_an_invalid_setting_stops_the_server_naming_the_variable_and_value(
    variable: str, value: str, fragment: str
) -> None:
    result = _uvicorn(_environment(API_KEY="k" * 24, **{variable: value}))
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert fragment in output, output
    assert "hunter2" not in output


@pytest.mark.slow
def test_the_real_server_answers_errors_as_json(stack: Stack, redis_client: redis.Redis) -> None:
    _, base = stack.api()
    with httpx.Client(base_url=base, timeout=10) as client:
        assert_error(client.post("/enqueue", json=GOOD_JOB), 401, "missing x-api-key")
        assert_error(client.post("/enqueue", json=GOOD_JOB, headers={"x-api-key": "nope"}), 401, "wrong API key")
        headers = {"x-api-key": stack.api_key}
        assert_error(client.post("/enqueue", content=b"{", headers=headers), 400, "not valid JSON")
        assert_error(client.post("/enqueue", json={"jobName": "x", "data": {}}, headers=headers), 400, KNOWN)
        big = b'{"jobName": "emailJob", "data": {"body": "' + b"x" * Settings.max_body_bytes + b'"}}'
        assert_error(client.post("/enqueue", content=big, headers=headers), 413, "larger than")
        assert_error(client.patch("/enqueue", headers=headers), 405, "PATCH is not allowed")
        assert client.get("/readyz").json() == {"status": "ready"}
    assert enqueued(redis_client) == NOTHING


def _http_requests(base: str) -> dict[tuple[str, str, str], float]:
    """taskqueue_http_requests_total by (route, method, status), as the API's /metrics shows it."""
    found = {}
    for family in text_string_to_metric_families(httpx.get(base + "/metrics", timeout=10).text):
        for sample in family.samples:
            if sample.name == "taskqueue_http_requests_total":
                found[(sample.labels["route"], sample.labels["method"], sample.labels["status"])] = sample.value
    return found


@pytest.mark.slow
def test_a_client_gone_mid_body_is_counted_as_499_not_500_and_enqueues_nothing(
    stack: Stack, redis_client: redis.Redis
) -> None:
    service, base = stack.api()
    body = json.dumps(GOOD_JOB).encode()
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as client:
        client.sendall(
            b"POST /enqueue HTTP/1.1\r\nHost: api\r\nContent-Type: application/json\r\n"
            + f"x-api-key: {stack.api_key}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body[: len(body) // 2]
        )
    # The app reads the body until the server tells it the client is gone, then counts the request.
    counted = wait_until(lambda: _http_requests(base).get(("/enqueue", "POST", "499")), message="a 499 counted")
    assert counted == 1
    assert not any(status.startswith("5") for (_, _, status) in _http_requests(base)), _http_requests(base)
    assert enqueued(redis_client) == NOTHING
    log = service.log()
    assert "Exception in ASGI application" not in log and "ClientDisconnect" not in log, log
    assert "disconnected before sending the whole body of POST /enqueue" in log, log
