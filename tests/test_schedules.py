"""The schedules file: what it declares, and the error each mistake stops a process with."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from app.errors import SettingsError
from app.jobs import load_job_types
from app.schedules import load_schedules, parse_schedules
from app.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
REGISTRY = load_job_types()
FILE = Path("schedules.toml")


def parse(text: str) -> list[dict[str, object]]:
    return [
        {"name": s.name, "cron": s.cron.expression, "timezone": s.timezone, "jobName": s.job_name, "data": s.data}
        for s in parse_schedules(text, FILE, REGISTRY, Settings())
    ]


def refused(text: str) -> str:
    with pytest.raises(SettingsError) as raised:
        parse_schedules(text, FILE, REGISTRY, Settings())
    return str(raised.value)


def test_the_repository_file_runs_cleanup_every_day() -> None:
    schedules = load_schedules(Settings(schedules_file=ROOT / "schedules.toml"), REGISTRY)
    cleanup = next(s for s in schedules if s.job_name == "cleanupJob")
    assert cleanup.cron.expression == "@daily"
    assert cleanup.next_run(datetime(2024, 6, 1, 12, tzinfo=UTC)) == datetime(2024, 6, 2, tzinfo=UTC)


def test_a_schedule_with_a_zone_and_data() -> None:
    text = """
[[schedules]]
name = "digest"
cron = "0 8 * * mon-fri"
timezone = "Europe/Paris"
jobName = "emailJob"
data = { email = "ops@example.com", subject = "Digest" }

[[schedules]]
name = "nightly-cleanup"
cron = "0 3 * * *"
jobName = "cleanupJob"
"""
    assert parse(text) == [
        {
            "name": "digest",
            "cron": "0 8 * * mon-fri",
            "timezone": "Europe/Paris",
            "jobName": "emailJob",
            "data": {"email": "ops@example.com", "subject": "Digest", "body": ""},
        },
        {"name": "nightly-cleanup", "cron": "0 3 * * *", "timezone": "UTC", "jobName": "cleanupJob", "data": {}},
    ]


def test_an_empty_file_has_no_schedules() -> None:
    assert parse("# nothing yet\n") == []


def entry(**fields: str) -> str:
    values = {"name": '"s1"', "cron": '"@daily"', "jobName": '"cleanupJob"', **fields}
    return "[[schedules]]\n" + "".join(f"{key} = {value}\n" for key, value in values.items() if value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (entry(jobName='"reportJob"'), "schedules.toml: schedule 's1': unknown jobName 'reportJob': use one of "),
        (entry(cron='"61 * * * *"'), "schedule 's1': cron '61 * * * *' is not valid: minute field: 61 is out of"),
        (entry(cron='"0 0 * *"'), "schedule 's1': cron '0 0 * *' is not valid: 4 fields: expected 5"),
        (entry(timezone='"Europe/Pariss"'), "schedule 's1': unknown time zone 'Europe/Pariss': use an IANA name"),
        (
            entry(jobName='"emailJob"', data='{ email = "not an address" }'),
            "schedule 's1': data for emailJob is invalid: data.email: ",
        ),
        (entry(data="{ extra = 1 }"), "schedule 's1': data for cleanupJob is invalid: data.extra: "),
        (entry(name=""), "schedule #1: missing name (each schedule needs name, cron, jobName)"),
        (entry(every='"day"'), "schedule 's1': unknown key(s) every: the keys are "),
        (entry(name='"has space"'), "schedule 'has space': name must be 1 to 64 letters"),
        (entry() + entry(), "schedule 's1' is declared twice"),
        ("[[schedule]]\nname = 'x'\n", "unknown top-level key(s) schedule: declare each schedule as [[schedules]]"),
        ("[[schedules]\n", "schedules.toml: not valid TOML: "),
    ],
)
def test_each_mistake_names_the_file_the_schedule_and_the_problem(text: str, message: str) -> None:
    assert message in refused(text)


def test_the_known_job_types_are_listed() -> None:
    assert "cleanupJob, emailJob, webhookJob" in refused(entry(jobName='"nope"'))


def test_a_missing_file_names_the_setting(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(SettingsError, match="SCHEDULES_FILE=.*nope.toml.* does not exist"):
        load_schedules(Settings(schedules_file=missing), REGISTRY)


def test_the_setting() -> None:
    assert Settings.from_env({}).schedules_file == Path("schedules.toml")
    assert Settings.from_env({"SCHEDULES_FILE": "/etc/tq/s.toml"}).schedules_file == Path("/etc/tq/s.toml")
    with pytest.raises(SettingsError, match=r"SCHEDULES_FILE='s.yaml' is not valid: expected the path of a .toml"):
        Settings.from_env({"SCHEDULES_FILE": "s.yaml"})
