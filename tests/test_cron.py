"""Cron expressions: parsing with reasons, and next runs in a time zone (DST changes, Sundays)."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from app.cron import Cron

PARIS = ZoneInfo("Europe/Paris")
NEW_YORK = ZoneInfo("America/New_York")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def runs(expression: str, after: datetime, zone: ZoneInfo, count: int) -> list[str]:
    cron, found = Cron.parse(expression), []
    for _ in range(count):
        after = cron.next_after(after, zone)
        found.append(after.isoformat())
    return found


def test_a_daily_run_is_at_midnight_of_its_zone() -> None:
    assert runs("@daily", utc(2024, 6, 1, 12), PARIS, 2) == ["2024-06-02T00:00:00+02:00", "2024-06-03T00:00:00+02:00"]
    assert runs("0 3 * * *", utc(2024, 1, 10, 2, 59), UTC, 1) == ["2024-01-10T03:00:00+00:00"]


def test_next_run_is_strictly_after() -> None:
    assert runs("0 3 * * *", utc(2024, 1, 10, 3), UTC, 1) == ["2024-01-11T03:00:00+00:00"]


@pytest.mark.parametrize("sunday", ["0", "7", "sun", "SUN"])
def test_sunday_fires_however_it_is_written(sunday: str) -> None:
    # periodiq's own cron never fires on a Sunday written 0 or sun.
    # 2024-06-02 is a Sunday; in New York 09:00 is 13:00 UTC.
    assert runs(f"0 9 * * {sunday}", utc(2024, 6, 1), NEW_YORK, 2) == [
        "2024-06-02T09:00:00-04:00",
        "2024-06-09T09:00:00-04:00",
    ]


def test_weekly_is_sunday_midnight() -> None:
    assert runs("@weekly", utc(2024, 6, 1), UTC, 1) == ["2024-06-02T00:00:00+00:00"]


def test_weekday_range_and_names() -> None:
    # Friday 2024-06-07 18:00 -> Monday.
    assert runs("30 8 * * mon-fri", utc(2024, 6, 7, 18), UTC, 2) == [
        "2024-06-10T08:30:00+00:00",
        "2024-06-11T08:30:00+00:00",
    ]


def test_day_of_month_or_day_of_week_when_both_are_restricted() -> None:
    # The 15th or any Monday (Vixie cron): from Thu 2024-06-13, Sat 15th then Mon 17th.
    assert runs("0 0 15 * mon", utc(2024, 6, 13), UTC, 2) == ["2024-06-15T00:00:00+00:00", "2024-06-17T00:00:00+00:00"]


def test_a_day_the_zone_crosses_into_on_another_utc_day() -> None:
    # 00:30 in Paris on 1 June is 22:30 UTC on 31 May.
    assert runs("30 0 1 * *", utc(2024, 5, 31, 12), PARIS, 1) == ["2024-06-01T00:30:00+02:00"]


def test_a_run_in_the_hour_clocks_skip_runs_that_much_later() -> None:
    # Paris, 31 March 2024: 02:00 becomes 03:00. 02:30 runs at 03:30, once; then as usual.
    assert runs("30 2 * * *", utc(2024, 3, 30, 12), PARIS, 2) == [
        "2024-03-31T03:30:00+02:00",
        "2024-04-01T02:30:00+02:00",
    ]
    # Asked just after the jump, the skipped run is still ahead.
    assert runs("30 2 * * *", utc(2024, 3, 31, 1, 10), PARIS, 1) == ["2024-03-31T03:30:00+02:00"]
    # An hourly schedule does not run twice at 03:00.
    assert runs("0 * * * *", utc(2024, 3, 31, 0, 30), PARIS, 2) == [
        "2024-03-31T03:00:00+02:00",
        "2024-03-31T04:00:00+02:00",
    ]


def test_a_time_that_happens_twice_runs_once_the_first_time() -> None:
    # Paris, 27 October 2024: 03:00 becomes 02:00 again.
    assert runs("30 2 * * *", utc(2024, 10, 26, 12), PARIS, 2) == [
        "2024-10-27T02:30:00+02:00",
        "2024-10-28T02:30:00+01:00",
    ]
    # Asked during the second 02:xx, the next hourly run is 03:00.
    assert runs("30 * * * *", utc(2024, 10, 27, 1, 10), PARIS, 1) == ["2024-10-27T03:30:00+01:00"]


def test_seconds_field_and_a_leap_day() -> None:
    assert runs("*/20 * * * * *", utc(2024, 1, 1, 0, 0, 5), UTC, 3) == [
        "2024-01-01T00:00:20+00:00",
        "2024-01-01T00:00:40+00:00",
        "2024-01-01T00:01:00+00:00",
    ]
    assert runs("0 0 29 2 *", utc(2024, 3, 1), UTC, 1) == ["2028-02-29T00:00:00+00:00"]


@pytest.mark.parametrize(
    ("expression", "reason"),
    [
        ("* * *", "3 fields: expected 5"),
        ("61 * * * *", "minute field: 61 is out of range 0-59"),
        ("* 24 * * *", "hour field: 24 is out of range 0-23"),
        ("* * 0 * *", "day of month field: 0 is out of range 1-31"),
        ("* * * 13 *", "month field: 13 is out of range 1-12"),
        ("* * * * 8", "day of week field: 8 is out of range 0-7"),
        ("*/0 * * * *", "step '0' is not a whole number"),
        ("5-1 * * * *", "range '5-1' runs backwards"),
        ("x * * * *", "'x' is not a number"),
        ("* * * foo *", "'foo' is not a number or a name (jan, feb"),
        ("@sometimes", "unknown name '@sometimes'"),
        ("0 0 30 2 *", "it never runs"),
    ],
)
def test_a_bad_expression_says_why(expression: str, reason: str) -> None:
    with pytest.raises(ValueError, match=None) as raised:
        Cron.parse(expression)
    assert reason in str(raised.value)
