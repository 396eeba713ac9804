"""The outcome log: one record per job plus time-ordered indexes per state.

Writers build lists of Redis commands (tuples) so that the same transition runs in a sync
pipeline (workers, producer) or an async one (API), always in one round trip.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from app.keys import Keys

Command = tuple[Any, ...]

QUEUED = "queued"
RUNNING = "running"
RETRYING = "retrying"
SUCCEEDED = "succeeded"
FAILED = "failed"
SKIPPED = "skipped"
STATES = (QUEUED, RUNNING, RETRYING, SUCCEEDED, FAILED, SKIPPED)
FINAL_STATES = (SUCCEEDED, FAILED, SKIPPED)

MAX_ERROR_CHARS = 2_000
MAX_TRACEBACK_CHARS = 4_000


def now_ms() -> int:
    return int(time.time() * 1000)


def index_score(timestamp_ms: int, sequence: int = 0) -> int:
    """Index scores are microseconds, so that jobs of one batch keep their order and rarely tie."""
    return timestamp_ms * 1000 + sequence % 1000


@dataclass(frozen=True)
class OutcomeLog:
    """Builds the commands of each state transition, and reads records back."""

    keys: Keys
    retention_seconds: int
    #: Write `running` and `succeeded`, a worker's two writes per job, as one Lua call each (the
    #: same effects as their command lists, for a fraction of the work in the worker and in Redis).
    scripts: bool = False

    # ----- transitions -----
    def queued(
        self,
        *,
        job_id: str,
        job_name: str,
        queue: str,
        max_retries: int,
        data_json: str,
        at_ms: int,
        run_at_ms: int | None = None,
        sequence: int = 0,
        new: bool = True,
    ) -> list[Command]:
        """A job accepted (new) or put back on its queue by a requeue (new=False)."""
        record = self.keys.job(job_id)
        # Field/value pairs, flat: this runs once per enqueued job, bulk enqueues included.
        fields: list[Any] = [
            "jobId", job_id, "jobName", job_name, "queue", queue, "state", QUEUED, "maxRetries", max_retries,
            "enqueuedAt", at_ms, "data", data_json, "attempts", 0, "deliveries", 0, "updatedAt", at_ms,
        ]  # fmt: skip
        if run_at_ms is not None:
            fields += ["runAt", run_at_ms]
        score = index_score(at_ms, sequence)
        commands: list[Command] = []
        if new:
            fields += ["executions", 0]
        else:
            commands.append(("HDEL", record, "runAt", "nextRetryAt", "startedAt", "finishedAt", "durationMs"))
            commands.append(("HINCRBY", record, "requeues", 1))
            commands += self._leave(job_id, job_name, (FAILED, SUCCEEDED, SKIPPED, RETRYING))
        commands.append(("HSET", record, *fields))
        commands += self._enter(job_id, job_name, QUEUED, score)
        if new:
            commands += [
                ("ZADD", self.keys.all_index(), score, job_id),
                ("ZADD", self.keys.all_index(job_name), score, job_id),
                ("HINCRBY", self.keys.enqueued_counts(), f"{job_name}|{queue}", 1),
            ]
        commands.append(("EXPIRE", record, self.retention_seconds))
        return commands

    def running(self, *, job_id: str, job_name: str, queue: str, attempt: int, at_ms: int) -> list[Command]:
        """An attempt starts. The HINCRBY of `deliveries` is the last command: its result counts
        how many times this attempt was delivered without finishing (a crash loop shows here)."""
        record = self.keys.job(job_id)
        # A first attempt has never been retrying (a requeue takes a job out of that index).
        left = (QUEUED,) if attempt == 1 else (QUEUED, RETRYING)
        if self.scripts:
            indexes = self._indexes(job_name, (RUNNING, *left))
            score = index_score(at_ms)
            args = (job_id, job_name, queue, attempt, at_ms, score, self.retention_seconds)
            return [("EVAL", RUNNING_SCRIPT, 1 + len(indexes), record, *indexes, *args)]
        return [
            ("HSET", record, "jobId", job_id, "jobName", job_name, "queue", queue, "state", RUNNING,
             "attempts", attempt, "startedAt", at_ms, "updatedAt", at_ms),
            ("HDEL", record, "nextRetryAt", "runAt"),
            *self._leave(job_id, job_name, left),
            *self._enter(job_id, job_name, RUNNING, index_score(at_ms)),
            ("EXPIRE", record, self.retention_seconds),
            ("HINCRBY", record, "executions", 1),
            ("HINCRBY", record, "deliveries", 1),
        ]  # fmt: skip

    def deliveries(self, job_ids: Sequence[str]) -> Command:
        """One call whose reply is each job's `deliveries`: how many times its current attempt
        started without finishing (0 for a job without a record)."""
        return ("EVAL", DELIVERIES_SCRIPT, len(job_ids), *(self.keys.job(job_id) for job_id in job_ids))

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
    ) -> list[Command]:
        """Attempt `attempt` failed and its retry is scheduled. Written after the ack, which waits
        for Redis: by then the retry may have run, so it applies only if no later attempt has
        started and the job has not finished (one EVAL, still one round trip)."""
        record = self.keys.job(job_id)
        commands: list[Command] = [
            ("HSET", record, "state", RETRYING, "error", error[:MAX_ERROR_CHARS],
             "traceback", traceback[-MAX_TRACEBACK_CHARS:], "nextRetryAt", next_retry_at_ms,
             "durationMs", duration_ms, "finishedAt", at_ms, "updatedAt", at_ms, "deliveries", 0),
            *self._leave(job_id, job_name, (RUNNING,)),
            *self._enter(job_id, job_name, RETRYING, index_score(at_ms)),
            ("EXPIRE", record, self.retention_seconds),
        ]  # fmt: skip
        return [("EVAL", UNLESS_SUPERSEDED, 1, record, attempt, *FINAL_STATES, *_flatten_commands(commands))]

    def succeeded(
        self,
        *,
        job_id: str,
        job_name: str,
        duration_ms: int,
        at_ms: int,
        attempt: int | None = None,
        started: bool = False,
    ) -> list[Command]:
        """The attempt succeeded. `attempt` is written too: its `running` may not have been (Redis blinked).
        `started`: its `running` is known to have been written, so only the running index holds it
        (nothing else puts a running job in another index: a requeue takes failed jobs only)."""
        record = self.keys.job(job_id)
        left = (RUNNING,) if started else (RUNNING, QUEUED, RETRYING)
        if self.scripts:
            indexes = self._indexes(job_name, (SUCCEEDED, *left))
            args = (job_id, duration_ms, at_ms, index_score(at_ms), self.retention_seconds)
            counted_arg = () if attempt is None else (attempt,)
            return [("EVAL", SUCCEEDED_SCRIPT, 1 + len(indexes), record, *indexes, *args, *counted_arg)]
        counted = ("attempts", attempt) if attempt is not None else ()
        # `running` cleared nextRetryAt, if it was written.
        clear: list[Command] = [] if started else [("HDEL", record, "nextRetryAt")]
        return [
            ("HSET", record, "state", SUCCEEDED, "durationMs", duration_ms, "finishedAt", at_ms,
             "updatedAt", at_ms, "deliveries", 0, *counted),
            *clear,
            *self._leave(job_id, job_name, left),
            *self._enter(job_id, job_name, SUCCEEDED, index_score(at_ms)),
            ("EXPIRE", record, self.retention_seconds),
        ]  # fmt: skip

    def skipped(self, *, job_id: str, job_name: str, reason: str, at_ms: int) -> list[Command]:
        record = self.keys.job(job_id)
        return [
            ("HSET", record, "state", SKIPPED, "error", reason[:MAX_ERROR_CHARS], "finishedAt", at_ms,
             "updatedAt", at_ms, "deliveries", 0),
            *self._leave(job_id, job_name, (RUNNING, QUEUED, RETRYING)),
            *self._enter(job_id, job_name, SKIPPED, index_score(at_ms)),
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
        record = self.keys.job(job_id)
        fields: dict[str, Any] = {
            "jobId": job_id,
            "jobName": job_name,
            "queue": queue,
            "state": FAILED,
            "error": error[:MAX_ERROR_CHARS],
            "traceback": traceback[-MAX_TRACEBACK_CHARS:],
            "attempts": attempts,
            "finishedAt": at_ms,
            "updatedAt": at_ms,
            "deadLetterId": dead_letter_id,
            "deliveries": 0,
        }
        if duration_ms is not None:
            fields["durationMs"] = duration_ms
        compat = self.keys.failed_job_compat(job_id)
        return [
            ("HSET", record, *_flatten(fields)),
            ("HDEL", record, "nextRetryAt"),
            *self._leave(job_id, job_name, (RUNNING, QUEUED, RETRYING)),
            *self._enter(job_id, job_name, FAILED, index_score(at_ms)),
            ("EXPIRE", record, self.retention_seconds),
            (
                "HSET",
                compat,
                *_flatten(
                    {
                        "jobId": job_id,
                        "jobName": job_name,
                        "data": data_json,
                        "error": error[:MAX_ERROR_CHARS],
                        "attempts": attempts,
                        "failedAt": at_ms,
                        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at_ms / 1000)),
                    }
                ),
            ),
            ("EXPIRE", compat, self.retention_seconds),
        ]

    def delete(self, job_id: str, job_name: str) -> list[Command]:
        commands: list[Command] = [("DEL", self.keys.job(job_id), self.keys.failed_job_compat(job_id))]
        for state in (*STATES, "all"):
            commands.append(("ZREM", self.keys.state_index(state), job_id))
            commands.append(("ZREM", self.keys.state_index(state, job_name), job_id))
        return commands

    def _indexes(self, job_name: str, states: Iterable[str]) -> list[str]:
        """The global and per-job-type index of each state, in that order."""
        return [
            key for state in states for key in (self.keys.state_index(state), self.keys.state_index(state, job_name))
        ]

    def _enter(self, job_id: str, job_name: str, state: str, score: int) -> list[Command]:
        return [
            ("ZADD", self.keys.state_index(state), score, job_id),
            ("ZADD", self.keys.state_index(state, job_name), score, job_id),
        ]

    def _leave(self, job_id: str, job_name: str, states: Iterable[str]) -> list[Command]:
        commands: list[Command] = []
        for state in states:
            commands.append(("ZREM", self.keys.state_index(state), job_id))
            commands.append(("ZREM", self.keys.state_index(state, job_name), job_id))
        return commands


# `running` as one call (same effects, same order as its command list; tests/test_outcome_scripts.py
# checks that they agree). KEYS: the record, then the global and per-job-type index of: running,
# then of each state left (queued, and retrying after a first attempt). ARGV: job id, job name,
# queue, attempt, at (ms), index score, retention (s). Returns `deliveries` after its increment.
# A start that arrives after its attempt has finished (a worker does not wait for a start's reply:
# if Redis refused it, it is sent again, possibly after the finish) only counts the execution.
RUNNING_SCRIPT = f"""
local record, id, at = KEYS[1], ARGV[1], ARGV[5]
local found = redis.call('HMGET', record, 'state', 'attempts')
local state, attempts = found[1], tonumber(found[2] or '0')
if (state == '{SUCCEEDED}' or state == '{FAILED}' or state == '{SKIPPED}') and attempts >= tonumber(ARGV[4]) then
  redis.call('HINCRBY', record, 'executions', 1)
  return 0
