"""Cron schedules with exactly the meaning of crontab(5), turned into APScheduler 3.x triggers.

APScheduler's own ``CronTrigger.from_crontab`` numbers weekdays from Monday and ANDs day-of-month with
day-of-week; crontab numbers them from Sunday (0 and 7) and runs when *either* restricted day field
matches. So every field is parsed here into an explicit list of values and handed over by name.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.combining import OrTrigger
from apscheduler.triggers.cron import CronTrigger

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


def _expand(text: str, field: _Field) -> list[int]:
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


@dataclass(frozen=True)
class CronSchedule:
    """A parsed crontab(5) expression in a time zone."""

    expression: str
    timezone: ZoneInfo
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: tuple[int, ...]
    months: tuple[int, ...]
    weekdays: tuple[int, ...]  # 0 = Sunday ... 6 = Saturday
    day_restricted: bool
    weekday_restricted: bool

    def trigger(self) -> BaseTrigger:
        """Return an APScheduler 3.x trigger that fires exactly when crontab would."""
        common = {
            "minute": ",".join(map(str, self.minutes)),
            "hour": ",".join(map(str, self.hours)),
            "month": ",".join(map(str, self.months)),
            "timezone": self.timezone,
        }
        weekday_names = ",".join(DAYS[d] for d in self.weekdays)
        days = ",".join(map(str, self.days))
        if self.day_restricted and self.weekday_restricted:
            return OrTrigger([CronTrigger(day=days, **common), CronTrigger(day_of_week=weekday_names, **common)])
        if self.weekday_restricted:
            return CronTrigger(day_of_week=weekday_names, **common)
        return CronTrigger(day=days, **common)

    def next_runs(self, after: datetime, count: int = 3) -> list[datetime]:
        """Return the next `count` fire times strictly after `after` (tz-aware), in UTC."""
        trigger = self.trigger()
        runs: list[datetime] = []
        previous: datetime | None = None
        now = after + timedelta(microseconds=1)
        while len(runs) < count:
            fire = trigger.get_next_fire_time(previous, now)
            if fire is None:
                break
            runs.append(fire.astimezone(ZoneInfo("UTC")))
            previous = fire
            now = fire + timedelta(microseconds=1)
        return runs

    def previous_run(self, before: datetime, horizon: timedelta = timedelta(days=400)) -> datetime | None:
        """Return the latest fire time at or before `before` (UTC), or None within `horizon`."""
        # Walk forward from a coarse start; schedules fire at most once a minute, so bisect by day windows.
        start = before - timedelta(days=1)
        while start > before - horizon:
            runs = [r for r in self.next_runs(start - timedelta(microseconds=1), 1500) if r <= before]
            if runs:
                return runs[-1]
            start -= timedelta(days=31)
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
    expanded = [_expand(part, field) for part, field in zip(parts, FIELDS, strict=True)]
    weekdays = sorted({d % 7 for d in expanded[4]})
    return CronSchedule(
        expression=expression, timezone=zone, minutes=tuple(expanded[0]), hours=tuple(expanded[1]),
        days=tuple(expanded[2]), months=tuple(expanded[3]), weekdays=tuple(weekdays),
        day_restricted=not parts[2].startswith("*"), weekday_restricted=not parts[4].startswith("*"))
