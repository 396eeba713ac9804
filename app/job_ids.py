"""Job ids and Dramatiq's message ids: how they are made, and what a job id tells.

A job id is a version-7 UUID as 32 hex digits (on a Redis Cluster followed by `-<queue>`): its
first 12 digits are the time it was made (ms
since the epoch), the rest random. The time is what finds a succeeded job's record from its id
alone (app/outcomes/packed.py keeps those records in buckets by that time), and ids sort by it.
"""

from __future__ import annotations

import os
import time

from app.keys import JOB_ID_DIGITS as _DIGITS
from app.keys import JOB_ID_QUEUE_SEPARATOR

#: Where a job id's version digit is, and the version of ids that carry their time.
_VERSION_DIGIT = 12
_TIMED_VERSION = "7"


def new_job_id(at_ms: int | None = None, *, queue: str = "") -> str:
    """A version-7 UUID as 32 hex digits (like uuid.UUID(...).hex): 48 bits of time in ms, the
    version, 74 random bits and the RFC 9562 variant. `queue` (on a Redis Cluster): the id ends
    with `-<queue>`, which finds the job's keys from its id alone (app/keys.py for_job)."""
    ms = time.time_ns() // 1_000_000 if at_ms is None else at_ms
    random_bits = int.from_bytes(os.urandom(10), "big")  # 80 bits, 74 of them used
    value = (ms & 0xFFFF_FFFF_FFFF) << 80 | random_bits
    value = value & ~(0xF << 76) | (0x7 << 76)  # version 7
    value = value & ~(0x3 << 62) | (0x2 << 62)  # variant 10
    return f"{value:032x}{JOB_ID_QUEUE_SEPARATOR}{queue}" if queue else f"{value:032x}"


def job_id_time_ms(job_id: str) -> int | None:
    """When a job id was made (ms), or None for an id that does not carry it (an older random
    id, or one a test made up)."""
    if len(job_id) > _DIGITS and job_id[_DIGITS] == JOB_ID_QUEUE_SEPARATOR:
        job_id = job_id[:_DIGITS]  # a cluster id: its queue follows
    if len(job_id) != _DIGITS or job_id[_VERSION_DIGIT] != _TIMED_VERSION:
        return None
    try:
        return int(job_id[:12], 16)
    except ValueError:
        return None


def new_redis_id() -> str:
    """A random version-4 UUID in its usual form with dashes, as Dramatiq makes them."""
    value = int.from_bytes(os.urandom(16), "big")
    value = value & ~(0xF000 << 64) & ~(0xC000 << 48) | (0x4000 << 64) | (0x8000 << 48)
    digits = f"{value:032x}"
    return f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"
