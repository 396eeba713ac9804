"""DurableRetries is Dramatiq's Retries: every documented option of it works; only the enqueue of
the retry is ours (it waits out a Redis outage, then dead-letters)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker

from app.errors import BrokerUnavailable, PermanentJobError
from app.middleware.retries import NEXT_RETRY_AT, RETRY_LOST, DurableRetries


@pytest.fixture
def broker() -> Iterator[StubBroker]:
    stub = StubBroker(middleware=[])
    stub.add_middleware(DurableRetries(max_retries=5, min_backoff=10, max_backoff=20, enqueue_deadline_ms=300))
    stub.emit_after("process_boot")
    yield stub
    stub.close()


@pytest.fixture
def worker(broker: StubBroker) -> Iterator[dramatiq.Worker]:
    running = dramatiq.Worker(broker, worker_timeout=50)
    running.start()
    yield running
    running.stop()


def _flaky(broker: StubBroker, name: str, runs: list[int], **options: Any) -> dramatiq.Actor[Any, Any]:
    def fail() -> None:
        runs.append(1)
        raise RuntimeError("flaky")

    actor: dramatiq.Actor[Any, Any] = dramatiq.actor(fail, actor_name=name, broker=broker, **options)
    return actor


def test_max_retries_allows_one_run_and_that_many_retries(broker: StubBroker, worker: dramatiq.Worker) -> None:
    runs: list[int] = []
    _flaky(broker, "flaky", runs, max_retries=2).send()
    broker.join("default", fail_fast=False)
    worker.join()
    assert len(runs) == 3
    assert len(broker.dead_letters) == 1


def test_retry_when_decides_instead_of_the_count(broker: StubBroker, worker: dramatiq.Worker) -> None:
    runs: list[int] = []
    seen: list[tuple[int, str]] = []

    def retry_when(retries: int, error: BaseException) -> bool:
        seen.append((retries, str(error)))
        return retries < 1  # one retry, though max_retries would allow five

    _flaky(broker, "flaky", runs, retry_when=retry_when).send()
    broker.join("default", fail_fast=False)
    worker.join()
    assert len(runs) == 2
    assert seen == [(0, "flaky"), (1, "flaky")]
    assert len(broker.dead_letters) == 1


def test_on_retry_exhausted_messages_the_named_actor(broker: StubBroker, worker: dramatiq.Worker) -> None:
    exhausted: list[tuple[dict[str, Any], dict[str, Any]]] = []

    @dramatiq.actor(actor_name="exhausted", broker=broker)
    def on_exhausted(message: dict[str, Any], retry_info: dict[str, Any]) -> None:
        exhausted.append((message, retry_info))

    runs: list[int] = []
    sent = _flaky(broker, "flaky", runs, max_retries=1, on_retry_exhausted="exhausted").send()
    broker.join("default", fail_fast=False)
    worker.join()
    assert len(runs) == 2
    ((message, retry_info),) = exhausted
    assert message["message_id"] == sent.message_id and message["actor_name"] == "flaky"
    assert retry_info == {"retries": 1, "max_retries": 1}


def test_throws_fails_at_once(broker: StubBroker, worker: dramatiq.Worker) -> None:
    runs: list[int] = []

    def permanent() -> None:
        runs.append(1)
        raise PermanentJobError("no such mailbox")

    dramatiq.actor(permanent, actor_name="permanent", broker=broker, throws=(PermanentJobError,)).send()
    broker.join("default", fail_fast=False)
    worker.join()
    assert len(runs) == 1 and len(broker.dead_letters) == 1


def test_a_scheduled_retry_records_when_it_runs(broker: StubBroker) -> None:
    retries = next(m for m in broker.middleware if isinstance(m, DurableRetries))
    _flaky(broker, "flaky", [], max_retries=3)
    message = dramatiq.broker.MessageProxy(dramatiq.Message("default", "flaky", (), {}, {}))
    retries.after_process_message(broker, message, exception=RuntimeError("flaky"))
    assert not message.failed and message.options["retries"] == 1
    assert message.options[NEXT_RETRY_AT] > 0
    assert broker.queues["default.DQ"].qsize() == 1


def test_a_retry_that_redis_never_takes_is_dead_lettered_not_dropped(
    broker: StubBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    retries = next(m for m in broker.middleware if isinstance(m, DurableRetries))
    _flaky(broker, "flaky", [], max_retries=3)

    def down(*args: Any, **kwargs: Any) -> None:
        raise BrokerUnavailable("Redis is unavailable (ConnectionError: refused)")

    monkeypatch.setattr(broker, "enqueue", down)
    message = dramatiq.broker.MessageProxy(dramatiq.Message("default", "flaky", (), {}, {}))
    retries.after_process_message(broker, message, exception=RuntimeError("flaky"))
    assert message.failed and message.options[RETRY_LOST] is True
