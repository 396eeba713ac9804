"""The one settings object, built once from the environment."""

from __future__ import annotations

import dataclasses
import ipaddress
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import SplitResult, parse_qsl, quote, urlencode, urlsplit, urlunsplit

from app.errors import SettingsError

T = TypeVar("T")

# An unreachable Redis must fail a request in seconds, never hang it.
REDIS_CONNECT_TIMEOUT_S = 2.0
REDIS_SOCKET_TIMEOUT_S = 5.0
#: Sentinels listen on this port unless REDIS_SENTINELS names another.
SENTINEL_PORT = 26379
#: The longest REDIS_WAIT_TIMEOUT_MS: the enqueue's write and its WAIT stay within the API's 4 s deadline.
MAX_WAIT_TIMEOUT_MS = 3_000


@dataclass(frozen=True, repr=False)
class Settings:
    """Everything the API, workers, scheduler and producer read from the environment."""

    redis_url: str = "redis://localhost:6379/0"
    redis_url_is_default: bool = True
    #: Sentinels that name the master, as (host, port); empty: REDIS_URL's host is the Redis.
    #: With sentinels, REDIS_URL gives only the database, the credentials, TLS and the options.
    redis_sentinels: tuple[tuple[str, int], ...] = ()
    redis_sentinel_master: str = ""
    redis_sentinel_password: str = field(default="", repr=False)
    #: REDIS_URL is a node of a Redis Cluster (any one: the others are found from it); each queue's
    #: keys then carry its hash tag (app/keys.py), and each write goes to the node of its queue.
    redis_cluster: bool = False
    #: Replicas an enqueue waits for (WAIT) before it answers 2xx; 0: it does not wait.
    redis_wait_replicas: int = 0
    redis_wait_timeout_ms: int = 1_000
    api_key: str = field(default="", repr=False)
    api_readonly_key: str = field(default="", repr=False)
    api_port: int = 3002
    max_retries: int = 5
    retry_min_backoff_ms: int = 15_000
    retry_max_backoff_ms: int = 3_600_000
    retry_enqueue_deadline_ms: int = 60_000
    job_time_limit_ms: int = 300_000
    smtp_url: str = field(default="", repr=False)
    mail_from: str = "taskqueue@localhost"
    mbox_path: Path = Path("var/mail/outbox.mbox")
    webhook_secret: str = field(default="", repr=False)
    webhook_timeout_s: float = 10.0
    webhook_allowed_hosts: tuple[str, ...] = ()
    heartbeat_timeout_ms: int = 30_000
    max_crash_deliveries: int = 3
    worker_prefetch: int = 64
    log_retention_seconds: int = 7 * 86_400
    #: How long succeeded and failed records are kept (0: LOG_RETENTION_SECONDS).
    succeeded_retention_seconds: int = 0
    failed_retention_seconds: int = 0
    #: At most this many succeeded / failed records are kept, the oldest going first (0: no cap).
    max_succeeded_records: int = 0
    max_failed_records: int = 0
    cleanup_batch_size: int = 500
    idempotency_ttl_seconds: int = 86_400
    max_body_bytes: int = 1_048_576
    max_batch_jobs: int = 1_000
    #: The largest result a job may return, in bytes of compact JSON (more fails the job).
    result_max_bytes: int = 16_384
    metrics_port: int = 9191
    metrics_host: str = "127.0.0.1"
    metrics_dir: Path = Path("var/metrics")
    namespace: str = "taskqueue"
    #: Modules besides app/actors/ that declare job types (imported by every process).
    job_modules: tuple[str, ...] = ()
    #: The TOML file of recurring jobs (app/schedules.py), read by the API, the workers and the scheduler.
    schedules_file: Path = Path("schedules.toml")
    log_level: str = "INFO"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read settings from the environment; a wrong value raises SettingsError naming it."""
        env = os.environ if environ is None else environ
        reader = _Reader(env)
        redis_url, is_default = _redis_url(env, reader)
        sentinels = _sentinels(env)
        values: dict[str, Any] = {
            "redis_url": redis_url,
            "redis_url_is_default": is_default,
            "redis_sentinels": sentinels,
            "redis_sentinel_master": _sentinel_master(env, sentinels, redis_url),
            "redis_sentinel_password": env.get("REDIS_SENTINEL_PASSWORD", ""),
            "redis_cluster": _cluster(reader, sentinels),
            "redis_wait_replicas": reader.integer("REDIS_WAIT_REPLICAS", cls.redis_wait_replicas, low=0, high=100),
            # Below the API's 4 s deadline for a write (app/api/errors.py), WAIT included.
            "redis_wait_timeout_ms": reader.integer(
                "REDIS_WAIT_TIMEOUT_MS", cls.redis_wait_timeout_ms, low=1, high=MAX_WAIT_TIMEOUT_MS
            ),
            "api_key": env.get("API_KEY", "").strip(),
            "api_readonly_key": env.get("API_READONLY_KEY", "").strip(),
            "api_port": reader.integer("API_PORT", cls.api_port, low=1, high=65_535),
            "max_retries": reader.integer("MAX_RETRIES", cls.max_retries, low=0, high=100),
            "retry_min_backoff_ms": reader.integer("RETRY_MIN_BACKOFF_MS", cls.retry_min_backoff_ms, low=1),
            "retry_max_backoff_ms": reader.integer("RETRY_MAX_BACKOFF_MS", cls.retry_max_backoff_ms, low=1),
            "retry_enqueue_deadline_ms": reader.integer(
                "RETRY_ENQUEUE_DEADLINE_MS", cls.retry_enqueue_deadline_ms, low=0
            ),
            "job_time_limit_ms": reader.integer("JOB_TIME_LIMIT_MS", cls.job_time_limit_ms, low=1),
            "smtp_url": reader.url("SMTP_URL", ("smtp", "smtp+starttls", "smtps")),
            "mail_from": env.get("MAIL_FROM", cls.mail_from),
            "mbox_path": Path(env.get("MBOX_PATH", str(cls.mbox_path))),
            "webhook_secret": env.get("WEBHOOK_SECRET", ""),
            "webhook_timeout_s": reader.number("WEBHOOK_TIMEOUT_S", cls.webhook_timeout_s, low=0.1),
            "webhook_allowed_hosts": reader.hosts("WEBHOOK_ALLOWED_HOSTS"),
            "heartbeat_timeout_ms": reader.integer(
                "HEARTBEAT_TIMEOUT_MS", cls.heartbeat_timeout_ms, low=500, high=3_600_000
            ),
            "max_crash_deliveries": reader.integer("MAX_CRASH_DELIVERIES", cls.max_crash_deliveries, low=1),
            "worker_prefetch": reader.integer("WORKER_PREFETCH", cls.worker_prefetch, low=1, high=65_535),
            "log_retention_seconds": reader.integer("LOG_RETENTION_SECONDS", cls.log_retention_seconds, low=1),
            "succeeded_retention_seconds": reader.integer(
                "SUCCEEDED_RETENTION_SECONDS", cls.succeeded_retention_seconds, low=0
            ),
            "failed_retention_seconds": reader.integer("FAILED_RETENTION_SECONDS", cls.failed_retention_seconds, low=0),
            "max_succeeded_records": reader.integer("MAX_SUCCEEDED_RECORDS", cls.max_succeeded_records, low=0),
            "max_failed_records": reader.integer("MAX_FAILED_RECORDS", cls.max_failed_records, low=0),
            "cleanup_batch_size": reader.integer("CLEANUP_BATCH_SIZE", cls.cleanup_batch_size, low=1),
            "idempotency_ttl_seconds": reader.integer("IDEMPOTENCY_TTL_SECONDS", cls.idempotency_ttl_seconds, low=1),
            "max_body_bytes": reader.integer("MAX_BODY_BYTES", cls.max_body_bytes, low=1_024),
            "max_batch_jobs": reader.integer("MAX_BATCH_JOBS", cls.max_batch_jobs, low=1, high=100_000),
            "result_max_bytes": reader.integer("RESULT_MAX_BYTES", cls.result_max_bytes, low=16, high=1_048_576),
            "metrics_port": reader.integer("METRICS_PORT", cls.metrics_port, low=0, high=65_535),
            "metrics_host": reader.ip("METRICS_HOST", cls.metrics_host),
            "metrics_dir": Path(env.get("METRICS_DIR", str(cls.metrics_dir))),
            "namespace": reader.word("TASKQUEUE_NAMESPACE", cls.namespace),
            "job_modules": reader.modules("JOB_MODULES"),
            "schedules_file": reader.path("SCHEDULES_FILE", cls.schedules_file, suffix=".toml"),
            "log_level": reader.choice("LOG_LEVEL", cls.log_level, ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")),
        }
        if values["api_readonly_key"] and values["api_readonly_key"] == values["api_key"]:
            raise SettingsError(
                "API_READONLY_KEY is the same as API_KEY, which would make the read-only key a full one: "
                "give it a value of its own, or leave it unset"
            )
        if values["retry_max_backoff_ms"] < values["retry_min_backoff_ms"]:
            raise SettingsError(
                f"RETRY_MAX_BACKOFF_MS={values['retry_max_backoff_ms']} is smaller than "
                f"RETRY_MIN_BACKOFF_MS={values['retry_min_backoff_ms']}: raise the maximum or lower the minimum"
            )
        return cls(**values)

    def require_api_key(self) -> None:
        """Stop the API at start when no key is configured."""
        if not self.api_key:
            raise SettingsError(
                "API_KEY is not set: the API refuses to start without one. Generate one with "
                '`python -c "import secrets; print(secrets.token_urlsafe(32))"` and export API_KEY=<it> '
                "(or put it in .env, see .env.example)"
            )

    def __repr__(self) -> str:
        # Logged at times: keys and secrets show only whether they are set, URLs without their password.
        shown = []
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            if item.name in _SECRETS:
                value = "***" if value else ""
            elif item.name in _URLS:
                value = redact_url(value)
            shown.append(f"{item.name}={value!r}")
        return f"Settings({', '.join(shown)})"


_SECRETS = frozenset({"api_key", "api_readonly_key", "webhook_secret", "redis_sentinel_password"})
_URLS = frozenset({"redis_url", "smtp_url"})


def _redis_url(env: Mapping[str, str], reader: _Reader) -> tuple[str, bool]:
    url = env.get("REDIS_URL", "").strip()
    is_default = False
    if not url:
        host = env.get("REDIS_HOST", "").strip()
        if host:
            port = reader.integer("REDIS_PORT", 6379, low=1, high=65_535)
            url = f"redis://{host}:{port}/0"
        else:
            url, is_default = Settings.redis_url, True
    parts = urlsplit(url)
    shown = redact_url(url)
    if parts.scheme not in ("redis", "rediss", "unix") or not (parts.hostname or parts.path):
        raise SettingsError(
            f"REDIS_URL={shown!r} is not a Redis URL: use redis://[:password@]host:port/db or rediss:// for TLS"
        )
    _require_port(parts, f"REDIS_URL={shown!r} has an invalid port: use a number from 1 to 65535")
    parts = _with_credentials(env, parts, shown)
    query = dict(parse_qsl(parts.query))
    query.setdefault("socket_connect_timeout", str(REDIS_CONNECT_TIMEOUT_S))
    query.setdefault("socket_timeout", str(REDIS_SOCKET_TIMEOUT_S))
    query.setdefault("health_check_interval", "30")
    return urlunsplit(parts._replace(query=urlencode(query))), is_default


def _with_credentials(env: Mapping[str, str], parts: SplitResult, shown: str) -> SplitResult:
    """REDIS_USERNAME and REDIS_PASSWORD (the data nodes' credentials) put into the URL, where
    every client reads them; a URL with credentials of its own keeps them, and both is an error."""
    username, password = env.get("REDIS_USERNAME", ""), env.get("REDIS_PASSWORD", "")
    if not (username or password):
        return parts
    if parts.username or parts.password:
        raise SettingsError(
            f"REDIS_URL={shown!r} has credentials and REDIS_USERNAME or REDIS_PASSWORD is set too: "
            "give them in one place"
        )
    userinfo = f"{quote(username, safe='')}:{quote(password, safe='')}@"
    return parts._replace(netloc=userinfo + parts.netloc)


def _sentinels(env: Mapping[str, str]) -> tuple[tuple[str, int], ...]:
    """REDIS_SENTINELS: host:port, comma-separated ([v6::address]:port for IPv6; the port defaults to 26379)."""
    raw = env.get("REDIS_SENTINELS", "")
    found = []
    for item in (entry.strip() for entry in raw.split(",")):
        if not item:
            continue
        parts = urlsplit(f"//{item}")
        try:
            port = SENTINEL_PORT if parts.port is None else parts.port
        except ValueError:
            port = 0
        if not parts.hostname or not 1 <= port <= 65_535 or parts.path or "@" in item:
            raise SettingsError(
                f"REDIS_SENTINELS entry {item!r} is not valid: expected host:port (like sentinel-1:26379), "
                "comma-separated"
            )
        found.append((parts.hostname, port))
    return tuple(found)


def _sentinel_master(env: Mapping[str, str], sentinels: tuple[tuple[str, int], ...], redis_url: str) -> str:
    name = env.get("REDIS_SENTINEL_MASTER", "").strip()
    if sentinels and not name:
        raise SettingsError(
            "REDIS_SENTINELS is set but REDIS_SENTINEL_MASTER is not: give the name the sentinels monitor the "
            "master under (`sentinel monitor <name> ...` in their configuration)"
        )
    if name and not sentinels:
        raise SettingsError(
            f"REDIS_SENTINEL_MASTER={name!r} is set but REDIS_SENTINELS is not: list the sentinels (host:port,...)"
        )
    if sentinels and urlsplit(redis_url).scheme == "unix":
        raise SettingsError(
            "REDIS_URL is a unix socket and REDIS_SENTINELS is set: the sentinels name a host and port, "
            "so use redis:///<db> (or rediss:///<db>) with them"
        )
    return name


def _cluster(reader: _Reader, sentinels: tuple[tuple[str, int], ...]) -> bool:
    cluster = reader.boolean("REDIS_CLUSTER", Settings.redis_cluster)
    if cluster and sentinels:
        raise SettingsError(
            "REDIS_CLUSTER and REDIS_SENTINELS are both set: a Redis Cluster fails over by itself (its "
            "replicas), so point REDIS_URL at one of its nodes and leave REDIS_SENTINELS out"
        )
    return cluster


def _require_port(parts: SplitResult, message: str) -> None:
    """SettingsError(message) unless the URL's port, if any, is a valid one."""
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise SettingsError(message) from None


def redact_url(url: str) -> str:
    """A URL safe to print: its password replaced with ***."""
    parts = urlsplit(url)
    if parts.password:
        userinfo, _, hostport = parts.netloc.rpartition("@")
        user = userinfo.partition(":")[0]
        return urlunsplit(parts._replace(netloc=f"{user}:***@{hostport}"))
    return url


def hand_to_prometheus_client(multiprocess_dir: Path) -> None:
    """The one write to the process's environment: prometheus-client's multiprocess mode reads
    its directory from PROMETHEUS_MULTIPROC_DIR and nowhere else (when a metric is created)."""
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(multiprocess_dir)


_BOOLEANS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


class _Reader:
    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env

    def _get(self, name: str, default: T, convert: Callable[[str], T], hint: str) -> T:
        raw = self.env.get(name)
        if raw is None or raw.strip() == "":
            return default
        try:
            return convert(raw.strip())
        except (ValueError, TypeError):
            raise SettingsError(f"{name}={raw!r} is not valid: expected {hint}") from None

    def integer(self, name: str, default: int, *, low: int | None = None, high: int | None = None) -> int:
        value = self._get(name, default, int, "a whole number")
        self._bounds(name, value, low, high)
        return value

    def boolean(self, name: str, default: bool) -> bool:
        raw = self.env.get(name, "").strip().lower()
        if not raw:
            return default
        if raw not in _BOOLEANS:
            raise SettingsError(f"{name}={raw!r} is not valid: expected true or false (or 1 or 0)")
        return _BOOLEANS[raw]

    def number(self, name: str, default: float, *, low: float | None = None) -> float:
        value = self._get(name, default, float, "a number")
        self._bounds(name, value, low, None)
        return value

    @staticmethod
    def _bounds(name: str, value: float, low: float | None, high: float | None) -> None:
        if low is not None and value < low or high is not None and value > high:
            span = f"between {low} and {high}" if high is not None else f"at least {low}"
            raise SettingsError(f"{name}={value!r} is out of range: expected a value {span}")

    def url(self, name: str, schemes: tuple[str, ...]) -> str:
        raw = self.env.get(name, "").strip()
        if not raw:
            return ""
        parts = urlsplit(raw)
        if parts.scheme not in schemes or not parts.hostname:
            raise SettingsError(
                f"{name}={redact_url(raw)!r} is not valid: expected {' or '.join(s + '://host:port' for s in schemes)}"
            )
        _require_port(parts, f"{name}={redact_url(raw)!r} has an invalid port")
        return raw

    def hosts(self, name: str) -> tuple[str, ...]:
        raw = self.env.get(name, "")
        items = tuple(item.strip().lower() for item in raw.split(",") if item.strip())
        for item in items:
            if "/" in item:
                try:
                    ipaddress.ip_network(item, strict=False)
                except ValueError:
                    raise SettingsError(f"{name} entry {item!r} is not a valid CIDR range") from None
        return items

    def modules(self, name: str) -> tuple[str, ...]:
        items = tuple(item.strip() for item in self.env.get(name, "").split(",") if item.strip())
        for item in items:
            if not all(part.isidentifier() for part in item.split(".")):
                raise SettingsError(f"{name} entry {item!r} is not a module name (like myapp.jobs)")
        return items

    def path(self, name: str, default: Path, *, suffix: str) -> Path:
        raw = self.env.get(name, "").strip()
        if not raw:
            return default
        if not raw.endswith(suffix):
            raise SettingsError(f"{name}={raw!r} is not valid: expected the path of a {suffix} file")
        return Path(raw)

    def ip(self, name: str, default: str) -> str:
        value = self.env.get(name, "").strip() or default
        try:
            ipaddress.ip_address(value)
        except ValueError:
            if value != "localhost":
                raise SettingsError(f"{name}={value!r} is not an IP address to bind to") from None
        return value

    def word(self, name: str, default: str) -> str:
        value = self.env.get(name, "").strip() or default
        if not value.replace("_", "").replace("-", "").isalnum():
            raise SettingsError(f"{name}={value!r} is not valid: use letters, digits, '-' and '_'")
        return value

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        value = (self.env.get(name, "").strip() or default).upper()
        if value not in choices:
            raise SettingsError(f"{name}={value!r} is not valid: expected one of {', '.join(choices)}")
        return value
