"""Per-enqueue options (app/broker/enqueue.py `from_request`): priority, maxRetries and queue,
checked once for the API and the producer, and where they land in Redis."""

from __future__ import annotations

import asyncio
import json

import pytest
import redis

from app.broker.enqueue import Enqueuer
from app.errors import InvalidJobData, UnknownJob
from app.jobs import load_job_types
from app.keys import Keys
from app.outcomes.log import OutcomeLog
from app.settings import Settings
from tests.support.inprocess import api_client
from tests.support.services import RedisServer

KEYS = Keys()
ENQUEUER = Enqueuer(
    registry=load_job_types(), keys=KEYS, log=OutcomeLog(keys=KEYS, retention_seconds=60), settings=Settings()
)
EMAIL = {"email": "someone@example.com"}


def test_options_become_message_options_and_the_list_of_their_level() -> None:
    message, delay = ENQUEUER.from_request(
        {"jobName": "emailJob", "data": EMAIL, "priority": "high", "maxRetries": 0, "delayMs": 0}
    )
    assert delay is None and message.options == {"priority": "high", "max_retries": 0}
    stored, _ = ENQUEUER.commands(message, None)
    assert ENQUEUER.list_of(stored) == KEYS.priority_queue("default", "high")
    plain, _ = ENQUEUER.from_request({"jobName": "emailJob", "data": EMAIL})
    assert plain.options == {}  # normal is the absence of the option: bodies stay as they were
    assert ENQUEUER.list_of(ENQUEUER.commands(plain, None)[0]) == KEYS.queue("default")


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("priority", "urgent", "high, normal, low"),
        ("maxRetries", -1, "0 to 100"),
        ("maxRetries", 101, "0 to 100"),
        ("maxRetries", True, "whole number"),
        ("queue", "nowhere", "declared queue: default"),
        ("delayMs", 1.5, "whole number"),
    ],
)
def test_each_bad_option_is_named_with_what_to_do(field: str, value: object, says: str) -> None:
    with pytest.raises(InvalidJobData) as caught:
        ENQUEUER.from_request({"jobName": "emailJob", "data": EMAIL, field: value})
    assert says in caught.value.problems[field]


def test_an_unknown_job_is_said_before_its_options() -> None:
    with pytest.raises(UnknownJob):
        ENQUEUER.from_request({"jobName": "nope", "data": {}, "priority": "urgent"})


def test_the_api_takes_the_options_and_refuses_bad_ones_with_422(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    settings = Settings(redis_url=redis_server.url, api_key="k" * 20, redis_url_is_default=False)

    async def scenario() -> None:
        async with api_client(settings, **{"x-api-key": "k" * 20}) as http:
            response = await http.post("/enqueue", json={"jobName": "emailJob", "data": EMAIL, "priority": "low"})
            assert response.status_code == 202, response.text
            job_id = response.json()["jobId"]
            record = (await http.get(f"/jobs/{job_id}")).json()
            assert record["priority"] == "low" and record["state"] == "queued"
            (redis_id,) = redis_client.lrange(KEYS.priority_queue("default", "low"), 0, -1)
            body = json.loads(redis_client.hget(KEYS.queue_messages("default"), redis_id) or b"{}")
            assert body["message_id"] == job_id and body["options"]["priority"] == "low"
            response = await http.post("/enqueue", json={"jobName": "emailJob", "data": EMAIL, "maxRetries": "5"})
            assert response.status_code == 422 and "maxRetries" in response.json()["details"]["fields"], response.text
            response = await http.post(
                "/enqueue/batch", json={"jobs": [{"jobName": "emailJob", "data": EMAIL, "queue": "elsewhere"}]}
            )
            assert response.status_code == 422 and "declared queue" in response.text
            assert redis_client.llen(KEYS.queue("default")) == 0  # nothing of the refused ones

    asyncio.run(scenario())
