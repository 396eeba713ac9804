"""The OpenAPI document of the API, built from its routes, what each route declares of itself
(an `Operation`, next to the routes in app/http.py), the job types' schemas and the record's fields.

An `Operation` names the schemas it takes and answers (`ref`); the ones that depend on the job
types or the settings are built here (`_components`). Access adds what every protected route
answers alike: 401 (and 403 for a write), and 503 with Retry-After when Redis does not answer.
Links say which operations a response's values lead to (a new job's id to GET, retry and DELETE
it), so that a client, or a stateful fuzzer, can follow them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import email_validator
from starlette.routing import BaseRoute, Route

from app.api.enqueue import MAX_IDEMPOTENCY_KEY
from app.api.errors import CLIENT_GONE, RETRY_AFTER_S
from app.broker.enqueue import MAX_DELAY_MS, MAX_RETRIES_LIMIT
from app.jobs import JobRegistry
from app.keys import PRIORITY_LEVELS
from app.outcomes.record import (
    DETAIL_WITH_DATA_FIELDS,
    FIELDS,
    HISTORY_ENTRY_FIELDS,
    HISTORY_ERROR_CHARS,
    HISTORY_TRACEBACK_CHARS,
    MAX_HISTORY,
    MAX_TRACEBACK_CHARS,
    PUBLIC_FIELDS,
    STATES,
)

MAX_PAGE = 200
JOB_ID_PATTERN = "^[A-Za-z0-9_.:-]{1,128}$"

Schema = dict[str, Any]
#: Who may call an operation: anyone (None), either key ("read"), or the full key only ("write").
Access = Literal["read", "write"] | None


def ref(name: str) -> Schema:
    """A schema of the document's components."""
    return {"$ref": f"#/components/schemas/{name}"}


ERROR = ref("Error")


#: A link: the operationId it leads to, and its parameters' values as runtime expressions.
Link = tuple[str, Mapping[str, str]]


@dataclass(frozen=True)
class Answer:
    """One status of an operation: when it is answered, its body (none: no body), the headers it
    always carries, and the operations its values lead to (by link name)."""

    description: str
    schema: Schema | None = None
    media_type: str = "application/json"
    headers: Mapping[str, Schema] = field(default_factory=dict)
    links: Mapping[str, Link] = field(default_factory=dict)


def refused(description: str) -> Answer:
    """An error answer: its body is `{"error": ..., "details"?: ...}`."""
    return Answer(description, ERROR)


@dataclass(frozen=True)
class Operation:
    """What /openapi.json says of one route's method, beside what its `access` implies."""

    operation_id: str
    summary: str
    answers: Mapping[int, Answer]
    access: Access = None
    parameters: tuple[Schema, ...] = ()
    body: Schema | None = None


def job_links(job_id: str) -> dict[str, Link]:
    """What a job's id leads to: reading the job, retrying it and deleting it. `job_id`: where the
    id is in the response, as a runtime expression (`$response.body#/jobId`)."""
    return {
        "GetJob": ("getJob", {"job_id": job_id}),
        "RetryJob": ("retryJob", {"job_id": job_id}),
        "DeleteJob": ("deleteJob", {"job_id": job_id}),
    }


def query(name: str, schema: Schema, description: str | None = None, *, required: bool = False) -> Schema:
    parameter: Schema = {"name": name, "in": "query", "required": required, "schema": schema}
    if description:
        parameter["description"] = description
    return parameter


JOB_ID: Schema = {
    "name": "job_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": JOB_ID_PATTERN},
}
QUEUE_NAME: Schema = {
    "name": "name",
    "in": "path",
    "required": True,
    "description": "a declared queue (the queue of some job type)",
    "schema": ref("QueueName"),
}
INCLUDE: Schema = {
    "name": "include",
    "in": "query",
    "required": False,
    "description": "data: the job's data too (it can be large); an empty value is the same as leaving it out",
    "schema": {"type": "string", "enum": ["data", ""]},
}
IDEMPOTENCY_KEY: Schema = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": (
        f"a job sent twice with the same key is enqueued once; 1 to {MAX_IDEMPOTENCY_KEY} characters of UTF-8 "
        "text (bytes that are not UTF-8 count one character each), not only spaces"
    ),
    "schema": {"type": "string", "minLength": 1, "maxLength": MAX_IDEMPOTENCY_KEY, "pattern": "\\S"},
}

