"""The OpenAPI document of the API, built from the registered job types' schemas."""

from __future__ import annotations

from typing import Any

from app.broker.enqueue import MAX_DELAY_MS
from app.jobs import JobRegistry
from app.outcomes.record import FIELDS, PUBLIC_FIELDS, STATES

MAX_PAGE = 200
JOB_ID_PATTERN = "^[A-Za-z0-9_.:-]{1,128}$"


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def _status(description: str, status: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["status"],
                    "properties": {"status": {"type": "string", "const": status}},
                }
            }
        },
    }


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
            "data": {"$ref": f"#/components/schemas/{name}Data"},
            "delayMs": {
                "type": ["integer", "null"],
                "minimum": 0,
                "maximum": MAX_DELAY_MS,
                "description": "run the job this many ms from now; null or 0 runs it now",
            },
        },
    }


def _optional(values: list[str], what: str) -> dict[str, Any]:
    """A query parameter whose empty value (`?state=`) means the same as leaving it out."""
    return {
        "type": "string",
        "enum": [*values, ""],
        "description": f"only {what}; an empty value is the same as leaving it out",
    }


def _record_field(name: str) -> dict[str, Any]:
    if name == "jobId":
        return {"type": "string"}
    if name == "state":
        return {"type": ["string", "null"], "enum": [*STATES, None]}
    return {"type": [FIELDS[name], "null"]}


