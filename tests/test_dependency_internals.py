"""The internals of our dependencies that the code leans on for speed, where no public API does
the job. Their versions are pinned in pyproject.toml; when an upgrade changes one of these shapes,
this fails and says what to look at, instead of the service misbehaving."""

from __future__ import annotations

import inspect

import dramatiq
import email_validator
import prometheus_client
from dramatiq.broker import MessageProxy
from dramatiq.brokers.redis import RedisBroker, _RedisConsumer
from email_validator import rfc_constants
from prometheus_client import CollectorRegistry, Histogram, values


def test_dramatiq_redis_consumer_has_the_shape_our_consumer_extends() -> None:
    """app/broker/consumer.py subclasses dramatiq.brokers.redis._RedisConsumer."""
    assert list(inspect.signature(_RedisConsumer.__init__).parameters) == [
        "self", "broker", "queue_name", "prefetch", "timeout",
    ], "_RedisConsumer.__init__ changed: review WakeableConsumer.__init__"  # fmt: skip
    broker = RedisBroker(url="redis://127.0.0.1:1/0")
    consumer = _RedisConsumer.__new__(_RedisConsumer)
    _RedisConsumer.__init__(consumer, broker, "q", 4, 100)
    assert consumer.message_cache == [] and consumer.prefetch == 4 and consumer.timeout == 100
    for name in ("ack", "nack", "requeue", "close", "__next__"):
        assert callable(getattr(_RedisConsumer, name)), f"_RedisConsumer.{name} is gone: review WakeableConsumer"
    assert isinstance(inspect.getattr_static(_RedisConsumer, "outstanding_message_count"), property)
    # The dispatch.lua commands, as broker attributes (RedisBroker.__getattr__).
    assert callable(broker.do_fetch) and callable(broker.do_nack), "RedisBroker.do_fetch/do_nack are gone"


def test_dramatiq_keeps_a_messages_exception_where_the_outcome_recorder_reads_it() -> None:
    """app/middleware/outcomes.py's failure_of reads MessageProxy._exception (no public reader)."""
    message = MessageProxy(dramatiq.Message("q", "a", (), {}, {}))
    error = RuntimeError("boom")
    message.stuff_exception(error)
    assert message._exception is error, "MessageProxy.stuff_exception no longer sets _exception"


def test_prometheus_histogram_children_have_the_parts_pending_updates_write() -> None:
    """app/middleware/metrics.py's PendingUpdates adds bucket counts and the sum of a histogram
    child in one go (Histogram.observe would write the multiprocess file once per observation)."""
    child = Histogram("h", "h", ("l",), buckets=(1, 2), registry=CollectorRegistry()).labels("x")
    assert child._upper_bounds == [1.0, 2.0, float("inf")]
    assert len(child._buckets) == 3 and all(hasattr(bucket, "inc") for bucket in child._buckets)
    assert hasattr(child._sum, "inc")
    assert "process_identifier" in inspect.signature(values.MultiProcessValue).parameters
    assert prometheus_client.__name__ == "prometheus_client"


def test_email_validator_has_the_domain_check_the_fast_path_memoizes() -> None:
    """app/delivery/email_domains.py calls email_validator's own domain check."""
    module = __import__("email_validator.validate_email", fromlist=["validate_email_domain_name"])
    result = module.validate_email_domain_name("Example.COM", test_environment=False, globally_deliverable=True)
    assert result["domain"] == "example.com" and result["ascii_domain"] == "example.com"
    assert rfc_constants.ATEXT and rfc_constants.EMAIL_MAX_LENGTH == 254
    assert "postmaster" in rfc_constants.CASE_INSENSITIVE_MAILBOX_NAMES
    assert isinstance(email_validator.TEST_ENVIRONMENT, bool)
