"""What /openapi.json says of each operation: one `Operation` per endpoint of app/http.py's
ROUTES (app/api/openapi.py builds the document from them and the job types' schemas)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from app.api import cancel, enqueue, jobs, long_poll, queues, schedules, system
from app.api.openapi import (
    IDEMPOTENCY_KEY,
    INCLUDE,
    JOB_ID,
    MAX_PAGE,
    QUEUE_NAME,
    Answer,
    Operation,
    job_links,
    query,
    ref,
    refused,
    status_body,
)

_MALFORMED = "Not JSON (NaN, Infinity, a lone surrogate and nesting deeper than 64 included)"
_BODY_TOO_LARGE = "Body larger than MAX_BODY_BYTES (1 MiB)"
_INVALID_DATA = (
    "data does not match the job type's schema (a webhook URL to a private address included), or delayMs is "
    "not a whole number of ms from 0 to 7 days; details.fields names each field"
)
_NO_SUCH_JOB = refused("No such job (never enqueued, deleted, or older than the retention)")
_NO_SUCH_QUEUE = refused("No job type is declared on this queue: the message lists the declared queues")

#: What /openapi.json says of each route, by endpoint (app/api/openapi.py builds the document from these).
OPERATIONS: dict[Callable[..., Any], Operation] = {
    enqueue.enqueue: Operation(
        "enqueueJob",
        "Enqueue one job",
        access="write",
        parameters=(IDEMPOTENCY_KEY,),
        body=ref("JobRequest"),
        answers={
            202: Answer("Accepted", ref("Accepted"), links=job_links("$response.body#/jobId")),
            200: Answer(
                "Already accepted under this Idempotency-Key: the first job's id, nothing enqueued",
                ref("Accepted"),
                links=job_links("$response.body#/jobId"),
            ),
            400: refused(
                f"{_MALFORMED}, not an object, an unknown field, an unknown jobName (the message lists the known "
                "ones), or an Idempotency-Key that is empty or too long"
            ),
            413: refused(_BODY_TOO_LARGE),
            422: refused(_INVALID_DATA),
        },
    ),
    enqueue.enqueue_batch: Operation(
        "enqueueJobs",
        "Enqueue a batch of jobs (at most maxItems: MAX_BATCH_JOBS), all or none",
        access="write",
        body=ref("BatchRequest"),
        answers={
            202: Answer("All accepted", ref("BatchAccepted"), links=job_links("$response.body#/jobIds/0")),
            400: refused(f'{_MALFORMED}, not {{"jobs": [...]}} with at least one job, or an unknown field'),
            413: refused(f"{_BODY_TOO_LARGE}, or more than maxItems (MAX_BATCH_JOBS) jobs: split the batch"),
            422: refused(
                "Some jobs are invalid (an unknown field or jobName, or as for POST /enqueue): none was enqueued; "
                "details lists each one's index, error and fields"
            ),
        },
    ),
    jobs.list_jobs: Operation(
        "listJobs",
        "List jobs, newest first",
        access="read",
        parameters=(
            query("state", ref("StateFilter")),
            query("jobName", ref("JobNameFilter")),
            query("limit", {"type": "integer", "minimum": 1, "maximum": MAX_PAGE}),
            query(
                "cursor",
                {"type": "string", "pattern": "^([0-9]+-.+)?$"},
                "nextCursor of the previous page; empty or absent for the first page",
            ),
        ),
        answers={
            200: Answer("A page of jobs", ref("JobPage")),
            400: refused("An unknown state or jobName, a limit out of range, or a cursor not from a previous page"),
        },
    ),
    jobs.delete_jobs: Operation(
        "deleteFailedJobs",
        "Delete failed jobs in bulk",
        access="write",
        parameters=(
            query("state", {"type": "string", "enum": ["failed"]}, required=True),
            query("jobName", ref("JobNameFilter")),
        ),
        answers={
            200: Answer("How many were deleted", ref("Deleted")),
            400: refused("state is not failed, or an unknown jobName"),
        },
    ),
    jobs.retry_jobs: Operation(
        "retryFailedJobs",
        "Requeue failed jobs in bulk",
        access="write",
        body=ref("RetryRequest"),
        answers={
            200: Answer("How many were requeued", ref("Requeued")),
            400: refused(f'{_MALFORMED}, or not {{"state": "failed"}} with an optional known jobName'),
            413: refused(_BODY_TOO_LARGE),
        },
    ),
    jobs.get_job: Operation(
        "getJob",
        "One job's outcome record, with the last error's traceback (and its data on request)",
        access="read",
        parameters=(
            JOB_ID,
            INCLUDE,
            query(
                "wait",
                {"type": "number", "minimum": 0, "maximum": long_poll.MAX_WAIT_S},
                "seconds to wait for the job to finish (succeeded, failed or skipped) before answering: the "
                "record once it has, or as it is when the time is up; empty or 0 answers at once",
            ),
        ),
        answers={
            200: Answer("The record", ref("JobDetail")),
            400: refused(f"include is neither data nor empty, or wait is not from 0 to {long_poll.MAX_WAIT_S} s"),
            404: _NO_SUCH_JOB,
        },
    ),
    jobs.delete_job: Operation(
        "deleteJob",
        "Delete a finished job's record",
        access="write",
        parameters=(JOB_ID,),
        answers={
            204: Answer("Deleted"),
            404: _NO_SUCH_JOB,
            409: refused("The job has not finished (queued, running or retrying), or changed meanwhile"),
        },
    ),
    jobs.retry_job: Operation(
        "retryJob",
        "Requeue a failed job with the same jobId",
        access="write",
        parameters=(JOB_ID,),
        answers={
            202: Answer("Requeued", ref("JobRecord")),
            400: refused("The job's type is no longer declared"),
            404: _NO_SUCH_JOB,
            409: refused("The job is not failed, or changed meanwhile"),
            422: refused("The job's data no longer passes its type's schema; details.fields names each field"),
        },
    ),
    cancel.cancel_job: Operation(
        "cancelJob",
        "Cancel a job: one not started never runs; a running one is asked to stop",
        access="write",
        parameters=(
            JOB_ID,
            query(
                "force",
                {"type": "string", "enum": ["true", "false"]},
                "true: a running job is interrupted (as a time limit interrupts it) and ends canceled",
            ),
        ),
        answers={
            200: Answer("Canceled: it will not run (state canceled)", ref("JobRecord")),
            202: Answer(
                "The job is running: its cancel is requested (and with force, it is interrupted); or the worker "
                "did not confirm in time",
                ref("JobRecord"),
            ),
            400: refused("force is neither true nor false"),
            404: _NO_SUCH_JOB,
            409: refused("The job has already finished (succeeded, failed, skipped or canceled)"),
        },
    ),
    queues.list_queues: Operation(
        "listQueues",
        "Every declared queue: its jobs by state, its oldest ready job's age, whether it is paused",
        access="read",
        answers={200: Answer("The declared queues, by name", ref("QueueList"))},
    ),
    queues.get_queue: Operation(
        "getQueue",
        "One queue: its jobs by state, its oldest ready job's age, whether it is paused",
        access="read",
        parameters=(QUEUE_NAME,),
        answers={200: Answer("The queue", ref("Queue")), 404: _NO_SUCH_QUEUE},
    ),
    queues.pause_queue: Operation(
        "pauseQueue",
        "Pause a queue: workers hand out none of its jobs until it is resumed (jobs running go on; enqueues are "
        "still accepted). Pausing a paused queue keeps the time of its first pause",
        access="write",
        parameters=(QUEUE_NAME,),
        answers={200: Answer("The queue, paused", ref("Queue")), 404: _NO_SUCH_QUEUE},
    ),
    queues.resume_queue: Operation(
        "resumeQueue",
        "Resume a queue: idle workers take its jobs at once. Resuming a queue that is not paused changes nothing",
        access="write",
        parameters=(QUEUE_NAME,),
        answers={200: Answer("The queue, not paused", ref("Queue")), 404: _NO_SUCH_QUEUE},
    ),
    schedules.list_schedules: Operation(
        "listSchedules",
        "Every schedule of SCHEDULES_FILE: its cron, time zone and job, its next run, and its last run",
        access="read",
        answers={200: Answer("The schedules, in the file's order", schedules.SCHEDULE_LIST_SCHEMA)},
    ),
    system.healthz: Operation("healthz", "The process is up", {200: Answer("Up", status_body("ok"))}),
    system.readyz: Operation(
        "readyz",
        "Redis answers",
        {200: Answer("Ready", status_body("ready")), 503: refused("Redis does not answer, or refuses the credentials")},
    ),
    system.metrics: Operation(
        "metrics", "Prometheus metrics", {200: Answer("Metrics", {"type": "string"}, media_type="text/plain")}
    ),
    system.openapi: Operation(
        "openapi", "This document", {200: Answer("The OpenAPI 3.1 document", {"type": "object"})}
    ),
}
