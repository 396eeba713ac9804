"""Job types: a name, a schema for its data, and the Dramatiq actor that runs it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import dramatiq
import pydantic

from app.email_domains import memoize_domain_checks
from app.errors import InvalidJobData, PermanentJobError, UnknownJob
from app.settings import Settings

# Validation is the largest cost of an enqueue; an email address's domain check is most of it.
memoize_domain_checks()

DEFAULT_QUEUE = "default"
#: The key, in a schema's validation context, of the settings it is validated under.
SETTINGS_CONTEXT = "settings"


def context_settings(info: pydantic.ValidationInfo) -> Settings:
    """In a schema's validator: the settings of the process validating (the defaults, the
    strictest, when none were given)."""
    context = info.context if isinstance(info.context, dict) else {}
    found = context.get(SETTINGS_CONTEXT)
    return found if isinstance(found, Settings) else Settings()


@dataclass(frozen=True)
class JobType:
    """A registered job type; `validate` is the one check every way in (API, producer) goes through."""

    name: str
    schema: type[pydantic.BaseModel]
    actor: dramatiq.Actor[Any, Any]
    queue: str
    example: Callable[[int], dict[str, Any]] = lambda number: {}

    def validate(self, data: Any, settings: Settings | None = None) -> dict[str, Any]:
        """The data as the job will receive it, or InvalidJobData naming each bad field.
        `settings`: what the schema's validators see (`context_settings`)."""
        if not isinstance(data, dict):
            raise InvalidJobData(self.name, {"data": "must be a JSON object"})
        try:
            model = self.schema.model_validate(data, context={SETTINGS_CONTEXT: settings} if settings else None)
        except pydantic.ValidationError as error:
            problems: dict[str, str] = {}
            for item in error.errors(include_url=False):
                path = ".".join(str(part) for part in ("data", *item["loc"]))
                problems[path] = item["msg"]
            raise InvalidJobData(self.name, problems) from None
        return model.model_dump(mode="json", exclude_none=True)


class JobRegistry:
    """The allow-list of job types, filled as modules in app/actors/ are imported."""

    def __init__(self) -> None:
        self._types: dict[str, JobType] = {}

    def add(self, job_type: JobType) -> None:
        if job_type.name in self._types:
            raise ValueError(f"job type {job_type.name!r} is registered twice")
        self._types[job_type.name] = job_type

    def get(self, name: object) -> JobType:
        if isinstance(name, str) and name in self._types:
            return self._types[name]
        raise UnknownJob(name, self.names())

    def names(self) -> list[str]:
        return sorted(self._types)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._types.values())

    def __len__(self) -> int:
        return len(self._types)


registry = JobRegistry()


def job_type(
    name: str,
    *,
    schema: type[pydantic.BaseModel],
    queue: str = DEFAULT_QUEUE,
    permanent_errors: tuple[type[BaseException], ...] = (),
    example: Callable[[int], dict[str, Any]] | None = None,
    **actor_options: Any,
) -> Callable[[Callable[[str, dict[str, Any]], None]], JobType]:
    """Declare a job type: `fn(job_id, data)` becomes an actor named `name`.

    `permanent_errors` fail the job at once (no retries); PermanentJobError always does.
    `example(n)` makes the data of the n-th synthetic job for `app.producer --generate`.
    """

    def decorate(fn: Callable[[str, dict[str, Any]], None]) -> JobType:
        actor: dramatiq.Actor[Any, Any] = dramatiq.actor(  # type: ignore[call-overload]
            fn,
            actor_name=name,
            queue_name=queue,
            throws=(PermanentJobError, *permanent_errors),
            **actor_options,
        )
        declared = JobType(name=name, schema=schema, actor=actor, queue=queue)
        if example is not None:
            declared = JobType(name=name, schema=schema, actor=actor, queue=queue, example=example)
        registry.add(declared)
        return declared

    return decorate
