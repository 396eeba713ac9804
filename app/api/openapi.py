"""The OpenAPI document of the API, built from its routes, what each route declares of itself
(an `Operation`, next to the routes in app/http.py), the job types' schemas and the record's fields.

An `Operation` names the schemas it takes and answers (`ref`); the ones that depend on the job
types or the settings are built here (`_components`). Access adds what every protected route
answers alike: 401 (and 403 for a write), and 503 with Retry-After when Redis does not answer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from starlette.routing import BaseRoute, Route

from app.broker.enqueue import MAX_DELAY_MS
from app.jobs import JobRegistry
from app.outcomes.record import DETAIL_WITH_DATA_FIELDS, FIELDS, MAX_TRACEBACK_CHARS, PUBLIC_FIELDS, STATES

MAX_PAGE = 200
JOB_ID_PATTERN = "^[A-Za-z0-9_.:-]{1,128}$"

Schema = dict[str, Any]
#: Who may call an operation: anyone (None), either key ("read"), or the full key only ("write").
Access = Literal["read", "write"] | None


def ref(name: str) -> Schema:
    """A schema of the document's components."""
    return {"$ref": f"#/components/schemas/{name}"}


ERROR = ref("Error")


@dataclass(frozen=True)
class Answer:
    """One status of an operation: when it is answered, its JSON body (none: no body), and the
    operations its values lead to (link name -> (operationId, {parameter: runtime expression}))."""

    description: str
    schema: Schema | None = None
    media_type: str = "application/json"
    links: Mapping[str, tuple[str, Mapping[str, str]]] = field(default_factory=dict)


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
        "a job sent twice with the same key is enqueued once; 1 to 200 characters of "
        "UTF-8 text (bytes that are not UTF-8 count one character each)"
    ),
    "schema": {"type": "string", "minLength": 1, "maxLength": 200},
}

#: What every operation that needs a key answers, by access.
_UNAUTHORIZED = refused("Missing or wrong x-api-key")
_READ_ONLY = refused("The read-only key cannot enqueue or change jobs")
_UNAVAILABLE = refused("Redis unavailable; retry after Retry-After seconds")


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


def _data_schemas(registry: JobRegistry) -> dict[str, Any]:
    """`<jobName>Data` for each job type, with the models they nest hoisted into the components."""
    schemas: dict[str, Any] = {}
    for job_type in registry:
        schema = job_type.schema.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[f"{job_type.name}Data"] = schema
    return schemas


def _job_request(name: str) -> dict[str, Any]:
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
}


def _record_field(name: str) -> dict[str, Any]:
    if name == "jobId":
        schema: Schema = {"type": "string"}
    elif name == "state":
        schema = {"type": ["string", "null"], "enum": [*STATES, None]}
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


def _components(registry: JobRegistry, *, max_batch_jobs: int) -> Schema:
    """The schemas the operations refer to, those of the job types and the settings included."""
    names = registry.names()
    return {
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {"error": {"type": "string", "minLength": 1}, "details": {}},
        },
        "Accepted": _object(message={"type": "string"}, jobId={"type": "string"}),
        "BatchAccepted": _object(message={"type": "string"}, jobIds={"type": "array", "items": {"type": "string"}}),
        "JobRequest": {
            "oneOf": [ref(f"{name}Request") for name in names],
            "description": "one job: jobName picks the schema its data is validated against",
        },
        **{f"{name}Request": _job_request(name) for name in names},
        "BatchRequest": {
            "type": "object",
            "required": ["jobs"],
            "properties": {
                "jobs": {"type": "array", "minItems": 1, "maxItems": max_batch_jobs, "items": ref("JobRequest")}
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
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "taskqueue",
            "version": "1.0.0",
            "description": "Accept jobs, follow their outcomes, and act on failed ones.",
        },
        "components": {
            "securitySchemes": {"apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"}},
            "schemas": _components(registry, max_batch_jobs=max_batch_jobs),
        },
        "paths": _paths(routes, operations),
    }
