"""The enqueue form, generated from each job type's JSON schema; the API's own validation, its
errors shown beside the fields."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from app.api.context import api_of
from app.errors import InvalidJobData, UnknownJob
from app.jobs import JobType
from app.keys import PRIORITY_LEVELS
from app.ui.guard import page
from app.ui.render import render


@dataclass(frozen=True)
class Field:
    """One input of the form, from one property of the schema."""

    name: str
    kind: str  # text, email, url, number, integer, checkbox, json, select
    required: bool
    description: str
    default: Any
    choices: tuple[str, ...] = ()

    @property
    def input_name(self) -> str:
        return f"data.{self.name}"


def _resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        return dict(schema.get("$defs", {}).get(ref.removeprefix("#/$defs/"), {}))
    if "anyOf" in node:
        # Optional[X]: the first choice that is not null.
        for choice in node["anyOf"]:
            if choice.get("type") != "null":
                return {**_resolve(schema, choice), **{k: v for k, v in node.items() if k != "anyOf"}}
    return node


def fields_of(job_type: JobType) -> list[Field]:
    schema = job_type.schema.model_json_schema()
    required = set(schema.get("required", ()))
    fields = []
    for name, raw in schema.get("properties", {}).items():
        node = _resolve(schema, raw)
        kind, fmt = node.get("type"), node.get("format")
        if "enum" in node:
            widget = "select"
        elif kind == "string":
            widget = {"email": "email", "uri": "url"}.get(fmt or "", "text")
        elif kind in ("integer", "number"):
            widget = kind
        elif kind == "boolean":
            widget = "checkbox"
        else:
            widget = "json"
        fields.append(
            Field(
                name=name,
                kind=widget,
                required=name in required,
                description=str(node.get("description") or raw.get("description") or node.get("title") or ""),
                default=node.get("default", raw.get("default")),
                choices=tuple(str(c) for c in node.get("enum", ())),
            )
        )
    return fields


def _data(fields: list[Field], form: FormData) -> tuple[dict[str, Any], dict[str, str]]:
    """The job data a form describes, and the fields that could not even be read (not JSON, not a number)."""
    data: dict[str, Any] = {}
    problems: dict[str, str] = {}
    for field in fields:
        raw = form.get(field.input_name)
        text = raw.strip() if isinstance(raw, str) else ""
        if field.kind == "checkbox":
            data[field.name] = raw is not None
            continue
        if not text:
            continue
        try:
            if field.kind == "integer":
                data[field.name] = int(text)
            elif field.kind == "number":
                data[field.name] = float(text)
            elif field.kind == "json":
                data[field.name] = json.loads(text)
            else:
                data[field.name] = text
        except ValueError:
            problems[f"data.{field.name}"] = "not valid JSON" if field.kind == "json" else f"not a {field.kind}"
    return data, problems


def _form(request: Request, job_type: JobType | None, **context: Any) -> Response:
    api = api_of(request)
    return render(
        request, "enqueue.html", title="Enqueue", job_types=api.registry.names(), job_type=job_type,
        fields=fields_of(job_type) if job_type else [], priorities=PRIORITY_LEVELS, **context,
    )  # fmt: skip


def _job_type(request: Request, name: object) -> JobType | None:
    try:
        return api_of(request).registry.get(name) if name else None
    except UnknownJob:
        return None


@page()
async def enqueue_form(request: Request) -> Response:
    job_type = _job_type(request, request.query_params.get("jobName"))
    return _form(request, job_type, values={}, errors={})


@page(write=True)
async def enqueue(request: Request) -> Response:
    api = api_of(request)
    form = await request.form()
    job_type = _job_type(request, form.get("jobName"))
    if job_type is None:
        return _form(request, None, values={}, errors={"jobName": "choose a job type"})
    values = {key: value for key, value in form.items() if isinstance(value, str)}
    data, problems = _data(fields_of(job_type), form)
    item: dict[str, Any] = {"jobName": job_type.name, "data": data}
    delay = str(form.get("delayMs") or "").strip()
    if delay:
        item["delayMs"] = int(delay) if delay.isdigit() else delay
    priority = form.get("priority")
    if priority:
        item["priority"] = priority
    if not problems:
        try:
            message, delay_ms = api.enqueuer.from_request(item)
        except InvalidJobData as error:
            problems = error.problems
    if problems:
        return _form(request, job_type, status=422, values=values, errors=problems)
    stored, commands = api.enqueuer.commands(message, delay_ms)
    await api.batcher.submit(commands, api.keys.for_queue(stored.queue_name))
    return RedirectResponse(f"/ui/jobs/{stored.message_id}?done=enqueued", status_code=303)
