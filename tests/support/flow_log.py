"""What the job types of tests/support/flow_jobs.py record in the stack's Redis, and how tests read
it. Kept apart from the job types: importing those would declare them in the test process's own
registry (the processes under test load them with JOB_MODULES)."""

from __future__ import annotations

from typing import Any

STARTS = "flowtest:starts"  # list of "<job name>|<job id>|<start ms>"
RUNNING = "flowtest:running"
MOST_AT_ONCE = "flowtest:most-at-once"


def starts(client: Any, name: str | None = None) -> list[tuple[str, str, int]]:
    """(job name, job id, start ms) of each start recorded, in order."""
    out = []
    for raw in client.lrange(STARTS, 0, -1):
        job_name, job_id, at = raw.decode().split("|")
        if name is None or job_name == name:
            out.append((job_name, job_id, int(at)))
    return out


def release_key(job_id: str) -> str:
    """The list a `progressJob` waits on after its first progress: push to it to let it finish."""
    return f"progress-test:release:{job_id}"
