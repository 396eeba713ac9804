"""Removing outcome records, index entries and dead letters older than the retention.

Work is done in bounded batches (one ZRANGEBYSCORE and one pipeline each) so Redis is never
blocked. Each run removes everything older than the cutoff, so a missed run is caught up by
the next one.

Run it once, now, with `python -m app.outcomes.cleanup` (same environment as a worker); the
`cleanupJob` (app/actors/cleanup.py) runs it every day (the `cleanup` schedule of schedules.toml).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass

import redis

from app.connection.clients import check_cluster_mode, make_shards
from app.connection.shards import Shards
from app.errors import SettingsError
from app.jobs import JobRegistry, load_job_types
from app.keys import Keys
from app.outcomes import packed
from app.outcomes.log import OutcomeLog
from app.outcomes.record import FAILED, STATES, SUCCEEDED, now_ms
from app.settings import Settings

logger = logging.getLogger(__name__)


@dataclass
class CleanupReport:
    records: int = 0
    index_entries: int = 0
    dead_letters: int = 0
    #: Succeeded records whose buckets had expired (packed.py), no longer counted.
    expired_succeeded: int = 0
    duration_ms: int = 0


def run(
    client: redis.Redis,
    keys: Keys,
    *,
    job_names: Iterable[str],
    queues: Iterable[str],
    retention_seconds: int,
    batch_size: int,
    at_ms: int | None = None,
    state_retention: Mapping[str, int] | None = None,
    record_status: bool = True,
) -> CleanupReport:
    """Remove what is older than the retention (of its state, for those in `state_retention`)
    from one keyspace, and record when this ran and what it removed (`record_status`)."""
    started = time.monotonic()
    at_ms = now_ms() if at_ms is None else at_ms
    retention = dict(state_retention or {})
    cutoff_ms = at_ms - retention_seconds * 1000
    report = CleanupReport()
    names = list(job_names)
    for state in (*STATES, "all"):
        deletes_records = state != "all"  # "all" is ordered by enqueue time: the job may still be alive
        # The all index keeps an entry as long as the longest retention keeps a record.
        kept_s = max([retention_seconds, *retention.values()]) if state == "all" else retention.get(state)
        state_cutoff = cutoff_ms if kept_s is None else at_ms - kept_s * 1000
        for name in (None, *names):
            index = keys.state_index(state, name)
            _trim_index(client, keys, index, state_cutoff, batch_size, deletes_records and name is None, report)
    dead_letter_cutoff = at_ms - retention.get(FAILED, retention_seconds) * 1000
    for queue in queues:
        _trim_dead_letters(client, keys, queue, dead_letter_cutoff, batch_size, report)
    succeeded_kept_ms = retention.get(SUCCEEDED, retention_seconds) * 1000
    offset = 0
    while True:  # bounded: each call looks at up to PRUNE_AT_MOST buckets of a finite list, from the offset
        prune = packed.prune_command(keys, older_than_ms=at_ms - succeeded_kept_ms, offset=offset)
        looked, taken, records = client.execute_command(*prune)  # type: ignore[misc]
        report.expired_succeeded += int(records)
        offset += int(looked) - int(taken)  # those still there (a late record keeps a bucket longer)
        if int(looked) < packed.PRUNE_AT_MOST:
            break
    report.duration_ms = int((time.monotonic() - started) * 1000)
    if record_status:
        _record_status(client, keys, report, at_ms=at_ms, retention_seconds=retention_seconds)
    return report


def _record_status(
    client: redis.Redis, keys: Keys, report: CleanupReport, *, at_ms: int, retention_seconds: int
) -> None:
    client.hset(
        keys.cleanup_status(),
        mapping={
            "lastRunAt": at_ms,
            "removedRecords": report.records,
            "removedIndexEntries": report.index_entries,
            "removedDeadLetters": report.dead_letters,
            "expiredSucceeded": report.expired_succeeded,
            "durationMs": report.duration_ms,
            "retentionSeconds": retention_seconds,
        },
    )
    logger.info("Cleanup removed %s", asdict(report))


def run_with(settings: Settings, shards: Shards, registry: JobRegistry) -> CleanupReport:
    """One cleanup of every declared job type and queue, under these settings: of each keyspace
    (the one, without a cluster), its status recorded in the root keys."""
    keys = shards.keys
    at_ms = now_ms()
    total = CleanupReport()
    started = time.monotonic()
    queues = registry.queues()
    keyspaces = shards.of_queues(queues)
    for shard in keyspaces:
        report = run(
            shard.client,
            shard.keys,
            job_names=registry.names(),
            queues=[queue for queue in queues if keys.for_queue(queue) == shard.keys],
            retention_seconds=settings.log_retention_seconds,
            batch_size=settings.cleanup_batch_size,
            at_ms=at_ms,
            state_retention=OutcomeLog.for_settings(keys, settings).state_retention,
            record_status=not keys.cluster,
        )
        for name, value in asdict(report).items():
            setattr(total, name, getattr(total, name) + value)
    if keys.cluster:
        total.duration_ms = int((time.monotonic() - started) * 1000)
        root = keys.root_keys()
        _record_status(shards.client(root), root, total, at_ms=at_ms, retention_seconds=settings.log_retention_seconds)
    return total


def _trim_index(
    client: redis.Redis,
    keys: Keys,
    index: str,
    cutoff_ms: int,
    batch_size: int,
    delete_records: bool,
    report: CleanupReport,
) -> None:
    cutoff_score = f"({cutoff_ms * 1000}"
    while True:
        ids: list[bytes] = client.zrangebyscore(index, "-inf", cutoff_score, start=0, num=batch_size)  # type: ignore[assignment]
        if not ids:
            return
        with client.pipeline(transaction=False) as pipeline:
            pipeline.zrem(index, *ids)
            if delete_records:
                for job_id in ids:
                    job = job_id.decode()
                    pipeline.delete(keys.job(job), keys.failed_job_compat(job))
            results = pipeline.execute()
        report.index_entries += int(results[0])
        if delete_records:
            report.records += sum(1 for removed in results[1:] if removed)


def _trim_dead_letters(
    client: redis.Redis, keys: Keys, queue: str, cutoff_ms: int, batch_size: int, report: CleanupReport
) -> None:
    while True:
        ids = client.zrangebyscore(keys.dead_letters(queue), "-inf", f"({cutoff_ms}", start=0, num=batch_size)
        if not ids:
            return
        with client.pipeline(transaction=True) as pipeline:
            pipeline.zrem(keys.dead_letters(queue), *ids)
            pipeline.hdel(keys.dead_letter_messages(queue), *ids)
            removed, _ = pipeline.execute()
        report.dead_letters += int(removed)


def main(argv: list[str] | None = None) -> int:
    """`python -m app.outcomes.cleanup`: run the cleanup once, now, and print what it removed as JSON."""
    argparse.ArgumentParser(
        prog="python -m app.outcomes.cleanup",
        description="Remove job records, index entries and dead letters older than LOG_RETENTION_SECONDS, "
        "once, now, and record the run in the cleanup status hash. Reads the same environment as a worker.",
    ).parse_args(argv)
    try:
        settings = Settings.from_env()
    except SettingsError as error:
        print(f"cleanup: {error}", file=sys.stderr)
        return 2
    shards = make_shards(settings, Keys.root(settings.namespace, cluster=settings.redis_cluster))
    try:
        check_cluster_mode(shards.client(shards.keys), settings)
        report = run_with(settings, shards, load_job_types(settings.job_modules))
    except SettingsError as error:
        print(f"cleanup: {error}", file=sys.stderr)
        return 2
    except redis.RedisError as error:
        print(f"cleanup: Redis is unavailable ({type(error).__name__}: {error}); nothing was removed", file=sys.stderr)
        return 1
    finally:
        shards.close()
    print(json.dumps(asdict(report)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
