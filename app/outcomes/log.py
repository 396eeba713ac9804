"""The outcome log's writes: the commands of each state transition of a job's record.

Each transition is built here once, as commands (tuples) or one script call, so that the same
write runs from a sync pipeline (workers), an async one (the API) or a coalesced batch, always
in one round trip. A worker's two writes per job, `running` and `succeeded`, are Lua scripts.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from app.connection.commands import Command, block_script
from app.connection.scripts import flatten, lua, lua_list
from app.job_ids import job_id_time_ms
from app.keys import DEAD_LETTER_SUFFIX, DEFAULT_PRIORITY, MESSAGES_SUFFIX, Keys
from app.outcomes.packed import PACK_VALUES, TOTAL_FIELD, bucket_key, bucket_of
from app.outcomes.record import (
    CANCELED,
    FAILED,
    HISTORY_ENTRY_FIELDS,
    HISTORY_ERROR_CHARS,
    HISTORY_TRACEBACK_CHARS,
    MAX_ERROR_CHARS,
    MAX_HISTORY,
    MAX_TRACEBACK_CHARS,
    NEW_JOB_FIELDS,
    QUEUED,
    QUEUED_FIELDS,
    RETRYING,
    RUNNING,
    SKIPPED,
    STATES,
    SUCCEEDED,
    index_score,
)
from app.settings import Settings

_STATE_NAMES = {"RUNNING": RUNNING, "SUCCEEDED": SUCCEEDED, "FAILED": FAILED, "SKIPPED": SKIPPED, "CANCELED": CANCELED}
RUNNING_SCRIPT = lua("running", **_STATE_NAMES)
#: How long a minute's outcome counts are kept (the console charts the last day).
MINUTE_COUNTS_TTL_SECONDS = 25 * 3600
#: A succeeded write over the cap removes at most this many buckets (each of up to a second's jobs).
MAX_BUCKETS_DROPPED = 4
SUCCEEDED_SCRIPT = lua(
    "pack_record",
    "drop_bucket",
    "succeeded",
    MINUTE_COUNTS_TTL=MINUTE_COUNTS_TTL_SECONDS,
    MAX_BUCKETS_DROPPED=MAX_BUCKETS_DROPPED,
    **PACK_VALUES,
    **_STATE_NAMES,
)
DELETE_PACKED_SCRIPT = lua("delete_packed", TOTAL_FIELD=TOTAL_FIELD)
DELIVERIES_SCRIPT = lua("deliveries")
PROGRESS_SCRIPT = lua("progress", **_STATE_NAMES)
CANCEL_SCRIPT = lua("cancel", QUEUED=QUEUED, RETRYING=RETRYING, **_STATE_NAMES)
UNLESS_SUPERSEDED = lua("run_commands", "append_history", "unless_superseded", MAX_HISTORY=MAX_HISTORY, **_STATE_NAMES)

#: A new job's record fields that every job of a group shares (one job type on one list: its
#: name, queue and priority, and the counts a new job starts at), and those of each job.
GROUP_FIELDS = ("jobName", "queue", "state", "attempts", "deliveries", "priority", "executions")
JOB_FIELDS = ("jobId", "maxRetries", "enqueuedAt", "data", "updatedAt", "runAt")
assert sorted((*GROUP_FIELDS, *JOB_FIELDS)) == sorted(NEW_JOB_FIELDS) and JOB_FIELDS[0] == "jobId"
#: Values of a group's header and of a job in the enqueue script's ARGV (see enqueue_jobs.lua).
ENQUEUE_GROUP = 14 + len(GROUP_FIELDS)
ENQUEUE_JOB = 4 + len(JOB_FIELDS)
_ENQUEUE_VALUES = {
    "GROUP_FIELDS": lua_list(GROUP_FIELDS), "JOB_FIELDS": lua_list(JOB_FIELDS), "GROUP": ENQUEUE_GROUP,
    "JOB": ENQUEUE_JOB,
}  # fmt: skip
ENQUEUE_SCRIPT = block_script(lua("wake_up", "enqueue_jobs", "enqueue", **_ENQUEUE_VALUES), header=ENQUEUE_GROUP)
ENQUEUE_ONCE_SCRIPT = lua("wake_up", "enqueue_jobs", "enqueue_once", **_ENQUEUE_VALUES)
SCHEDULE_RUN_SCRIPT = lua("wake_up", "enqueue_jobs", "schedule_run", **_ENQUEUE_VALUES)


#: A finished job over its state's cap removes at most this many of the oldest records at once.
TRIM_AT_MOST = 100
TRIM_STATE_SCRIPT = lua("trim_state")


@dataclass(frozen=True)
class OutcomeLog:
    """Builds the commands of each state transition."""

    keys: Keys
    #: How long a record is kept, unless its final state has a retention of its own.
    retention_seconds: int
    #: Final state -> how long its records are kept (succeeded and failed can differ).
    state_retention: Mapping[str, int] = field(default_factory=dict)
    #: Final state -> at most how many records are kept in it (the oldest go first).
    caps: Mapping[str, int] = field(default_factory=dict)

    @classmethod
    def for_settings(cls, keys: Keys, settings: Settings) -> OutcomeLog:
        return cls(
            keys=keys,
            retention_seconds=settings.log_retention_seconds,
            state_retention={
                SUCCEEDED: settings.succeeded_retention_seconds or settings.log_retention_seconds,
                FAILED: settings.failed_retention_seconds or settings.log_retention_seconds,
            },
            caps={
                state: cap
                for state, cap in ((SUCCEEDED, settings.max_succeeded_records), (FAILED, settings.max_failed_records))
                if cap
            },
        )

    def retention_of(self, state: str) -> int:
        """How long a record in this state is kept (s)."""
        return self.state_retention.get(state, self.retention_seconds)

    def trimmed(self, state: str, keys: Keys | None = None) -> list[Command]:
        """What keeps the records of a final state within its cap (nothing when it has none), in
        `keys`' keyspace (on a cluster the cap holds per queue)."""
        cap = self.caps.get(state)
        if not cap or state == SUCCEEDED:  # the succeeded script keeps its own cap (packed.py)
            return []
        keys = keys or self.keys
        return [
            (
                "EVAL", TRIM_STATE_SCRIPT, 0, keys.state_index(state), cap, TRIM_AT_MOST, keys.job_prefix(),
                keys.state_index_prefix(state), keys.all_index(), keys.state_index_prefix("all"),
                keys.failed_job_compat(""), keys.queue(""), DEAD_LETTER_SUFFIX, MESSAGES_SUFFIX,
            )
        ]  # fmt: skip

    # ----- transitions -----
    def queued_values(
        self,
        *,
        job_id: str,
        job_name: str,
        queue: str,
        max_retries: int,
        data_json: str,
        at_ms: int,
        run_at_ms: int | None = None,
        priority: str = DEFAULT_PRIORITY,
    ) -> list[Any]:
        """The values of QUEUED_FIELDS, in order; '' leaves a field out."""
        return [
            job_id, job_name, queue, QUEUED, max_retries, at_ms, data_json, 0, 0, at_ms,
            "" if run_at_ms is None else run_at_ms, "" if priority == DEFAULT_PRIORITY else priority,
        ]  # fmt: skip

    def requeued(
        self,
        *,
        job_id: str,
        job_name: str,
        queue: str,
        max_retries: int,
        data_json: str,
        at_ms: int,
        priority: str = DEFAULT_PRIORITY,
    ) -> list[Command]:
        """A finished job put back on its queue (its executions and redeliveries count on, and its
        history of attempts is kept)."""
        keys = self.keys.for_job(job_id)
        record = keys.job(job_id)
        values = self.queued_values(
            job_id=job_id, job_name=job_name, queue=queue, max_retries=max_retries, data_json=data_json, at_ms=at_ms,
            priority=priority,
        )  # fmt: skip
        fields = [
            item for name, value in zip(QUEUED_FIELDS, values, strict=True) if value != "" for item in (name, value)
        ]
        return [
            (
                "HDEL",
                record,
                "runAt",
                "nextRetryAt",
                "startedAt",
                "finishedAt",
                "durationMs",
                "priority",
                "canceledAt",
                "cancelRequestedAt",
                "progress",
                "progressMessage",
                "progressAt",
                "result",
                "worker",
            ),
            ("HINCRBY", record, "requeues", 1),
            *self._leave(keys, job_id, job_name, (FAILED, SUCCEEDED, SKIPPED, CANCELED, RETRYING)),
            ("HSET", record, *fields),
            *self._enter(keys, job_id, job_name, QUEUED, index_score(at_ms)),
            ("EXPIRE", record, self.retention_seconds),
        ]

    def new_job_group(self, job_name: str, queue: str, priority: str) -> tuple[Any, ...]:
        """What the new jobs of one type, queue and priority share in a group's header of the
        enqueue script, after its message and wake-up keys: the records' prefix, the queued and all
        indexes (global, per type), the enqueued count (hash, field), the retention, and the values
        of GROUP_FIELDS."""
        keys = self.keys.for_queue(queue)
        return (
            keys.job_prefix(), keys.state_index(QUEUED), keys.state_index(QUEUED, job_name), keys.all_index(),
            keys.all_index(job_name), keys.enqueued_counts(), keys.enqueued_count_field(job_name, queue),
            self.retention_seconds,
            job_name, queue, QUEUED, 0, 0, "" if priority == DEFAULT_PRIORITY else priority, 0,
        )  # fmt: skip

    @staticmethod
    def new_job_values(
        *, job_id: str, max_retries: int, data_json: str, at_ms: int, run_at_ms: int | None = None
    ) -> tuple[Any, ...]:
        """A new job's values of JOB_FIELDS, in order ('' leaves a field out)."""
        return (job_id, max_retries, at_ms, data_json, at_ms, "" if run_at_ms is None else run_at_ms)

    def running(self, *, job_id: str, job_name: str, queue: str, attempt: int, at_ms: int, worker: str = "") -> Command:
        """An attempt starts, run by `worker` (host:pid; '' if unknown); the call's reply counts how
        many times this attempt was delivered without finishing (a crash loop shows there)."""
        # A first attempt has never been retrying (a requeue takes a job out of that index).
        left = (QUEUED,) if attempt == 1 else (QUEUED, RETRYING)
        keys = self.keys.for_job(job_id)
        indexes = self._indexes(keys, job_name, (RUNNING, *left))
        args = (job_id, job_name, queue, attempt, at_ms, index_score(at_ms), self.retention_seconds, worker)
        bucket = bucket_key(keys, job_id)
        return ("EVAL", RUNNING_SCRIPT, 2 + len(indexes), keys.job(job_id), *indexes, bucket, *args)

    def cancel(self, *, job_id: str, job_name: str, at_ms: int) -> Command:
        """A job's cancel (cancel.lua): its reply says what happened."""
        keys = self.keys.for_job(job_id)
        indexes = self._indexes(keys, job_name, (CANCELED, QUEUED, RETRYING))
        return (
            "EVAL",
            CANCEL_SCRIPT,
            2 + len(indexes),
            keys.job(job_id),
            *indexes,
            bucket_key(keys, job_id),
            job_id,
            at_ms,
            index_score(at_ms),
        )

    def deliveries(self, job_ids: Sequence[str]) -> Command:
        """One call whose reply is each job's `deliveries`: how many times its current attempt
        started without finishing (0 for a job without a record). On a cluster, the jobs of one
        queue (a fetch's)."""
        return ("EVAL", DELIVERIES_SCRIPT, len(job_ids), *(self.keys.for_job(job_id).job(job_id) for job_id in job_ids))

    def retrying(
        self,
        *,
        job_id: str,
        job_name: str,
        attempt: int,
        error: str,
        traceback: str,
        next_retry_at_ms: int,
        duration_ms: int,
        at_ms: int,
        started_at_ms: int,
        worker: str,
    ) -> Command:
        """Attempt `attempt` (started at `started_at_ms` by `worker`) failed and its retry is
        scheduled; the attempt is appended to the record's `history` too (the last MAX_HISTORY).
        Written after the ack: by then the retry may have run, so it applies only if no later
        attempt has started and the job has not finished (one call, still one round trip)."""
        keys = self.keys.for_job(job_id)
        record = keys.job(job_id)
        entry = history_entry(
            attempt=attempt, started_at_ms=started_at_ms, finished_at_ms=at_ms, duration_ms=duration_ms,
            error=error, traceback=traceback, worker=worker,
        )  # fmt: skip
        commands: list[Command] = [
            ("HSET", record, "state", RETRYING, "error", error[:MAX_ERROR_CHARS],
             "traceback", traceback[-MAX_TRACEBACK_CHARS:], "nextRetryAt", next_retry_at_ms,
             "durationMs", duration_ms, "finishedAt", at_ms, "updatedAt", at_ms, "deliveries", 0,
             "worker", worker),
            *self._leave(keys, job_id, job_name, (RUNNING,)),
            *self._enter(keys, job_id, job_name, RETRYING, index_score(at_ms)),
            ("EXPIRE", record, self.retention_seconds),
            *self._counted(keys, "retried", at_ms),
        ]  # fmt: skip
        return (
            "EVAL",
            UNLESS_SUPERSEDED,
            2,
            record,
            bucket_key(keys, job_id),
            job_id,
            attempt,
            entry,
            *flatten(commands),
        )

    def succeeded(
        self,
        *,
        job_id: str,
        job_name: str,
        duration_ms: int,
        at_ms: int,
        queue: str = "",
        attempt: int | None = None,
        started: bool = False,
        uncounted: bool = False,
        delivery: int | None = None,
        result_json: str = "",
    ) -> Command:
        """The attempt succeeded: its record is packed into its bucket (packed.py). `attempt` is
        written too: its `running` may not have been (Redis blinked). `started`: its `running` is
        known to have been written, so only the running index holds it (nothing else puts a
        running job in another index: a requeue takes finished jobs only). `uncounted`: its
        `running` could not be written, so this write counts the execution. `result_json`: what
        the job returned ('' for none), in the same write. `queue`: the job's, for a record that
        is gone (expired, or lost with a Redis that restarted empty). `delivery`: which delivery
        of the attempt this run was, when known: its `running` was sent but not waited for, so
        the record tells whether it counted the execution (if not, this write does)."""
        keys = self.keys.for_job(job_id)
        left = (RUNNING,) if started else (RUNNING, QUEUED, RETRYING)
        indexes = [*self._indexes(keys, job_name, left), keys.all_index(), keys.all_index(job_name)]
        counts = keys.minute_counts(at_ms // 60_000)
        return (
            "EVAL", SUCCEEDED_SCRIPT, 5 + len(indexes), keys.job(job_id), bucket_key(keys, job_id),
            keys.succeeded_buckets(), keys.succeeded_sizes(), *indexes, counts,
            job_id, duration_ms, at_ms, self.retention_of(SUCCEEDED), bucket_of(job_id), self.caps.get(SUCCEEDED, 0),
            job_name, queue, int(started), int(uncounted), "" if attempt is None else attempt,
            keys.succeeded_bucket_prefix(), job_id_time_ms(job_id) or 0, "" if delivery is None else delivery,
            *((result_json,) if result_json else ()),
        )  # fmt: skip

    def progress(self, *, job_id: str, attempt: int, value: float, message: str, at_ms: int) -> Command:
        """A running attempt's progress (a percentage, and a message: '' for none). Written only
        while the record is running this attempt: a late write, landing after the attempt
        finished or a later one started, changes nothing."""
        return (
            "EVAL",
            PROGRESS_SCRIPT,
            1,
            self.keys.for_job(job_id).job(job_id),
            attempt,
            repr(float(value)),
            message,
            at_ms,
        )

    def skipped(self, *, job_id: str, job_name: str, reason: str, at_ms: int) -> list[Command]:
        keys = self.keys.for_job(job_id)
        record = keys.job(job_id)
        return [
            ("HSET", record, "state", SKIPPED, "error", reason[:MAX_ERROR_CHARS], "finishedAt", at_ms,
             "updatedAt", at_ms, "deliveries", 0),
            *self._leave(keys, job_id, job_name, (RUNNING, QUEUED, RETRYING)),
            *self._enter(keys, job_id, job_name, SKIPPED, index_score(at_ms)),
            ("EXPIRE", record, self.retention_seconds),
        ]  # fmt: skip

    def canceled(self, *, job_id: str, job_name: str, reason: str, duration_ms: int, at_ms: int) -> list[Command]:
        """A running job that stopped on its cancel (or was interrupted by a forced one)."""
        keys = self.keys.for_job(job_id)
        record = keys.job(job_id)
        return [
            ("HSET", record, "state", CANCELED, "error", reason[:MAX_ERROR_CHARS], "canceledAt", at_ms,
             "finishedAt", at_ms, "durationMs", duration_ms, "updatedAt", at_ms, "deliveries", 0),
            *self._leave(keys, job_id, job_name, (RUNNING, QUEUED, RETRYING)),
            *self._enter(keys, job_id, job_name, CANCELED, index_score(at_ms)),
            ("EXPIRE", record, self.retention_seconds),
        ]  # fmt: skip

    def failed(
        self,
        *,
        job_id: str,
        job_name: str,
        queue: str,
        error: str,
        traceback: str,
        attempts: int,
        data_json: str,
        dead_letter_id: str,
        duration_ms: int | None,
        at_ms: int,
    ) -> list[Command]:
        """Dead-lettered: retries spent, a permanent error, or a crash loop."""
        keys = self.keys.for_job(job_id)
        record = keys.job(job_id)
        error = error[:MAX_ERROR_CHARS]
        fields: list[Any] = [
            "jobId", job_id, "jobName", job_name, "queue", queue, "state", FAILED, "error", error,
            "traceback", traceback[-MAX_TRACEBACK_CHARS:], "attempts", attempts, "finishedAt", at_ms,
            "updatedAt", at_ms, "deadLetterId", dead_letter_id, "deliveries", 0,
        ]  # fmt: skip
        if duration_ms is not None:
            fields += ["durationMs", duration_ms]
        compat = keys.failed_job_compat(job_id)
        failed_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at_ms / 1000))
        return [
            ("HSET", record, *fields),
            ("HDEL", record, "nextRetryAt"),
            *self._leave(keys, job_id, job_name, (RUNNING, QUEUED, RETRYING)),
            *self._enter(keys, job_id, job_name, FAILED, index_score(at_ms)),
            ("EXPIRE", record, self.retention_of(FAILED)),
            ("HSET", compat, "jobId", job_id, "jobName", job_name, "data", data_json, "error", error,
             "attempts", attempts, "failedAt", at_ms, "time", failed_at),
            ("EXPIRE", compat, self.retention_of(FAILED)),
            *self.trimmed(FAILED, keys),
            *self._counted(keys, "failed", at_ms),
        ]  # fmt: skip

    def counted_execution(self, job_id: str) -> Command:
        """An execution whose `running` could not be written (Redis was down)."""
        return ("HINCRBY", self.keys.for_job(job_id).job(job_id), "executions", 1)

    def delete(self, job_id: str, job_name: str) -> list[Command]:
        keys = self.keys.for_job(job_id)
        commands: list[Command] = [
            ("DEL", keys.job(job_id), keys.failed_job_compat(job_id)),
            self.packed_deleted(job_id),
        ]
        for state in (*STATES, "all"):
            commands.append(("ZREM", keys.state_index(state), job_id))
            commands.append(("ZREM", keys.state_index(state, job_name), job_id))
        return commands

    def packed_deleted(self, job_id: str) -> Command:
        """A succeeded job's packed record removed (and no longer counted); nothing if it has none."""
        keys = self.keys.for_job(job_id)
        return ("EVAL", DELETE_PACKED_SCRIPT, 2, bucket_key(keys, job_id), keys.succeeded_sizes(), job_id,
                bucket_of(job_id))  # fmt: skip

    @staticmethod
    def _counted(keys: Keys, outcome: str, at_ms: int) -> list[Command]:
        """One more `outcome` in the counts of the minute of `at_ms` (the console's charts)."""
        counts = keys.minute_counts(at_ms // 60_000)
        return [("HINCRBY", counts, outcome, 1), ("EXPIRE", counts, MINUTE_COUNTS_TTL_SECONDS)]

    @staticmethod
    def _indexes(keys: Keys, job_name: str, states: Iterable[str]) -> list[str]:
        """The global (on a cluster: the queue's) and per-job-type index of each state, in that order."""
        return [key for state in states for key in (keys.state_index(state), keys.state_index(state, job_name))]

    def _enter(self, keys: Keys, job_id: str, job_name: str, state: str, score: int) -> list[Command]:
        return [("ZADD", key, score, job_id) for key in self._indexes(keys, job_name, (state,))]

    def _leave(self, keys: Keys, job_id: str, job_name: str, states: Iterable[str]) -> list[Command]:
        return [("ZREM", key, job_id) for key in self._indexes(keys, job_name, states)]


def history_entry(
    *,
    attempt: int,
    started_at_ms: int,
    finished_at_ms: int,
    duration_ms: int,
    error: str,
    traceback: str,
    worker: str,
) -> str:
    """An attempt as an entry of a record's `history` (JSON; HISTORY_ENTRY_FIELDS): its error and
    the end of its traceback cut to HISTORY_ERROR_CHARS and HISTORY_TRACEBACK_CHARS."""
    values = (
        attempt, started_at_ms, finished_at_ms, duration_ms, error[:HISTORY_ERROR_CHARS],
        traceback[-HISTORY_TRACEBACK_CHARS:], worker,
    )  # fmt: skip
    entry = dict(zip(HISTORY_ENTRY_FIELDS, values, strict=True))
    return json.dumps(entry, separators=(",", ":"), ensure_ascii=False)
