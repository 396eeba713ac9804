"""The OpenAPI document of the API, built from the registered job types' schemas."""

from __future__ import annotations

from typing import Any

from app.enqueue import MAX_DELAY_MS
from app.jobs import JobRegistry
from app.outcomes import STATES

MAX_PAGE = 200
JOB_ID_PATTERN = "^[A-Za-z0-9_.:-]{1,128}$"


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def document(registry: JobRegistry, *, max_batch_jobs: int) -> dict[str, Any]:
    names = registry.names()
    key = [{"apiKey": []}]
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
        "400": _error("Malformed JSON or unknown jobName"),
        "413": _error("Body larger than the limit"),
        "422": _error("data does not match the job type's schema"),
    }
    data_schemas = {
        f"{t.name}Data": t.schema.model_json_schema(ref_template="#/components/schemas/{model}") for t in registry
    }
    job_request = {
        "type": "object",
        "required": ["jobName", "data"],
        "properties": {
            "jobName": {"type": "string", "enum": names},
            "data": {
                "type": "object",
                "description": "validated against the job type's schema: "
                + ", ".join(f"{n} -> #/components/schemas/{n}Data" for n in names),
            },
            "delayMs": {"type": "integer", "minimum": 0, "maximum": MAX_DELAY_MS},
        },
    }
    record = {
        "type": "object",
        "required": ["jobId", "jobName", "state"],
        "properties": {
            "jobId": {"type": "string"},
            "jobName": {"type": ["string", "null"]},
            "queue": {"type": ["string", "null"]},
            "state": {"type": ["string", "null"], "enum": [*STATES, None]},
            **{
                name: {"type": ["integer", "null"]}
                for name in (
                    "attempts", "maxRetries", "enqueuedAt", "startedAt", "finishedAt", "durationMs",
                    "nextRetryAt", "runAt", "executions", "redeliveries", "requeues",
                )
            },
            "error": {"type": ["string", "null"]},
        },
    }  # fmt: skip
    filter_params = [
        {"name": "jobName", "in": "query", "required": False, "schema": {"type": "string", "enum": names}},
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
                    "properties": {"error": {"type": "string"}, "details": {}},
                },
                "JobRequest": job_request,
                "JobRecord": record,
                **data_schemas,
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
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "required": ["message", "jobId"],
                                        "properties": {
                                            "message": {"type": "string"},
                                            "jobId": {"type": "string"},
                                        },
                                    }
                                }
                            },
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
                            "schema": {"type": "string", "enum": list(STATES)},
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
                            "schema": {"type": "string", "pattern": "^[0-9]+-.+$"},
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
                                    "required": ["state"],
                                    "properties": {
                                        "state": {"type": "string", "enum": ["failed"]},
                                        "jobName": {"type": "string", "enum": names},
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
            "/healthz": {"get": {"summary": "The process is up", "responses": {"200": {"description": "Up"}}}},
            "/readyz": {
                "get": {
                    "summary": "Redis answers",
                    "responses": {"200": {"description": "Ready"}, "503": _error("Redis unavailable")},
                }
            },
            "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "Metrics"}}}},
        },
    }
