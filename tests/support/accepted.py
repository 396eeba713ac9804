"""What an accepted job leaves in Redis, for tests that check a refused one left nothing."""

from __future__ import annotations

from typing import Any

import redis

from app.jobs import load_job_types
from app.keys import Keys, delay_queue
from app.settings import Settings

KEYS = Keys(namespace=Settings.namespace)
#: Every queue of the registered job types, and its delay queue.
QUEUES = sorted({q for t in load_job_types() for q in (t.queue, delay_queue(t.queue))})
#: `enqueued` of a Redis nothing was enqueued into.
NOTHING: tuple[Any, ...] = ([], [0] * len(QUEUES), [0] * len(QUEUES), 0)


def enqueued(client: redis.Redis) -> tuple[Any, ...]:
    """Everything an accepted job adds to: the enqueued counter, the queues and their messages, the job index."""
    return (
        sorted(client.hgetall(KEYS.enqueued_counts()).items()),
        [client.llen(KEYS.queue(queue)) for queue in QUEUES],
        [client.hlen(KEYS.queue_messages(queue)) for queue in QUEUES],
        client.zcard(KEYS.all_index()),
    )
