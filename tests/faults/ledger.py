"""The ledger: after a fault, did every accepted job end, and how many times did each run?

It reads the outcome records straight from Redis (key shapes from app.keys.Keys) and waits,
up to a deadline, until the system is at rest: every accepted job in a final state and no
message left in Redis (queued, delayed, or fetched but unacked).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import redis

from app.connection.shards import Shards
from app.keys import Keys, delay_queue
from app.outcomes.record import FINAL_STATES
from tests.support.redis_state import records_fields

QUEUES = ("default",)


@dataclass
class Ledger:
    """Counts over the accepted jobs; `missing` have no record, `unfinished` are not final,
    `unrecorded` are final with no execution counted (a start that was never written)."""

    accepted: int = 0
    succeeded: int = 0
    failed: int = 0
    skipped: int = 0
    executions: int = 0
    duplicates: list[str] = field(default_factory=list)
    unrecorded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unfinished: dict[str, str] = field(default_factory=dict)
    pending_messages: int = 0
    waited_s: float = 0.0

    @property
    def at_rest(self) -> bool:
        return not self.missing and not self.unfinished and self.pending_messages == 0

    def add(self, other: Ledger) -> None:
        """Another keyspace's ledger counted in (Redis Cluster: `read_across`)."""
        for name, theirs in vars(other).items():
            mine = getattr(self, name)
            setattr(self, name, {**mine, **theirs} if isinstance(mine, dict) else mine + theirs)

    def line(self) -> str:
        return (
            f"LEDGER accepted={self.accepted} succeeded={self.succeeded} failed={self.failed} "
            f"skipped={self.skipped} executions={self.executions} duplicates={len(self.duplicates)} "
            f"unrecorded={len(self.unrecorded)} "
            f"missing={len(self.missing)} unfinished={len(self.unfinished)} pending_messages={self.pending_messages} "
            f"(settled in {self.waited_s:.1f}s)"
        )

    def details(self) -> str:
        parts = [self.line()]
        if self.missing:
            parts.append(f"missing ids: {', '.join(self.missing[:50])}")
        if self.unfinished:
            parts.append("unfinished: " + ", ".join(f"{k}={v}" for k, v in list(self.unfinished.items())[:50]))
        if self.unrecorded:
            parts.append(f"final without a recorded execution: {', '.join(self.unrecorded[:20])}")
        if self.duplicates:
            parts.append(f"duplicates (executions > attempts): {', '.join(self.duplicates[:20])}")
        return "\n".join(parts)


def read(client: redis.Redis, keys: Keys, job_ids: Iterable[str], queues: Sequence[str] = QUEUES) -> Ledger:
    """The ledger as Redis shows it now (messages pending on `queues`)."""
    ids = list(dict.fromkeys(job_ids))
    ledger = Ledger(accepted=len(ids))
    rows = records_fields(client, keys, ids, ("state", "executions", "attempts"))
    for job_id, (state, executions, attempts) in zip(ids, rows, strict=True):
        if state is None:
            ledger.missing.append(job_id)
            continue
        runs = int(executions or 0)
        ledger.executions += runs
        if runs > int(attempts or 0):
            ledger.duplicates.append(job_id)
        if state not in FINAL_STATES:
            ledger.unfinished[job_id] = state
            continue
        if runs == 0:
            ledger.unrecorded.append(job_id)
        if state == "succeeded":
            ledger.succeeded += 1
        elif state == "failed":
            ledger.failed += 1
        else:
            ledger.skipped += 1
    ledger.pending_messages = pending_messages(client, keys, queues)
    return ledger


def read_across(shards: Shards, job_ids: Iterable[str], queues: Sequence[str]) -> Ledger:
    """The ledger of a Redis Cluster: each keyspace's jobs and messages read on its master, summed."""
    by_keyspace: dict[Keys, list[str]] = {}
    for job_id in dict.fromkeys(job_ids):
        by_keyspace.setdefault(shards.keys.for_job(job_id), []).append(job_id)
    total = Ledger()
    for shard in shards.of_queues(queues):
        own = [queue for queue in queues if shards.keys.for_queue(queue) == shard.keys]
        total.add(read(shard.client, shard.keys, by_keyspace.pop(shard.keys, []), own))
    assert not by_keyspace, f"jobs of undeclared queues: {by_keyspace}"
    return total


def pending_messages(client: redis.Redis, keys: Keys, queues: Sequence[str] = QUEUES) -> int:
    """Messages still stored for the queues: queued, delayed, or fetched and not yet acked."""
    with client.pipeline(transaction=False) as pipeline:
        for queue in queues:
            pipeline.hlen(keys.queue_messages(queue))
            pipeline.hlen(keys.queue_messages(delay_queue(queue)))
        return sum(int(n) for n in pipeline.execute())


def settle(client: redis.Redis, keys: Keys, job_ids: Iterable[str], *, timeout: float = 60.0) -> Ledger:
    """Wait until the accepted jobs are at rest (or the deadline), print the ledger, return it."""
    ids = list(job_ids)
    return _settle(lambda: read(client, keys, ids), timeout)


def settle_across(shards: Shards, job_ids: Iterable[str], queues: Sequence[str], *, timeout: float = 60.0) -> Ledger:
    """`settle` on a Redis Cluster (`read_across`)."""
    ids = list(job_ids)
    return _settle(lambda: read_across(shards, ids, queues), timeout)


def _settle(read_now: Callable[[], Ledger], timeout: float) -> Ledger:
    started = time.monotonic()
    deadline = started + timeout
    while True:
        try:
            ledger = read_now()
        except redis.ConnectionError:
            ledger = None  # Redis still restarting
        if ledger is not None and (ledger.at_rest or time.monotonic() > deadline):
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"Redis unreachable for {timeout}s while settling the ledger")
        time.sleep(0.1)
    ledger.waited_s = time.monotonic() - started
    print("\n" + ledger.details())
    return ledger


def assert_at_rest(ledger: Ledger) -> None:
    """Every accepted job final, none missing, nothing left in Redis."""
    assert ledger.at_rest, ledger.details()