#: What every operation that needs a key answers, by access.
_UNAUTHORIZED = refused("Missing or wrong x-api-key")
_READ_ONLY = refused("The read-only key cannot enqueue or change jobs")
_UNAVAILABLE = Answer(
    "Redis did not answer (within about 4 s): nothing was done; retry after Retry-After seconds",
    ERROR,
    headers={
        "Retry-After": {
            "required": True,
            "description": "seconds to wait before trying again",
            "schema": {"type": "integer", "const": RETRY_AFTER_S},
        }
    },
)


def _access_answers(access: Access) -> dict[int, Answer]:
    if access is None:
        return {}
    answers = {401: _UNAUTHORIZED, 503: _UNAVAILABLE}
    if access == "write":
        answers[403] = _READ_ONLY
    return answers


def _response(answer: Answer) -> Schema:
    response: Schema = {"description": answer.description}
    if answer.schema is not None:
        response["content"] = {answer.media_type: {"schema": answer.schema}}
    if answer.headers:
        response["headers"] = dict(answer.headers)
    if answer.links:
        response["links"] = {
            name: {"operationId": operation_id, "parameters": dict(parameters)}
            for name, (operation_id, parameters) in answer.links.items()
        }
    return response


def _operation(operation: Operation) -> Schema:
    described: Schema = {"operationId": operation.operation_id, "summary": operation.summary}
    if operation.access is not None:
        described["security"] = [{"apiKey": []}]
    if operation.parameters:
        described["parameters"] = list(operation.parameters)
    if operation.body is not None:
        described["requestBody"] = {"required": True, "content": {"application/json": {"schema": operation.body}}}
    answers = {**operation.answers, **_access_answers(operation.access)}
    described["responses"] = {str(status): _response(answer) for status, answer in answers.items()}
    return described


def _paths(routes: Iterable[BaseRoute], operations: Mapping[Callable[..., Any], Operation]) -> Schema:
    paths: Schema = {}
    for route in routes:
        assert isinstance(route, Route), f"{route!r}: only plain routes are documented"
        operation = operations.get(route.endpoint)
        if operation is None:
            raise LookupError(f"route {route.path} ({route.endpoint.__name__}) has no Operation to document it")
        for method in sorted(set(route.methods or ()) - {"HEAD"}):
            paths.setdefault(route.path, {})[method.lower()] = _operation(operation)
    return paths


def _links_lead_somewhere(paths: Schema) -> None:
    ids = {described["operationId"] for item in paths.values() for described in item.values()}
    for path, item in paths.items():
        for described in item.values():
            for status, response in described["responses"].items():
                for name, link in response.get("links", {}).items():
                    if link["operationId"] not in ids:
                        raise LookupError(f"link {name} of {path} {status} leads to no operation {link['operationId']}")


def _data_schemas(registry: JobRegistry) -> dict[str, Any]:
    """`<jobName>Data` for each job type, with the models they nest hoisted into the components."""
    schemas: dict[str, Any] = {}
    for job_type in registry:
        schema = job_type.schema.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[f"{job_type.name}Data"] = schema
    for schema in schemas.values():
        _state_email_rules(schema)
    return schemas


def _special_use_domains() -> list[str]:
    """The domains email validation refuses (email_validator's list; `test` is allowed in its test mode)."""
    return [
        d for d in email_validator.SPECIAL_USE_DOMAIN_NAMES if not (d == "test" and email_validator.TEST_ENVIRONMENT)
    ]


def _state_email_rules(schema: Any) -> None:
    """Say, of every `format: email` in a schema, what validation refuses beyond the format's syntax.

    Email addresses are checked by email_validator (app/delivery/email_domains.py), stricter than the
    format: a special-use domain (`user@example.test`) is refused, which `not` states exactly (for
    ASCII domains, in either case); the other rules are in the description."""
    if isinstance(schema, list):
        for item in schema:
            _state_email_rules(item)
    if not isinstance(schema, dict):
        return
    if schema.get("format") == "email":
        domains = _special_use_domains()
        either_case = ["".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else c for c in d) for d in domains]
        schema["not"] = {"pattern": f"[@.]({'|'.join(either_case)})$"}
        special = ", ".join("." + d for d in domains)
        schema["description"] = (
            "an address that can receive mail: its domain has a period, its top-level domain ends with a letter "
            f"(in ASCII form) and is not a special-use one ({special}); no quoted local part, no IP address for "
            "a domain; a 'Name <address>' form is accepted"
        )
    for value in schema.values():
        _state_email_rules(value)