end
redis.call('HSET', record, 'jobId', id, 'jobName', ARGV[2], 'queue', ARGV[3], 'state', '{RUNNING}',
  'attempts', ARGV[4], 'startedAt', at, 'updatedAt', at)
redis.call('HDEL', record, 'nextRetryAt', 'runAt')
for i = 4, #KEYS do redis.call('ZREM', KEYS[i], id) end
redis.call('ZADD', KEYS[2], ARGV[6], id)
redis.call('ZADD', KEYS[3], ARGV[6], id)
redis.call('EXPIRE', record, ARGV[7])
redis.call('HINCRBY', record, 'executions', 1)
return redis.call('HINCRBY', record, 'deliveries', 1)
"""

# `succeeded` as one call. KEYS: the record, then the global and per-job-type index of:
# succeeded, then of each state left (running, and unless it is known to have started: queued,
# retrying). ARGV: job id, duration (ms), at (ms), index score, retention (s), and the attempt if
# known.
SUCCEEDED_SCRIPT = f"""
local record, id, at = KEYS[1], ARGV[1], ARGV[3]
local fields = {{'state', '{SUCCEEDED}', 'durationMs', ARGV[2], 'finishedAt', at, 'updatedAt', at, 'deliveries', 0}}
if ARGV[6] then
  fields[#fields + 1] = 'attempts'
  fields[#fields + 1] = ARGV[6]
end
redis.call('HSET', record, unpack(fields))
-- More than 5 keys: the queued and retrying indexes too, so not known to have started (whose
-- `running` cleared nextRetryAt).
if #KEYS > 5 then redis.call('HDEL', record, 'nextRetryAt') end
for i = 4, #KEYS do redis.call('ZREM', KEYS[i], id) end
redis.call('ZADD', KEYS[2], ARGV[4], id)
redis.call('ZADD', KEYS[3], ARGV[4], id)
return redis.call('EXPIRE', record, ARGV[5])
"""

# KEYS: job records. Returns the `deliveries` of each.
DELIVERIES_SCRIPT = """
local counts = {}
for i = 1, #KEYS do counts[i] = tonumber(redis.call('HGET', KEYS[i], 'deliveries') or '0') end
return counts
"""

# Runs the commands unless the record has moved past attempt ARGV[1] or reached a final state.
# KEYS[1]: the record; ARGV: attempt, the 3 final states, then each command as <argc> <arg>...
UNLESS_SUPERSEDED = """
local found = redis.call('HMGET', KEYS[1], 'state', 'attempts')
local state, attempts = found[1], tonumber(found[2] or '0')
if attempts > tonumber(ARGV[1]) or state == ARGV[2] or state == ARGV[3] or state == ARGV[4] then
  return 0
end
local i = 5
while i <= #ARGV do
  local argc = tonumber(ARGV[i])
  redis.call(unpack(ARGV, i + 1, i + argc))
  i = i + argc + 1
end
return 1
"""


def _flatten_commands(commands: Sequence[Command]) -> list[Any]:
    args: list[Any] = []
    for command in commands:
        args += [len(command), *command]
    return args


def _flatten(fields: dict[str, Any]) -> list[Any]:
    flat: list[Any] = []
    for name, value in fields.items():
        flat += [name, value]
    return flat


INT_FIELDS = (
    "attempts",
    "maxRetries",
    "enqueuedAt",
    "startedAt",
    "finishedAt",
    "durationMs",
    "nextRetryAt",
    "runAt",
    "executions",
    "deliveries",
    "requeues",
    "updatedAt",
)


def decode_record(raw: dict[Any, Any]) -> dict[str, Any]:
    """A record as the API shows it: numbers as numbers, data as JSON, missing fields as null."""
    record = {_text(k): _text(v) for k, v in raw.items()}
    out: dict[str, Any] = {
        "jobId": record.get("jobId"),
        "jobName": record.get("jobName"),
        "queue": record.get("queue"),
        "state": record.get("state"),
        "error": record.get("error"),
    }
    for name in INT_FIELDS:
        value = record.get(name)
        out[name] = int(value) if value not in (None, "") else None
    if out["executions"] is None:
        out["executions"] = 0
    if out["attempts"] is None:
        out["attempts"] = 0
    try:
        out["data"] = json.loads(record["data"]) if record.get("data") else None
    except ValueError:
        out["data"] = None
    out["traceback"] = record.get("traceback")
    out["deadLetterId"] = record.get("deadLetterId")
    return out


def _text(value: Any) -> Any:
    return value.decode() if isinstance(value, bytes) else value


def run_commands(pipeline: Any, commands: Sequence[Command]) -> None:
    """Queue commands on a (sync or async) redis-py pipeline."""
    for command in commands:
        pipeline.execute_command(*command)
