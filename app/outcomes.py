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
        fields: dict[str, Any] = {
            "jobId": job_id,
            "jobName": job_name,
            "queue": queue,
            "state": QUEUED,
            "maxRetries": max_retries,
            "enqueuedAt": at_ms,
            "data": data_json,
            "attempts": 0,
            "deliveries": 0,
            "updatedAt": at_ms,
        }
        if run_at_ms is not None:
            fields["runAt"] = run_at_ms
        score = index_score(at_ms, sequence)
        commands: list[Command] = []
        if new:
            commands.append(("HSET", record, "executions", 0))
        else:
            commands.append(("HDEL", record, "runAt", "nextRetryAt", "startedAt", "finishedAt", "durationMs"))
            commands.append(("HINCRBY", record, "requeues", 1))
            commands += self._leave(job_id, job_name, (FAILED, SUCCEEDED, SKIPPED, RETRYING))
        commands.append(("HSET", record, *_flatten(fields)))
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
        return [
            ("HSET", record, "jobId", job_id, "jobName", job_name, "queue", queue, "state", RUNNING,
             "attempts", attempt, "startedAt", at_ms, "updatedAt", at_ms),
            ("HDEL", record, "nextRetryAt", "runAt"),
            *self._leave(job_id, job_name, (QUEUED, RETRYING)),
            *self._enter(job_id, job_name, RUNNING, index_score(at_ms)),
            ("EXPIRE", record, self.retention_seconds),
            ("HINCRBY", record, "executions", 1),
            ("HINCRBY", record, "deliveries", 1),
        ]  # fmt: skip

    def retrying(
        self,
        *,
        job_id: str,
        job_name: str,
        error: str,
        traceback: str,
        next_retry_at_ms: int,
        duration_ms: int,
        at_ms: int,
    ) -> list[Command]:
        record = self.keys.job(job_id)
        return [
            ("HSET", record, "state", RETRYING, "error", error[:MAX_ERROR_CHARS],
             "traceback", traceback[-MAX_TRACEBACK_CHARS:], "nextRetryAt", next_retry_at_ms,
             "durationMs", duration_ms, "finishedAt", at_ms, "updatedAt", at_ms, "deliveries", 0),
            *self._leave(job_id, job_name, (RUNNING,)),
            *self._enter(job_id, job_name, RETRYING, index_score(at_ms)),
            ("EXPIRE", record, self.retention_seconds),
        ]  # fmt: skip

    def succeeded(self, *, job_id: str, job_name: str, duration_ms: int, at_ms: int) -> list[Command]:
        record = self.keys.job(job_id)
        return [
            ("HSET", record, "state", SUCCEEDED, "durationMs", duration_ms, "finishedAt", at_ms,
             "updatedAt", at_ms, "deliveries", 0),
            ("HDEL", record, "nextRetryAt"),
            *self._leave(job_id, job_name, (RUNNING, QUEUED, RETRYING)),
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
