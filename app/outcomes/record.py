"""A job's record in the outcome log: its states and its fields, defined once.

The writer (`log.py` and the Lua scripts it loads), the reader (`store.py`) and the OpenAPI
document all take the field list from here.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

from app.keys import DEFAULT_PRIORITY

QUEUED = "queued"
RUNNING = "running"
RETRYING = "retrying"
SUCCEEDED = "succeeded"
FAILED = "failed"
SKIPPED = "skipped"
CANCELED = "canceled"
STATES = (QUEUED, RUNNING, RETRYING, SUCCEEDED, FAILED, SKIPPED, CANCELED)
FINAL_STATES = (SUCCEEDED, FAILED, SKIPPED, CANCELED)

MAX_ERROR_CHARS = 2_000
MAX_TRACEBACK_CHARS = 4_000
#: A record's `history` keeps the last this many finished attempts that did not end the job (its
#: retried ones), each with its error and the end of its traceback cut shorter than the record's
#: own: at most about 15 kB a record.
MAX_HISTORY = 10
HISTORY_ERROR_CHARS = 500
HISTORY_TRACEBACK_CHARS = 1_000
#: The fields of an entry of `history`, in this order.
HISTORY_ENTRY_FIELDS = ("attempt", "startedAt", "finishedAt", "durationMs", "error", "traceback", "worker")

#: Every field a record can hold: name -> its JSON type as the API shows it. Integers are times
#: in ms since the epoch, durations in ms, or counts.
FIELDS: dict[str, str] = {
    "jobId": "string",
    "jobName": "string",
    "queue": "string",
    "state": "string",
    "attempts": "integer",
    "maxRetries": "integer",
    "enqueuedAt": "integer",
    "startedAt": "integer",
    "finishedAt": "integer",
    "durationMs": "integer",
    "error": "string",
    "traceback": "string",
    "nextRetryAt": "integer",
    "runAt": "integer",
    "executions": "integer",
    "deliveries": "integer",
    "redeliveries": "integer",
    "redeliveredAt": "integer",
    "requeues": "integer",
    "updatedAt": "integer",
    "deadLetterId": "string",
    "priority": "string",
    "cancelRequestedAt": "integer",
    "canceledAt": "integer",
    "data": "any",
    "progress": "number",
    "progressMessage": "string",
    "progressAt": "integer",
    "result": "any",
    "worker": "string",
    "history": "any",
}
#: Read as this when the record has never had them.
DEFAULT_WHEN_ABSENT = {"priority": DEFAULT_PRIORITY}
#: Counts that read as 0 when the record has never had them.
ZERO_WHEN_ABSENT = ("attempts", "executions", "redeliveries")

#: What a job accepted or put back on its queue writes, in this order (the enqueue script takes
#: their values in the same order; an empty value leaves the field out). `jobId` comes first.
QUEUED_FIELDS = (
    "jobId", "jobName", "queue", "state", "maxRetries", "enqueuedAt", "data", "attempts", "deliveries",
    "updatedAt", "runAt", "priority",
)  # fmt: skip
#: A new job also starts its count of executions.
NEW_JOB_FIELDS = (*QUEUED_FIELDS, "executions")

#: What a running attempt's `progress()` writes (a start clears them: they are the attempt's).
PROGRESS_FIELDS = ("progress", "progressMessage", "progressAt")

#: What the job lists show of a record (and a requeue answers).
PUBLIC_FIELDS = (
    "jobId", "jobName", "queue", "state", "attempts", "maxRetries", "enqueuedAt", "startedAt", "finishedAt",
    "durationMs", "error", "nextRetryAt", "runAt", "executions", "redeliveries", "requeues", "priority",
    "cancelRequestedAt", "canceledAt",
)  # fmt: skip
#: What `GET /jobs/{id}` shows: also the last error's traceback (cut when written, MAX_TRACEBACK_CHARS),
#: the running attempt's last reported progress (a percentage), the job's result, the worker
#: process of the current attempt and the earlier attempts (`history`).
DETAIL_FIELDS = (*PUBLIC_FIELDS, "traceback", *PROGRESS_FIELDS, "result", "worker", "history")
#: And with `?include=data`: the job's data, which can be large.
DETAIL_WITH_DATA_FIELDS = (*DETAIL_FIELDS, "data")

assert (
    set(NEW_JOB_FIELDS) <= set(FIELDS) and set(DETAIL_WITH_DATA_FIELDS) <= set(FIELDS) and QUEUED_FIELDS[0] == "jobId"
)


def now_ms() -> int:
    return int(time.time() * 1000)


def index_score(timestamp_ms: int, sequence: int = 0) -> int:
    """Index scores are microseconds, so that jobs of one batch keep their order and rarely tie."""
    return timestamp_ms * 1000 + sequence % 1000


def decode_record(raw: dict[Any, Any], *, parsed_json: bool = False) -> dict[str, Any]:
    """A record as read from Redis, as the API shows it: numbers as numbers, data as JSON,
    missing fields as null. `parsed_json`: its JSON fields are values already (a packed record)."""
    record = {_text(k): _text(v) for k, v in raw.items()}
    out: dict[str, Any] = {}
    for name, kind in FIELDS.items():
        value = record.get(name)
        if kind == "integer":
            out[name] = int(value) if value not in (None, "") else (0 if name in ZERO_WHEN_ABSENT else None)
        elif kind == "number":
            out[name] = float(value) if value not in (None, "") else None
        elif kind == "any":
            out[name] = value if parsed_json else _json(value)
        else:
            out[name] = value if value is not None else DEFAULT_WHEN_ABSENT.get(name)
    return out


def public(record: dict[str, Any], fields: Sequence[str] = PUBLIC_FIELDS) -> dict[str, Any]:
    """A decoded record as the API shows it: these of its fields (those of the job lists by default)."""
    return {name: record.get(name) for name in fields}


def _json(value: str | None) -> Any:
    try:
        return json.loads(value) if value else None
    except ValueError:
        return None


def _text(value: Any) -> Any:
    return value.decode() if isinstance(value, bytes) else value