def _job_request(name: str, queues: list[str]) -> dict[str, Any]:
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["jobName", "data"],
        "properties": {
            "jobName": {"type": "string", "const": name},
            "data": ref(f"{name}Data"),
            "delayMs": {
                "type": ["integer", "null"],
                "minimum": 0,
                "maximum": MAX_DELAY_MS,
                "description": "run the job this many ms from now; null or 0 runs it now",
            },
            "priority": {
                "type": ["string", "null"],
                "enum": [*PRIORITY_LEVELS, None],
                "description": "its priority level instead of the job type's: while several levels have jobs, "
                "of every 10 a queue hands out 6 are high, 3 normal and 1 low",
            },
            "maxRetries": {
                "type": ["integer", "null"],
                "minimum": 0,
                "maximum": MAX_RETRIES_LIMIT,
                "description": "its retries instead of the job type's (MAX_RETRIES by default)",
            },
            "queue": {
                "type": ["string", "null"],
                "enum": [*queues, None],
                "description": "a declared queue instead of the job type's",
            },
        },
    }


def optional(values: Iterable[str], what: str) -> Schema:
    """A query parameter whose empty value (`?state=`) means the same as leaving it out."""
    return {
        "type": "string",
        "enum": [*values, ""],
        "description": f"only {what}; an empty value is the same as leaving it out",
    }


#: What the record's fields say beyond their type.
_FIELD_DESCRIPTIONS = {
    "traceback": (
        f"the traceback of the last error (its last {MAX_TRACEBACK_CHARS} characters), kept like error; "
        "null if the job never failed"
    ),
    "data": "the job's data as accepted: only with ?include=data",
    "worker": "the worker process of the current (last) attempt, as host:pid; null before it starts",
    "history": (
        f"the earlier attempts, oldest first: each attempt that failed and was retried, appended when its retry "
        f"was scheduled, the last {MAX_HISTORY} kept; its error cut to {HISTORY_ERROR_CHARS} characters, the last "
        f"{HISTORY_TRACEBACK_CHARS} of its traceback; worker is host:pid. The current attempt is in the record's "
        "own fields (startedAt, finishedAt, durationMs, error, traceback, worker): while retrying it is also the last "
        "entry. null if no attempt was retried; a requeue keeps it"
    ),
}
#: An entry of `history`: the times in ms since the epoch, the duration in ms.
_HISTORY_ENTRY_TYPES = {
    "attempt": "integer", "startedAt": "integer", "finishedAt": "integer", "durationMs": "integer",
    "error": "string", "traceback": "string", "worker": "string",
}  # fmt: skip
assert tuple(_HISTORY_ENTRY_TYPES) == HISTORY_ENTRY_FIELDS


def _record_field(name: str) -> dict[str, Any]:
    if name == "jobId":
        schema: Schema = {"type": "string"}
    elif name == "state":
        schema = {"type": ["string", "null"], "enum": [*STATES, None]}
    elif name == "history":
        entry = {"type": "object", "required": list(_HISTORY_ENTRY_TYPES),
                 "properties": {field: {"type": kind} for field, kind in _HISTORY_ENTRY_TYPES.items()}}  # fmt: skip
        schema = {"type": ["array", "null"], "items": entry, "maxItems": MAX_HISTORY}
    elif FIELDS[name] == "any":
        schema = {}
    else:
        schema = {"type": [FIELDS[name], "null"]}
    if name in _FIELD_DESCRIPTIONS:
        schema["description"] = _FIELD_DESCRIPTIONS[name]
    return schema


def _record(fields: Iterable[str]) -> Schema:
    return {
        "type": "object",
        "required": ["jobId", "jobName", "state"],
        "properties": {name: _record_field(name) for name in fields},
    }


def status_body(value: str) -> Schema:
    """`{"status": value}`, what /healthz and /readyz answer."""
    return _object(status={"type": "string", "const": value})


def _object(**properties: Schema) -> Schema:
    """An object with these properties, all required."""
    return {"type": "object", "required": list(properties), "properties": properties}


