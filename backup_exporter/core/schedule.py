"""Cron schedules with exactly the meaning of crontab(5): the arithmetic is croniter's, the trigger APScheduler's.

croniter computes every fire time (next and previous; crontab's day-of-month-OR-day-of-week rule; 0 and 7
for Sunday; month and day names; ranges and steps). What is still hand-written here, and why:

* Validation of each field (``_check_field``): croniter's errors do not say which field is wrong
  ("[61 * * * *] is not acceptable, out of range"), and it accepts extensions crontab(5) does not have
  (seconds and year fields, ``L``, ``W``, ``#``, ``?``), which a plan must not depend on.
* The DOM/DOW rule's edge: in crontab(5) a day field that *starts with* ``*`` (``*/2``) counts as
  unrestricted, so the two day fields are ANDed; croniter ORs unless told (``day_or=False``).
* The fall-back hour: cron(8) runs a fixed-time job (no ``*`` in its minute or hour field) once when the
  clocks go back, croniter returns both instants of the repeated wall-clock time; the second is dropped.
* ``_CronTrigger``: the few lines that let APScheduler 3.x ask croniter for the next fire time, so the daemon
  fires exactly when ``next_runs`` says (APScheduler's own ``CronTrigger.from_crontab`` numbers weekdays from
  Monday and always ANDs the day fields). Once slots have passed (the daemon was busy, or the wall clock
  jumped forward) it answers with the latest passed one, so the catch-up is one run and one step.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.triggers.base import BaseTrigger
from croniter import CroniterBadDateError, croniter

MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
# How far croniter looks for a match before giving up: leap days repeat every 4 years (8 across a century
# boundary), so 0 0 29 2 * is always found.
_SEARCH_YEARS = 9


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    names: Sequence[str] = ()
    name_base: int = 0


FIELDS = (
    _Field("minute", 0, 59),
    _Field("hour", 0, 23),
    _Field("day of month", 1, 31),
    _Field("month", 1, 12, MONTHS, 1),
    _Field("day of week", 0, 7, DAYS, 0),
)


class CronError(ValueError):
    """A cron expression that crontab(5) would not accept; the message says which field and why."""


def _value(token: str, field: _Field) -> int:
    lowered = token.lower()
    if field.names and lowered in field.names:
        return field.names.index(lowered) + field.name_base
    if not token.isdigit():
        raise CronError(f"{field.name} field: '{token}' is not a number"
                        + (f" or a name ({', '.join(field.names)})" if field.names else ""))
    value = int(token)
    if not field.low <= value <= field.high:
        raise CronError(f"{field.name} field: {value} is outside {field.low}-{field.high}")
    return value


def _check_field(text: str, field: _Field) -> list[int]:
    """Return the values a crontab field selects. Raises CronError naming the field and what is wrong."""
    values: set[int] = set()
    for part in text.split(","):
        if not part:
            raise CronError(f"{field.name} field: empty list element in '{text}'")
        base, _, step_text = part.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) == 0:
                raise CronError(f"{field.name} field: step '{step_text}' must be a positive number")
            step = int(step_text)
        if base == "*":
            low, high = field.low, field.high
        elif "-" in base:
            first, _, last = base.partition("-")
            low, high = _value(first, field), _value(last, field)
            if low > high:
                raise CronError(f"{field.name} field: range '{base}' runs backwards")
        else:
            low = _value(base, field)
            # crontab: "N/S" means N through the end of the field in steps of S
            high = field.high if step_text else low
        values.update(range(low, high + 1, step))
    return sorted(values)


class _CronTrigger(BaseTrigger):  # type: ignore[misc]
    """An APScheduler 3.x trigger that fires at the schedule's croniter times."""

    __slots__ = ("schedule",)

    def __init__(self, schedule: CronSchedule) -> None:
        self.schedule = schedule

    def get_next_fire_time(self, previous_fire_time: datetime | None, now: datetime) -> datetime | None:
        """Return the first fire time after the previous one (or at or after `now`), or None if never; when
        that time has already passed, the latest one at or before `now` instead.

        The daemon coalesces missed runs into one, so the slots in between would only be stepped through
        one croniter call each: after the wall clock jumps forward a month, a per-minute plan would cost
        43,200 of them inside APScheduler's loop. Returning the latest passed slot makes it one.
        """
        after = previous_fire_time if previous_fire_time is not None else now - timedelta(microseconds=1)
        runs = self.schedule.next_runs(after, 1)
        if not runs:
            return None
        if previous_fire_time is not None and runs[0] < now:
            latest = self.schedule.previous_run(now)
            if latest is not None and latest > runs[0]:
                runs = [latest]
        return runs[0].astimezone(self.schedule.timezone)

    def __str__(self) -> str:
        return f"cron[{self.schedule.expression!r}, {self.schedule.timezone.key}]"


