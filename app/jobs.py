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

from app.errors import InvalidJobData, JobCanceled, PermanentJobError, SettingsError, UnknownJob
from app.keys import DEFAULT_PRIORITY, HASH_TAG_CHARS, PRIORITY_LEVELS, RESERVED_QUEUE_SUFFIXES
from app.settings import Settings

if TYPE_CHECKING:
    import redis

    from app.connection.shards import Shards
    from app.keys import Keys
    from app.middleware.current_job import RunningJob

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


def _no_running_job() -> RunningJob:
    raise RuntimeError("context.job needs the worker's CurrentJob middleware (app/middleware/current_job.py)")


@dataclass(frozen=True)
class JobContext:
    """What a running job may use besides its data: the worker's settings and Redis, and the
    handle of the job itself (`job`)."""

    settings: Settings
    #: The Redis of the root keys (without a cluster: the one Redis).
    client: redis.Redis
    keys: Keys
    #: The Redis of each queue's keyspace (app/connection/shards.py).
    shards: Shards
    registry: JobRegistry
    #: The handle of the job the calling thread runs (app/middleware/current_job.py).
    current_job: Callable[[], RunningJob] = _no_running_job

    @property
    def job(self) -> RunningJob:
        """The job this thread runs: `.id`, `.name`, `.attempt`, `.progress(value, message)`,
        `.cancelled()`."""
        return self.current_job()


#: A job's function: `fn(job_id, data, context)`; what it returns (JSON, size-capped) is its result.
JobFunction = Callable[[str, dict[str, Any], JobContext], Any]


@dataclass(frozen=True)
class RateLimit:
    """At most `limit` starts of a job type per `per_seconds`, across all workers; with `key`, per
    value of `key(data)` (for example the host a webhook goes to)."""

    limit: int
    per_seconds: float = 1.0
    key: Callable[[dict[str, Any]], str] | None = None

    def __post_init__(self) -> None:
        if self.limit < 1 or self.per_seconds <= 0:
            raise ValueError(f"a rate limit needs limit >= 1 and per_seconds > 0, not {self.limit}/{self.per_seconds}")

    @property
    def window_ms(self) -> int:
        return max(1, int(self.per_seconds * 1000))


@dataclass(frozen=True)
class JobType:
    """A declared job type; `validate` is the one check every way in (API, producer) goes through."""

    name: str
    schema: type[pydantic.BaseModel]
    fn: JobFunction
    queue: str = DEFAULT_QUEUE
    #: Errors that fail the job at once (no retries); PermanentJobError always does.
    permanent_errors: tuple[type[BaseException], ...] = ()
    #: Dramatiq actor options (max_retries, min_backoff, max_backoff, time_limit, retry_when, periodic, ...).
    options: dict[str, Any] = field(default_factory=dict)
    example: Callable[[int], dict[str, Any]] = lambda number: {}
    #: The priority level its jobs get unless the enqueue names one (app/keys.py PRIORITY_LEVELS).
    priority: str = DEFAULT_PRIORITY
    #: At most this many of its jobs run at once across all workers (None: no limit).
    concurrency: int | None = None
    #: At most so many starts per period across all workers (None: no limit).
    rate_limit: RateLimit | None = None

    def __post_init__(self) -> None:
        if self.priority not in PRIORITY_LEVELS:
            raise ValueError(f"job type {self.name!r}: priority must be one of {', '.join(PRIORITY_LEVELS)}")
        if self.concurrency is not None and self.concurrency < 1:
            raise ValueError(f"job type {self.name!r}: concurrency must be 1 or more (or None for no limit)")
        if self.queue.endswith(RESERVED_QUEUE_SUFFIXES) or not self.queue:
            raise ValueError(
                f"job type {self.name!r}: queue {self.queue!r} may not be empty or end with "
                f"{', '.join(RESERVED_QUEUE_SUFFIXES)}"
            )
        if any(char in self.queue for char in HASH_TAG_CHARS):
            raise ValueError(
                f"job type {self.name!r}: queue {self.queue!r} may not hold {' or '.join(HASH_TAG_CHARS)} (on a "
                "Redis Cluster a queue's keys carry its name as their hash tag)"
            )

    @property
    def limited(self) -> bool:
        """Whether its starts are limited (a fetch must check them)."""
        return self.concurrency is not None or self.rate_limit is not None

    def rate_key(self, data: dict[str, Any]) -> str:
        """The rate key of a job with this data ('' when its rate limit has none)."""
        if self.rate_limit is None or self.rate_limit.key is None:
            return ""
        return str(self.rate_limit.key(data))

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
        # A canceled job is not retried either (the outcome recorder records it as canceled).
        return (PermanentJobError, JobCanceled, *self.permanent_errors)


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
        """The declared queues: those of the job types."""
        return sorted({job_type.queue for job_type in self._types.values()})

    def limited(self) -> list[JobType]:
        """The job types whose starts are limited (concurrency or rate)."""
        return [job_type for job_type in self._types.values() if job_type.limited]

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
    priority: str = DEFAULT_PRIORITY,
    concurrency: int | None = None,
    rate_limit: RateLimit | None = None,
    max_retries: int | None = None,
    time_limit_ms: int | None = None,
    min_backoff_ms: int | None = None,
    max_backoff_ms: int | None = None,
    permanent_errors: tuple[type[BaseException], ...] = (),
    example: Callable[[int], dict[str, Any]] | None = None,
    into: JobRegistry | None = None,
    **actor_options: Any,
) -> Callable[[JobFunction], JobType]:
    """Declare a job type: `fn(job_id, data, context)` runs it, as the actor named `name`.

    `queue`: the queue its jobs go to; `priority`: their level unless the enqueue names one;
    `concurrency`: at most this many run at once across all workers; `rate_limit`: at most so
    many starts per period (per key of the data, optionally). `max_retries`, `time_limit_ms`,
    `min_backoff_ms`, `max_backoff_ms`: this type's own values instead of the settings'.
    `permanent_errors` fail the job at once (no retries); PermanentJobError always does.
    `example(n)` makes the data of the n-th synthetic job for `app.producer --generate`.
    Other keyword arguments are Dramatiq actor options. `into`: a registry other than the
    default one (tests, benchmarks).
    """
    named = {
        "max_retries": max_retries,
        "time_limit": time_limit_ms,
        "min_backoff": min_backoff_ms,
        "max_backoff": max_backoff_ms,
    }
    options = {**{option: value for option, value in named.items() if value is not None}, **actor_options}

    def declare(fn: JobFunction) -> JobType:
        declared = JobType(
            name=name,
            schema=schema,
            fn=fn,
            queue=queue,
            priority=priority,
            concurrency=concurrency,
            rate_limit=rate_limit,
            permanent_errors=permanent_errors,
            options=options,
            **({"example": example} if example is not None else {}),
        )
        (registry if into is None else into).add(declared)
        return declared

    return declare


def load_job_types(modules: tuple[str, ...] = ()) -> JobRegistry:
    """The registry, once every module of app/actors/ and each of `modules` (the JOB_MODULES
    setting) has declared its job types."""
    package = importlib.import_module(JOB_TYPES_PACKAGE)
    for module in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{JOB_TYPES_PACKAGE}.{module.name}")
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as error:
            raise SettingsError(f"JOB_MODULES names {name!r}, which cannot be imported: {error}") from None
    return registry
