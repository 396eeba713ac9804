"""Job types: declared once (a name, a schema for its data, the function that runs it, options),
read by the API and the producer to validate jobs, bound to Dramatiq actors by the worker.

Declaring a job type records a declaration only: no broker is needed, so the API and the
producer read the declarations without building one (app/worker.py binds them).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pydantic

from app.errors import InvalidJobData, PermanentJobError, UnknownJob
from app.settings import Settings

if TYPE_CHECKING:
    import redis

    from app.keys import Keys

DEFAULT_QUEUE = "default"
#: The key, in a schema's validation context, of the settings it is validated under.
SETTINGS_CONTEXT = "settings"
#: The package whose modules declare the job types.
JOB_TYPES_PACKAGE = "app.actors"


def context_settings(info: pydantic.ValidationInfo) -> Settings:
    """In a schema's validator: the settings of the process validating (the defaults, the
    strictest, when none were given)."""
    context = info.context if isinstance(info.context, dict) else {}
    found = context.get(SETTINGS_CONTEXT)
    return found if isinstance(found, Settings) else Settings()


@dataclass(frozen=True)
class JobContext:
    """What a running job may use besides its data: the worker's settings and Redis."""

    settings: Settings
    client: redis.Redis
    keys: Keys
    registry: JobRegistry


#: A job's function: `fn(job_id, data, context)`.
JobFunction = Callable[[str, dict[str, Any], JobContext], None]


@dataclass(frozen=True)
class JobType:
    """A declared job type; `validate` is the one check every way in (API, producer) goes through."""

    name: str
    schema: type[pydantic.BaseModel]
    fn: JobFunction
    queue: str = DEFAULT_QUEUE
    #: Errors that fail the job at once (no retries); PermanentJobError always does.
    permanent_errors: tuple[type[BaseException], ...] = ()
    #: Dramatiq actor options (max_retries, retry_when, time_limit, periodic, ...).
    options: dict[str, Any] = field(default_factory=dict)
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

    @property
    def throws(self) -> tuple[type[BaseException], ...]:
        return (PermanentJobError, *self.permanent_errors)


class JobRegistry:
    """The allow-list of job types."""

    def __init__(self) -> None:
        self._types: dict[str, JobType] = {}

    def add(self, job_type: JobType) -> None:
        if job_type.name in self._types:
            raise ValueError(f"job type {job_type.name!r} is declared twice")
        self._types[job_type.name] = job_type

    def get(self, name: object) -> JobType:
        if isinstance(name, str) and name in self._types:
            return self._types[name]
        raise UnknownJob(name, self.names())

    def names(self) -> list[str]:
        return sorted(self._types)

    def queues(self) -> list[str]:
        return sorted({job_type.queue for job_type in self._types.values()})

    def __iter__(self) -> Iterator[JobType]:
        return iter(self._types.values())

    def __len__(self) -> int:
        return len(self._types)


#: The job types declared by the modules of app/actors/ (and by whatever else declares one).
registry = JobRegistry()


def job_type(
    name: str,
    *,
    schema: type[pydantic.BaseModel],
    queue: str = DEFAULT_QUEUE,
    permanent_errors: tuple[type[BaseException], ...] = (),
    example: Callable[[int], dict[str, Any]] | None = None,
    into: JobRegistry | None = None,
    **actor_options: Any,
) -> Callable[[JobFunction], JobType]:
    """Declare a job type: `fn(job_id, data, context)` runs it, as the actor named `name`.

    `permanent_errors` fail the job at once (no retries); PermanentJobError always does.
    `example(n)` makes the data of the n-th synthetic job for `app.producer --generate`.
    Other keyword arguments are Dramatiq actor options. `into`: a registry other than the
    default one (tests, benchmarks).
    """

    def declare(fn: JobFunction) -> JobType:
        declared = JobType(
            name=name,
            schema=schema,
            fn=fn,
            queue=queue,
            permanent_errors=permanent_errors,
            options=actor_options,
            **({"example": example} if example is not None else {}),
        )
        (registry if into is None else into).add(declared)
        return declared

    return declare


def load_job_types() -> JobRegistry:
    """The registry, once every module of app/actors/ has declared its job types."""
    package = importlib.import_module(JOB_TYPES_PACKAGE)
    for module in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{JOB_TYPES_PACKAGE}.{module.name}")
    return registry