@dataclass(frozen=True)
class CronSchedule:
    """A validated crontab(5) expression in a time zone."""

    expression: str  # as the operator wrote it
    timezone: ZoneInfo
    fields: str  # the five fields croniter reads (macros expanded, whitespace normalised)
    day_or: bool  # both day fields restricted: a day matching either runs (crontab's OR rule)
    fixed_time: bool  # no '*' in the minute or hour field: runs once when the clocks go back

    def trigger(self) -> BaseTrigger:
        """Return an APScheduler 3.x trigger that fires exactly at ``next_runs``."""
        return _CronTrigger(self)

    def _iter(self, start: datetime) -> croniter:
        return croniter(self.fields, start.astimezone(self.timezone), day_or=self.day_or,
                        max_years_between_matches=_SEARCH_YEARS)

    def _repeated(self, fire: datetime) -> bool:
        """Return True for the second instant of a repeated wall-clock time of a fixed-time schedule."""
        if not self.fixed_time:
            return False
        local = fire.astimezone(self.timezone)
        first = local.replace(tzinfo=None).replace(tzinfo=self.timezone, fold=0)
        return first.utcoffset() != local.utcoffset()

    def next_runs(self, after: datetime, count: int = 3) -> list[datetime]:
        """Return the next `count` fire times strictly after `after` (tz-aware), in UTC (fewer if never)."""
        it = self._iter(after)
        runs: list[datetime] = []
        try:
            while len(runs) < count:
                fire: datetime = it.get_next(datetime)
                if not self._repeated(fire):
                    runs.append(fire.astimezone(UTC))
        except CroniterBadDateError:
            pass  # no further match (e.g. 31 February): the schedule never fires again
        return runs

    def previous_run(self, before: datetime) -> datetime | None:
        """Return the latest fire time at or before `before` (tz-aware), in UTC; None if there is none."""
        # croniter's get_prev is strictly before its start; fire times are whole minutes.
        it = self._iter(before + timedelta(microseconds=1))
        try:
            while True:
                fire: datetime = it.get_prev(datetime)
                if not self._repeated(fire):
                    return fire.astimezone(UTC)
        except CroniterBadDateError:
            return None


def parse_cron(expression: str, timezone: str = "UTC") -> CronSchedule:
    """Return the schedule for a 5-field crontab expression or @macro. Raises CronError."""
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise CronError(f"unknown time zone '{timezone}' (use an IANA name such as 'UTC' or 'Europe/Berlin')") from None
    text = " ".join(expression.split())
    text = MACROS.get(text.lower(), text)
    if text.startswith("@"):
        raise CronError(f"unknown macro '{text}' (known: {', '.join(MACROS)})")
    parts = text.split(" ")
    if len(parts) != 5:
        raise CronError(f"'{expression}' has {len(parts)} fields, expected 5 (minute hour day month weekday)")
    for part, field in zip(parts, FIELDS, strict=True):
        _check_field(part, field)
    schedule = CronSchedule(
        expression=expression, timezone=zone, fields=text.lower(),
        day_or=not parts[2].startswith("*") and not parts[4].startswith("*"),
        fixed_time=not parts[0].startswith("*") and not parts[1].startswith("*"))
    # Whether a day ever exists does not depend on when one looks; a fixed start keeps this pure.
    if not schedule.next_runs(datetime(2000, 1, 1, tzinfo=UTC), 1):
        raise CronError(f"'{expression}' never fires (no such day in any month it names)")
    return schedule