def document(registry: JobRegistry, *, max_batch_jobs: int) -> dict[str, Any]:
    """The OpenAPI 3.1 document served at /openapi.json."""
    names = registry.names()
    key: list[dict[str, list[str]]] = [{"apiKey": []}]
    job_id_param = {
        "name": "job_id",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "pattern": JOB_ID_PATTERN},
    }
    common_errors = {
        "401": _error("Missing or wrong x-api-key"),
        "503": _error("Redis unavailable; retry after Retry-After seconds"),
    }
    enqueue_errors = {
        **common_errors,
        "400": _error(
            "Malformed or too deeply nested JSON, an unknown field, or an unknown jobName (the message lists the "
            "known ones)"
        ),
        "403": _error("The read-only key cannot enqueue"),
        "413": _error("Body larger than the limit, or more jobs than the batch limit"),
        "422": _error(
            "data does not match the job type's schema, or a webhook URL points at a private address; "
            "details names each field"
        ),
    }
    job_request = {
        "oneOf": [{"$ref": f"#/components/schemas/{name}Request"} for name in names],
        "description": "one job: jobName picks the schema its data is validated against",
    }
    record = {
        "type": "object",
        "required": ["jobId", "jobName", "state"],
        "properties": {name: _record_field(name) for name in PUBLIC_FIELDS},
    }
    filter_params = [
        {"name": "jobName", "in": "query", "required": False, "schema": _optional(names, "jobs of this type")},
    ]
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "taskqueue",
            "version": "1.0.0",
            "description": "Accept jobs, follow their outcomes, and act on failed ones.",
        },
        "components": {
            "securitySchemes": {"apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"}},
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {"error": {"type": "string", "minLength": 1}, "details": {}},
                },
                "Accepted": {
                    "type": "object",
                    "required": ["message", "jobId"],
                    "properties": {"message": {"type": "string"}, "jobId": {"type": "string"}},
                },
                "JobRequest": job_request,
                **{f"{name}Request": _job_request(name) for name in names},
                "JobRecord": record,
                **_data_schemas(registry),
            },
        },
        "paths": {
            "/enqueue": {
                "post": {
                    "summary": "Enqueue one job",
                    "security": key,
                    "parameters": [
                        {
                            "name": "Idempotency-Key",
                            "in": "header",
                            "required": False,
                            "description": (
                                "a job sent twice with the same key is enqueued once; 1 to 200 characters of "
                                "UTF-8 text (bytes that are not UTF-8 count one character each)"
                            ),
                            "schema": {"type": "string", "minLength": 1, "maxLength": 200},
                        },
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/JobRequest"}}},
                    },
                    "responses": {
                        "202": {
                            "description": "Accepted",
                            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Accepted"}}},
                        },
                        "200": {
                            "description": "Already accepted under this Idempotency-Key: the first job's id",
                            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Accepted"}}},
                        },
                        **enqueue_errors,
                    },
                }
            },
            "/enqueue/batch": {
                "post": {
                    "summary": f"Enqueue up to {max_batch_jobs} jobs, all or none",
                    "security": key,
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["jobs"],
                                    "properties": {
                                        "jobs": {
                                            "type": "array",
                                            "minItems": 1,
                                            "maxItems": max_batch_jobs,
                                            "items": {"$ref": "#/components/schemas/JobRequest"},
                                        }
                                    },
                                    "additionalProperties": False,
                                }
                            }
                        },
                    },
                    "responses": {
                        "202": {
                            "description": "All accepted",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "required": ["message", "jobIds"],
                                        "properties": {
                                            "message": {"type": "string"},
                                            "jobIds": {"type": "array", "items": {"type": "string"}},
                                        },
                                    }
                                }
                            },
                        },
                        **enqueue_errors,
                    },
                }
            },
            "/jobs": {
                "get": {
                    "summary": "List jobs, newest first",
                    "security": key,
                    "parameters": [
                        {
                            "name": "state",
                            "in": "query",
                            "required": False,
                            "schema": _optional(list(STATES), "jobs in this state"),
                        },
                        *filter_params,
                        {
                            "name": "limit",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE},
                        },
                        {
                            "name": "cursor",
                            "in": "query",
                            "required": False,
                            "description": "nextCursor of the previous page; empty or absent for the first page",
                            "schema": {"type": "string", "pattern": "^([0-9]+-.+)?$"},
                        },
                    ],
                    "responses": {
                        "200": {
                            "description": "A page of jobs",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "required": ["jobs", "nextCursor"],
                                        "properties": {
                                            "jobs": {
                                                "type": "array",
                                                "items": {"$ref": "#/components/schemas/JobRecord"},
                                            },
                                            "nextCursor": {"type": ["string", "null"]},
                                        },
                                    }
                                }
                            },
                        },
                        "400": _error("Invalid query parameter"),
                        **common_errors,
                    },
                },
                "delete": {
                    "summary": "Delete failed jobs in bulk",
                    "security": key,
                    "parameters": [
                        {
                            "name": "state",
                            "in": "query",
                            "required": True,
                            "schema": {"type": "string", "enum": ["failed"]},
                        },
                        *filter_params,
                    ],
                    "responses": {
                        "200": {
                            "description": "How many were deleted",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "required": ["deleted"],
                                        "properties": {"deleted": {"type": "integer"}},
                                    }
                                }
                            },
                        },
                        "400": _error("Invalid query parameter"),
                        "403": _error("The read-only key cannot change jobs"),
                        **common_errors,
                    },
                },
            },
            "/jobs/retry": {
                "post": {
                    "summary": "Requeue failed jobs in bulk",
                    "security": key,
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
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
                                }
                            }
                        },
                    },
                    "responses": {
                        "200": {
                            "description": "How many were requeued",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "required": ["requeued"],
                                        "properties": {"requeued": {"type": "integer"}},
                                    }
                                }
                            },
                        },
                        "400": _error("Malformed body"),
                        "403": _error("The read-only key cannot change jobs"),
                        "413": _error("Body larger than the limit"),
                        **common_errors,
                    },
                }
            },
            "/jobs/{job_id}": {
                "get": {
                    "summary": "One job's outcome record",
                    "security": key,
                    "parameters": [job_id_param],
                    "responses": {
                        "200": {
                            "description": "The record",
                            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/JobRecord"}}},
                        },
                        "404": _error("No such job"),
                        **common_errors,
                    },
                },
                "delete": {
                    "summary": "Delete a finished job's record",
                    "security": key,
                    "parameters": [job_id_param],
                    "responses": {
                        "204": {"description": "Deleted"},
                        "403": _error("The read-only key cannot change jobs"),
                        "404": _error("No such job"),
                        "409": _error("The job has not finished"),
                        **common_errors,
                    },
                },
            },
            "/jobs/{job_id}/retry": {
                "post": {
                    "summary": "Requeue a failed job with the same jobId",
                    "security": key,
                    "parameters": [job_id_param],
                    "responses": {
                        "202": {
                            "description": "Requeued",
                            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/JobRecord"}}},
                        },
                        "403": _error("The read-only key cannot change jobs"),
                        "404": _error("No such job"),
                        "409": _error("The job is not failed"),
                        **common_errors,
                    },
                }
            },
            "/healthz": {
                "get": {
                    "summary": "The process is up",
                    "responses": {"200": _status("Up", "ok")},
                }
            },
            "/readyz": {
                "get": {
                    "summary": "Redis answers",
                    "responses": {"200": _status("Ready", "ready"), "503": _error("Redis unavailable")},
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics",
                    "responses": {
                        "200": {"description": "Metrics", "content": {"text/plain": {"schema": {"type": "string"}}}}
                    },
                }
            },
        },
    }
