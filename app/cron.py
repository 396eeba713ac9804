"""Cron expressions, and the next run of one in a time zone (with its daylight-saving changes).

Five fields, `minute hour day-of-month month day-of-week`, or a name (`@daily`...); a sixth
field in front, seconds, is accepted for sub-minute schedules (tests use it). Each field takes
`*`, numbers, ranges `a-b`, steps `*/n` and `a-b/n`, lists `a,b`; months and weekdays also
take names (`jan`, `mon`). Sunday is 0 or 7 or `sun`, and `@weekly` is Sunday at midnight
(periodiq's own cron never fires on Sunday). As in Vixie cron, when both the day of month and the
day of week are restricted (neither starts with `*`), a day matching either one is a run day.

A run is a wall-clock time in the schedule's zone. Where clocks jump forward over it, it runs
that much later (02:30 runs at 03:30 when 02:00 becomes 03:00); where clocks go back and a
wall-clock time happens twice, it runs once, the first time.
"""

from __future__ import annotations

import bisect
import calendar
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

NAMED = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
#: (name, low, high, names) of each field, in order.
_FIELDS = (
    ("second", 0, 59, ()),
    ("minute", 0, 59, ()),
    ("hour", 0, 23, ()),
    ("day of month", 1, 31, ()),
    ("month", 1, 12, _MONTHS),
    ("day of week", 0, 7, _WEEKDAYS),
)
#: How far ahead a next run is looked for: a 29 February can be 8 years away (2096 to 2104).
_HORIZON_DAYS = 9 * 366
#: The largest jump of a zone's clock (Antarctica/Troll: 2 h), with a margin.
_LARGEST_JUMP = timedelta(hours=3)


@dataclass(frozen=True)
class Cron:
    """A parsed cron expression: the allowed values of each field, sorted."""

    expression: str
    seconds: tuple[int, ...]
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: tuple[int, ...]
    months: tuple[int, ...]
    #: 0 (Sunday) to 6.
    weekdays: tuple[int, ...]
    days_restricted: bool
    weekdays_restricted: bool

    @classmethod
    def parse(cls, expression: str) -> Cron:
        """The expression parsed, or ValueError saying what is wrong with it."""
        text = expression.strip()
        if text.startswith("@"):
            if text.lower() not in NAMED:
                raise ValueError(f"unknown name {text!r}: use one of {', '.join(NAMED)}")
            text = NAMED[text.lower()]
        fields = text.split()
        if len(fields) == 5:
            fields = ["0", *fields]
        elif len(fields) != 6:
            raise ValueError(
                f"{len(fields)} fields: expected 5 (minute hour day-of-month month day-of-week), "
                f"6 with seconds first, or one of {', '.join(NAMED)}"
            )
        values = [_field(raw, *spec) for raw, spec in zip(fields, _FIELDS, strict=True)]
        weekdays = tuple(sorted({day % 7 for day in values[5]}))
        cron = cls(
            expression=expression.strip(),
            seconds=values[0],
            minutes=values[1],
            hours=values[2],
            days=values[3],
            months=values[4],
            weekdays=weekdays,
            days_restricted=not fields[3].startswith("*"),
            weekdays_restricted=not fields[5].startswith("*"),
        )
        if cron.days_restricted and not cron.weekdays_restricted:
            longest = {month: 29 if month == 2 else calendar.monthrange(2001, month)[1] for month in cron.months}
            if not any(day <= longest[month] for month in cron.months for day in cron.days):
                raise ValueError("it never runs: none of its days of month exists in its months")
        return cron

    @property
    def every_second(self) -> bool:
        """Whether it has runs within a minute (a seconds field other than 0)."""
        return self.seconds != (0,)

    def runs_on(self, day: date) -> bool:
        if day.month not in self.months:
            return False
        in_days = day.day in self.days
        in_weekdays = day.isoweekday() % 7 in self.weekdays
        if self.days_restricted and self.weekdays_restricted:
            return in_days or in_weekdays
        return in_days and in_weekdays

    def next_after(self, after: datetime, zone: ZoneInfo) -> datetime:
        """The first run strictly after `after` (an aware datetime), as a time in `zone`."""
        after_utc = after.astimezone(UTC)
        local = after_utc.astimezone(zone)
        # A run skipped over by a jump forward happens after it, at wall time + jump: its wall
        # time can be before `local`'s. Start that much earlier (0 where clocks went back).
        earlier = (after_utc - _LARGEST_JUMP).astimezone(zone)
        jump = max(timedelta(0), _offset(local) - _offset(earlier))
        start = local.replace(tzinfo=None, microsecond=0) - jump
        for wall in self._walls_from(start):
            run = wall.replace(tzinfo=zone).astimezone(UTC)  # fold=0: the first of a repeated time
            if run > after_utc:
                return run.astimezone(zone)
        raise ValueError(f"{self.expression!r} has no run within {_HORIZON_DAYS // 366} years of {after}")

    def _walls_from(self, start: datetime) -> Iterator[datetime]:
        """The wall-clock times it runs at from `start` (naive) on, in order."""
        day = start.date()
        floor: tuple[int, int, int] | None = (start.hour, start.minute, start.second)
        for _ in range(_HORIZON_DAYS):
            if self.runs_on(day):
                for hour, minute, second in self._times_from(floor):
                    yield datetime.combine(day, time(hour, minute, second))
            day += timedelta(days=1)
            floor = None

    def _times_from(self, floor: tuple[int, int, int] | None) -> Iterator[tuple[int, int, int]]:
        """The times of day it runs at, from `floor` on (all of them if None)."""
        if floor is None:
            floor = (0, 0, 0)
        for hour in self.hours[bisect.bisect_left(self.hours, floor[0]) :]:
            minutes = self.minutes if hour > floor[0] else self.minutes[bisect.bisect_left(self.minutes, floor[1]) :]
            for minute in minutes:
                same = hour == floor[0] and minute == floor[1]
                seconds = self.seconds[bisect.bisect_left(self.seconds, floor[2]) :] if same else self.seconds
                for second in seconds:
                    yield hour, minute, second


def _offset(moment: datetime) -> timedelta:
    offset = moment.utcoffset()
    return offset if offset is not None else timedelta(0)


def _field(raw: str, name: str, low: int, high: int, names: tuple[str, ...]) -> tuple[int, ...]:
    """The values a field allows, or ValueError naming the field and the problem."""
    values: set[int] = set()
    for part in raw.lower().split(","):
        span, slash, step_text = part.partition("/")
        if span == "*":
            first, last = low, high
        elif "-" in span:
            first_text, _, last_text = span.partition("-")
            first, last = _value(first_text, name, low, high, names), _value(last_text, name, low, high, names)
            if first > last:
                raise ValueError(f"{name} field {raw!r}: range {span!r} runs backwards")
        else:
            first = _value(span, name, low, high, names)
            last = high if slash else first
        step = 1
        if slash:
            if not step_text.isdigit() or int(step_text) < 1:
                raise ValueError(f"{name} field {raw!r}: step {step_text!r} is not a whole number of 1 or more")
            step = int(step_text)
        values.update(range(first, last + 1, step))
    return tuple(sorted(values))


def _value(text: str, name: str, low: int, high: int, names: tuple[str, ...]) -> int:
    if text in names:
        return names.index(text) + (1 if names is _MONTHS else 0)
    if not text.isdigit():
        known = f" or a name ({', '.join(names)})" if names else ""
        raise ValueError(f"{name} field: {text!r} is not a number{known}")
    value = int(text)
    if not low <= value <= high:
        raise ValueError(f"{name} field: {value} is out of range {low}-{high}")
    return value
