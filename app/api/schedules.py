"""GET /schedules: the schedules of SCHEDULES_FILE, each with its next run and its last one."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from app.api.auth import authorize
from app.api.context import api_of
from app.api.errors import deadline
from app.schedules import Schedule


async def list_schedules(request: Request) -> Response:
    authorize(request, write=False)
    api = api_of(request)
    async with deadline():
        last_runs = await api.client.hgetall(api.keys.schedules())
    now = datetime.now(UTC)
    return JSONResponse({"schedules": [described(schedule, now, last_runs) for schedule in api.schedules]})


def described(schedule: Schedule, now: datetime, last_runs: Mapping[Any, Any]) -> dict[str, Any]:
    """A schedule as GET /schedules shows it; `last_runs`: the hash of last runs, as read."""
    next_run = schedule.next_run(now)
    last_run = None
    raw = last_runs.get(schedule.name.encode())
    if raw:
        found = json.loads(raw)
        last_run = {
            "runAt": found["runAt"],
            "runAtIso": _iso(found["runAt"], schedule),
            "jobId": found["jobId"],
            "enqueuedAt": found["enqueuedAt"],
        }
    return {
        "name": schedule.name,
        "cron": schedule.cron.expression,
        "timezone": schedule.timezone,
        "jobName": schedule.job_name,
        "data": schedule.data,
        "nextRunAt": int(next_run.timestamp() * 1000),
        "nextRunAtIso": next_run.isoformat(),
        "lastRun": last_run,
    }


def _iso(at_ms: int, schedule: Schedule) -> str:
    """A time in ms since the epoch as ISO 8601, in the schedule's time zone."""
    return datetime.fromtimestamp(at_ms / 1000, schedule.zone).isoformat()


_MS = {"type": "integer", "description": "ms since the epoch"}
_ISO = {"type": "string", "format": "date-time", "description": "the same time in ISO 8601, in the schedule's zone"}
#: What GET /schedules answers (app/api/operations.py documents it with this).
SCHEDULE_LIST_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["schedules"],
    "properties": {
        "schedules": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name", "cron", "timezone", "jobName", "data", "nextRunAt", "nextRunAtIso", "lastRun"],
                "properties": {
                    "name": {"type": "string"},
                    "cron": {"type": "string", "description": "5 fields (6 with seconds first) or a name (@daily)"},
                    "timezone": {"type": "string", "description": "the IANA zone its cron is read in"},
                    "jobName": {"type": "string"},
                    "data": {"type": "object", "description": "the data of the job each run enqueues"},
                    "nextRunAt": _MS,
                    "nextRunAtIso": _ISO,
                    "lastRun": {
                        "description": "the last run a scheduler enqueued, null if none yet (or all expired)",
                        "oneOf": [
                            {"type": "null"},
                            {
                                "type": "object",
                                "required": ["runAt", "runAtIso", "jobId", "enqueuedAt"],
                                "properties": {
                                    "runAt": _MS,
                                    "runAtIso": _ISO,
                                    "jobId": {
                                        "type": "string",
                                        "description": "the job it enqueued: GET /jobs/{jobId}",
                                    },
                                    "enqueuedAt": _MS,
                                },
                            },
                        ],
                    },
                },
            },
        }
    },
}
