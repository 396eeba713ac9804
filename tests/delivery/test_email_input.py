"""What emailJob refuses at enqueue: data no email can be built from is a 422 naming the field, and
nothing is enqueued (before, a line break in the subject was accepted, then failed at the worker and
was retried five times; a NUL in the body went into the mbox as it was). In process, on a private
redis-server, and through JobType.validate, the one check every way in goes through."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import redis

from app.errors import InvalidJobData
from app.jobs import load_job_types
from app.settings import Settings
from tests.support.accepted import NOTHING, enqueued
from tests.support.inprocess import api_client
from tests.support.services import RedisServer

pytestmark = pytest.mark.anyio

API_KEY = "email-input-api-key-0123456789"
EMAIL = load_job_types().get("emailJob")
ADDRESS = "user@example.com"

REFUSED = [
    ({"subject": "Hi\r\nBcc: victim@example.org"}, "data.subject", "U+000D"),
    ({"subject": "Hi\nBcc: victim@example.org"}, "data.subject", "U+000A"),
    ({"subject": "Hi\r"}, "data.subject", "U+000D"),
    ({"subject": "Hi\x00there"}, "data.subject", "U+0000"),
    ({"subject": "Hi\tthere"}, "data.subject", "U+0009"),
    ({"subject": "Hi\x1b[31m"}, "data.subject", "U+001B"),
    ({"subject": "Hi\x85there"}, "data.subject", "U+0085"),
    ({"subject": "Hi\u2028Bcc: victim@example.org"}, "data.subject", "U+2028"),
    ({"body": "Hello\x00"}, "data.body", "U+0000"),
    ({"email": f"{ADDRESS}\r\nBcc: victim@example.org"}, "data.email", "line feed"),
    ({"email": f"{ADDRESS}\n"}, "data.email", "line feed"),
    ({"email": "us\x00er@example.com"}, "data.email", "U+0000"),
    ({"email": "Name\r\nBcc: victim@example.org <user@example.com>"}, "data.email", "line feed"),
]
REFUSED_IDS = ["subject-CRLF-injection", "subject-LF-injection", "subject-CR", "subject-NUL", "subject-tab",
               "subject-escape", "subject-NEL", "subject-line-separator", "body-NUL", "email-CRLF-injection",
               "email-trailing-LF", "email-NUL", "display-name-CRLF"]  # fmt: skip

ACCEPTED = [
    {"body": "Dear user,\r\n\r\nline two\nline three\rand a\ttab.\n"},
    {"subject": "Grüße ✉ 👩\u200d💻 — naïve café"},
    {"subject": ""},
]


def job(data: dict[str, Any]) -> dict[str, Any]:
    return {"jobName": "emailJob", "data": {"email": ADDRESS, **data}}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def api(redis_server: RedisServer) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings.from_env({"REDIS_URL": redis_server.url, "API_KEY": API_KEY})
    async with api_client(settings, **{"x-api-key": API_KEY}) as client:
        yield client


@pytest.mark.parametrize(("data", "field", "reason"), REFUSED, ids=REFUSED_IDS)
async def test_enqueue_refuses_data_no_email_can_be_built_from_with_422_naming_the_field(
    api: httpx.AsyncClient, redis_client: redis.Redis, data: dict[str, Any], field: str, reason: str
) -> None:
    response = await api.post("/enqueue", json=job(data))
    assert response.status_code == 422, response.text
    body = response.json()
    assert list(body["details"]["fields"]) == [field], body
    assert reason in body["details"]["fields"][field], body
    assert field in body["error"]
    assert enqueued(redis_client) == NOTHING


async def test_a_batch_with_one_injected_subject_is_refused_whole(
    api: httpx.AsyncClient, redis_client: redis.Redis
) -> None:
    jobs = [job({}), job({"subject": "Hi\r\nBcc: victim@example.org"}), job({})]
    response = await api.post("/enqueue/batch", json={"jobs": jobs})
    assert response.status_code == 422, response.text
    (problem,) = response.json()["details"]
    assert problem["index"] == 1 and list(problem["fields"]) == ["data.subject"]
    assert enqueued(redis_client) == NOTHING


@pytest.mark.parametrize("data", ACCEPTED, ids=["body-with-line-breaks", "non-ASCII-subject", "empty-subject"])
async def test_line_breaks_in_the_body_and_any_printable_subject_are_accepted(
    api: httpx.AsyncClient, data: dict[str, Any]
) -> None:
    response = await api.post("/enqueue", json=job(data))
    assert response.status_code == 202, response.text


@pytest.mark.parametrize(("data", "field", "reason"), REFUSED, ids=REFUSED_IDS)
def test_validate_refuses_what_the_api_refuses(data: dict[str, Any], field: str, reason: str) -> None:
    # The producer and the batch endpoint go through this check too.
    with pytest.raises(InvalidJobData) as refused:
        EMAIL.validate({"email": ADDRESS, **data})
    assert list(refused.value.problems) == [field]
    assert reason in refused.value.problems[field]


def test_the_openapi_schema_says_what_the_subject_and_body_may_not_hold() -> None:
    import re

    properties = EMAIL.schema.model_json_schema()["properties"]
    subject, body = properties["subject"]["pattern"], properties["body"]["pattern"]
    for data, field, _ in REFUSED:
        if field == "data.subject":
            assert not re.match(subject, data["subject"])
        elif field == "data.body":
            assert not re.match(body, data["body"])
    for data in ACCEPTED:
        assert re.match(subject, data.get("subject", "")) and re.match(body, data.get("body", ""))