def _queue() -> Schema:
    """What GET /queues/{name} answers."""
    count: Schema = {"type": "integer", "minimum": 0}
    return _object(
        name=ref("QueueName"),
        ready={**count, "description": "jobs ready to run, every priority level"},
        readyByPriority=_object(**{level: count for level in PRIORITY_LEVELS}),
        delayed={**count, "description": "jobs delayed (delayMs) or waiting for their next retry"},
        waiting={**count, "description": "jobs held back by their type's rate limit or waiting for a concurrency slot"},
        running={**count, "description": "jobs live workers have fetched and not finished (prefetched ones included)"},
        failed={**count, "description": "dead letters"},
        oldestAgeSeconds={"type": "number", "minimum": 0, "description": "how long the oldest ready job has been "
                          "ready to run; 0 when none is"},
        paused={"type": "boolean", "description": "a paused queue hands out no job until it is resumed"},
        pausedAt={"type": ["integer", "null"], "description": "when it was paused (ms since the epoch); null if not"},
    )  # fmt: skip


def _components(registry: JobRegistry, *, max_batch_jobs: int) -> Schema:
    """The schemas the operations refer to, those of the job types and the settings included."""
    names = registry.names()
    return {
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {
                    "type": "string",
                    "minLength": 1,
                    "description": "what went wrong and what to do; a value the client sent is quoted to "
                    "100 characters at most, then its length",
                },
                "details": {
                    "description": "422: for one job {fields: {path: reason}}; for a batch "
                    "[{index, error, fields?}] of each invalid job"
                },
            },
        },
        "Accepted": _object(message={"type": "string"}, jobId={"type": "string"}),
        "BatchAccepted": _object(message={"type": "string"}, jobIds={"type": "array", "items": {"type": "string"}}),
        "JobRequest": {
            "oneOf": [ref(f"{name}Request") for name in names],
            "description": "one job: jobName picks the schema its data is validated against",
        },
        **{f"{name}Request": _job_request(name, registry.queues()) for name in names},
        "BatchRequest": {
            "type": "object",
            "required": ["jobs"],
            "properties": {
                "jobs": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": max_batch_jobs,
                    "items": ref("JobRequest"),
                    "description": "more than maxItems (MAX_BATCH_JOBS) jobs are refused with 413: split the batch",
                }
            },
            "additionalProperties": False,
        },
        "RetryRequest": {
            "type": "object",
            "additionalProperties": False,
            "required": ["state"],
            "properties": {
                "state": {"type": "string", "const": "failed"},
                "jobName": {
                    "type": ["string", "null"],
                    "enum": [*names, None],
                    "description": "only jobs of this type; null means all",
                },
            },
        },
        "StateFilter": optional(STATES, "jobs in this state"),
        "JobNameFilter": optional(names, "jobs of this type"),
        "JobRecord": _record(PUBLIC_FIELDS),
        "JobDetail": _record(DETAIL_WITH_DATA_FIELDS),
        "JobPage": _object(jobs={"type": "array", "items": ref("JobRecord")}, nextCursor={"type": ["string", "null"]}),
        "QueueName": {"type": "string", "enum": registry.queues()},
        "Queue": _queue(),
        "QueueList": _object(queues={"type": "array", "items": ref("Queue")}),
        "Requeued": _object(requeued={"type": "integer"}),
        "Deleted": _object(deleted={"type": "integer"}),
        **_data_schemas(registry),
    }


def document(
    routes: Iterable[BaseRoute],
    operations: Mapping[Callable[..., Any], Operation],
    registry: JobRegistry,
    *,
    max_batch_jobs: int,
) -> dict[str, Any]:
    """The OpenAPI 3.1 document served at /openapi.json: each route as its endpoint's Operation says."""
    paths = _paths(routes, operations)
    _links_lead_somewhere(paths)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "taskqueue",
            "version": "1.0.0",
            "description": (
                "Accept jobs, follow their outcomes, and act on failed ones. Every error is JSON "
                '{"error": ...} and changes nothing. A path no route has is answered 404, a method a path '
                f"does not list 405 with Allow. A client that disconnects before sending its whole request is "
                f"answered nothing: the HTTP metrics count it as {CLIENT_GONE}."
            ),
        },
        "components": {
            "securitySchemes": {"apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"}},
            "schemas": _components(registry, max_batch_jobs=max_batch_jobs),
        },
        "paths": paths,
    }
