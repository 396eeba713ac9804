"""Recurring jobs: declared in one TOML file (SCHEDULES_FILE), checked when any process starts.

    [[schedules]]
    name = "cleanup"          # letters, digits, '.', '_', '-'; unique
    cron = "@daily"           # app/cron.py
    timezone = "UTC"          # an IANA name; UTC if left out
    jobName = "cleanupJob"    # a declared job type
    data = {}                 # checked against the job type's schema; {} if left out

The scheduler (`periodiq app.actors`, app/scheduler.py) enqueues each run as an ordinary job.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from app.cron import Cron
from app.errors import InvalidJobData, SettingsError, UnknownJob
from app.jobs import JobRegistry
from app.settings import Settings

NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_REQUIRED = ("name", "cron", "jobName")
_ALLOWED = (*_REQUIRED, "timezone", "data")
DEFAULT_TIMEZONE = "UTC"


@dataclass(frozen=True)
class Schedule:
    """One recurring job: when it runs (a cron expression in a time zone) and the job it enqueues."""

    name: str
    cron: Cron
    timezone: str
    job_name: str
    #: The job's data, as validated by its job type.
    data: dict[str, Any]

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def next_run(self, after: datetime) -> datetime:
        """Its first run strictly after `after` (aware), in its time zone."""
        return self.cron.next_after(after, self.zone)


def load_schedules(settings: Settings, registry: JobRegistry) -> tuple[Schedule, ...]:
    """The schedules of SCHEDULES_FILE, each checked; SettingsError naming the file, the schedule
    and what is wrong otherwise."""
    path = settings.schedules_file
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SettingsError(
            f"SCHEDULES_FILE={str(path)!r} does not exist: create it (see the README's Schedules section) "
            "or point SCHEDULES_FILE at one"
        ) from None
    except (OSError, UnicodeDecodeError) as error:
        raise SettingsError(f"SCHEDULES_FILE={str(path)!r} cannot be read: {error}") from None
    return parse_schedules(text, path, registry, settings)


def parse_schedules(text: str, path: Path, registry: JobRegistry, settings: Settings) -> tuple[Schedule, ...]:
    """The schedules of a file's text (`path` names it in errors)."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise SettingsError(f"{path}: not valid TOML: {error}") from None
    unknown = set(document) - {"schedules"}
    if unknown:
        raise SettingsError(
            f"{path}: unknown top-level key(s) {', '.join(sorted(unknown))}: declare each schedule as [[schedules]]"
        )
    entries = document.get("schedules", [])
    if not isinstance(entries, list) or not all(isinstance(entry, dict) for entry in entries):
        raise SettingsError(f"{path}: schedules must be an array of tables: declare each one as [[schedules]]")
    schedules: list[Schedule] = []
    seen: set[str] = set()
    for number, entry in enumerate(entries, start=1):
        schedule = _schedule(entry, number, path, registry, settings)
        if schedule.name in seen:
            raise SettingsError(f"{path}: schedule {schedule.name!r} is declared twice: give each a name of its own")
        seen.add(schedule.name)
        schedules.append(schedule)
    return tuple(schedules)


def _schedule(entry: dict[str, Any], number: int, path: Path, registry: JobRegistry, settings: Settings) -> Schedule:
    name = entry.get("name")
    where = f"{path}: schedule {name!r}" if isinstance(name, str) else f"{path}: schedule #{number}"

    def fail(problem: str) -> SettingsError:
        return SettingsError(f"{where}: {problem}")

    missing = [key for key in _REQUIRED if key not in entry]
    if missing:
        raise fail(f"missing {', '.join(missing)} (each schedule needs {', '.join(_REQUIRED)})")
    unknown = sorted(set(entry) - set(_ALLOWED))
    if unknown:
        raise fail(f"unknown key(s) {', '.join(unknown)}: the keys are {', '.join(_ALLOWED)}")
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise fail("name must be 1 to 64 letters, digits, '.', '_' or '-'")
    cron_text, timezone = entry["cron"], entry.get("timezone", DEFAULT_TIMEZONE)
    if not isinstance(cron_text, str):
        raise fail('cron must be a string such as "0 3 * * *" or "@daily"')
    try:
        cron = Cron.parse(cron_text)
    except ValueError as error:
        raise fail(f"cron {cron_text!r} is not valid: {error}") from None
    if not isinstance(timezone, str):
        raise fail('timezone must be a string such as "Europe/Paris"')
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise fail(f"unknown time zone {timezone!r}: use an IANA name such as Europe/Paris or UTC") from None
    try:
        job_type = registry.get(entry["jobName"])
    except UnknownJob as error:
        raise fail(str(error)) from None
    data = entry.get("data", {})
    try:
        clean = job_type.validate(data, settings)
    except InvalidJobData as error:
        detail = "; ".join(f"{field}: {reason}" for field, reason in error.problems.items())
        raise fail(f"data for {job_type.name} is invalid: {detail}") from None
    return Schedule(name=name, cron=cron, timezone=timezone, job_name=job_type.name, data=clean)
