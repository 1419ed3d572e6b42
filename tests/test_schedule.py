"""Cron schedules mean what crontab(5) says they mean."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from backup_exporter.core.schedule import CronError, parse_cron

NOW = datetime(2026, 11, 27, 13, 7, 30, tzinfo=UTC)  # a Friday


@pytest.mark.parametrize(("expression", "expected"), [
    ("*/15 * * * *", ["2026-11-27T13:15", "2026-11-27T13:30", "2026-11-27T13:45"]),
    ("5-10/5 * * * *", ["2026-11-27T13:10", "2026-11-27T14:05", "2026-11-27T14:10"]),
    ("7/20 * * * *", ["2026-11-27T13:27", "2026-11-27T13:47", "2026-11-27T14:07"]),
    ("0 9 * * 1-5", ["2026-11-30T09:00", "2026-12-01T09:00", "2026-12-02T09:00"]),
    ("0 9 * * mon-fri", ["2026-11-30T09:00", "2026-12-01T09:00", "2026-12-02T09:00"]),
    ("0 0 * * 0", ["2026-11-29T00:00", "2026-12-06T00:00", "2026-12-13T00:00"]),
    ("0 0 * * 7", ["2026-11-29T00:00", "2026-12-06T00:00", "2026-12-13T00:00"]),
    ("0 0 * * 5-7", ["2026-11-28T00:00", "2026-11-29T00:00", "2026-12-04T00:00"]),
    ("30 2 * * SUN,wed", ["2026-11-29T02:30", "2026-12-02T02:30", "2026-12-06T02:30"]),
    # Both day fields restricted: either may match (crontab's OR rule).
    ("0 0 1,15 * 0", ["2026-11-29T00:00", "2026-12-01T00:00", "2026-12-06T00:00"]),
    ("0 0 31 * *", ["2026-12-31T00:00", "2027-01-31T00:00", "2027-03-31T00:00"]),
    ("0 0 29 2 *", ["2028-02-29T00:00", "2032-02-29T00:00", "2036-02-29T00:00"]),
    ("0 12 1 jan,jul *", ["2027-01-01T12:00", "2027-07-01T12:00", "2028-01-01T12:00"]),
    ("0 */6 * * *", ["2026-11-27T18:00", "2026-11-28T00:00", "2026-11-28T06:00"]),
    ("@daily", ["2026-11-28T00:00", "2026-11-29T00:00", "2026-11-30T00:00"]),
    ("@hourly", ["2026-11-27T14:00", "2026-11-27T15:00", "2026-11-27T16:00"]),
    ("@weekly", ["2026-11-29T00:00", "2026-12-06T00:00", "2026-12-13T00:00"]),
    ("@monthly", ["2026-12-01T00:00", "2027-01-01T00:00", "2027-02-01T00:00"]),
])
def test_next_runs_match_crontab(expression: str, expected: list[str]) -> None:
    runs = parse_cron(expression).next_runs(NOW, 3)
    assert [r.strftime("%Y-%m-%dT%H:%M") for r in runs] == expected


def test_a_plan_timezone_shifts_runs_and_follows_daylight_saving() -> None:
    schedule = parse_cron("0 2 * * *", "Europe/Berlin")
    runs = schedule.next_runs(datetime(2026, 3, 27, 12, 0, tzinfo=UTC), 3)
    # 02:00 Berlin is 01:00 UTC in winter and 00:00 UTC in summer; on 29 March 02:00 does not exist.
    assert runs[0].strftime("%m-%dT%H:%M") == "03-28T01:00"
    assert [r.strftime("%m-%dT%H:%M") for r in runs][-1] == "03-30T00:00"


def test_previous_run_is_the_latest_slot_at_or_before_now() -> None:
    assert parse_cron("0 */6 * * *").previous_run(NOW) == datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
    assert parse_cron("0 0 1 1 *").previous_run(NOW) == datetime(2026, 1, 1, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(("expression", "words"), [
    ("* * *", "has 3 fields, expected 5"),
    ("* * * * * *", "has 6 fields"),
    ("61 * * * *", "minute field: 61 is outside 0-59"),
    ("* 24 * * *", "hour field: 24 is outside 0-23"),
    ("* * 0 * *", "day of month field: 0 is outside 1-31"),
    ("* * * 13 *", "month field: 13 is outside 1-12"),
    ("* * * * 8", "day of week field: 8 is outside 0-7"),
    ("5-1 * * * *", "runs backwards"),
    ("*/0 * * * *", "step '0' must be a positive number"),
    ("x * * * *", "'x' is not a number"),
    ("* * * * funday", "'funday' is not a number or a name"),
    ("1,,2 * * * *", "empty list element"),
    ("@fortnightly", "unknown macro"),
])
def test_bad_expressions_say_which_field_is_wrong(expression: str, words: str) -> None:
    with pytest.raises(CronError, match=words.replace("(", r"\(").replace("*", r"\*")):
        parse_cron(expression)


def test_an_unknown_timezone_is_named() -> None:
    with pytest.raises(CronError, match="unknown time zone 'Mars/Olympus'"):
        parse_cron("0 0 * * *", "Mars/Olympus")


@pytest.mark.parametrize(("expression", "before", "expected"), [
    # The last minute of the last matching day, not its first hour.
    ("* * 1,2 * *", datetime(2027, 3, 15, 12, 0, tzinfo=UTC), datetime(2027, 3, 2, 23, 59, tzinfo=UTC)),
    # A leap day three years back is found, and quickly.
    ("0 0 29 2 *", datetime(2027, 3, 15, 12, 0, tzinfo=UTC), datetime(2024, 2, 29, 0, 0, tzinfo=UTC)),
    # A slot exactly at `before` counts.
    ("0 12 * * *", datetime(2027, 3, 15, 12, 0, tzinfo=UTC), datetime(2027, 3, 15, 12, 0, tzinfo=UTC)),
    ("0 12 * * *", datetime(2027, 3, 15, 11, 59, 59, tzinfo=UTC), datetime(2027, 3, 14, 12, 0, tzinfo=UTC)),
    # Day-of-month OR day-of-week: Sunday 14 March comes before the 1st.
    ("0 0 1 * 0", datetime(2027, 3, 15, 12, 0, tzinfo=UTC), datetime(2027, 3, 14, 0, 0, tzinfo=UTC)),
])
def test_previous_run_matches_crontab(expression: str, before: datetime, expected: datetime) -> None:
    started = time.monotonic()
    assert parse_cron(expression).previous_run(before) == expected
    assert time.monotonic() - started < 0.5


def test_a_day_field_starting_with_a_star_ands_the_day_fields() -> None:
    # crontab(5): "*/2" counts as unrestricted, so this is Mondays that fall on odd days, not their union.
    runs = parse_cron("0 0 */2 * 1").next_runs(NOW, 3)
    assert [r.strftime("%a %m-%d") for r in runs] == ["Mon 12-07", "Mon 12-21", "Mon 01-11"]


def test_a_run_in_the_skipped_spring_hour_runs_when_the_clocks_jump() -> None:
    runs = parse_cron("30 2 * * *", "Europe/Berlin").next_runs(datetime(2026, 3, 28, 12, 0, tzinfo=UTC), 2)
    # 29 March 02:30 Berlin does not exist: the run comes at 03:00 CEST (01:00 UTC), as cron(8) runs it.
    assert [r.strftime("%m-%dT%H:%M") for r in runs] == ["03-29T01:00", "03-30T00:30"]


def test_a_fixed_time_run_in_the_repeated_autumn_hour_runs_once() -> None:
    schedule = parse_cron("30 2 * * *", "Europe/Berlin")
    runs = schedule.next_runs(datetime(2026, 10, 24, 12, 0, tzinfo=UTC), 2)
    # 25 October 02:30 Berlin happens twice (00:30 and 01:30 UTC): the backup runs at the first only.
    assert [r.strftime("%m-%dT%H:%M") for r in runs] == ["10-25T00:30", "10-26T01:30"]
    assert schedule.previous_run(datetime(2026, 10, 25, 3, 0, tzinfo=UTC)) == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)


def test_a_wildcard_hour_schedule_runs_in_both_repeated_hours() -> None:
    runs = parse_cron("0 * * * *", "Europe/Berlin").next_runs(datetime(2026, 10, 24, 23, 30, tzinfo=UTC), 3)
    # 02:00 CEST (00:00 UTC) and 02:00 CET (01:00 UTC) are both hours of the day: both run.
    assert [r.strftime("%H:%M") for r in runs] == ["00:00", "01:00", "02:00"]


def test_a_plan_timezone_applies_to_the_previous_run() -> None:
    schedule = parse_cron("0 2 * * *", "America/New_York")
    assert schedule.previous_run(datetime(2026, 7, 1, 5, 59, tzinfo=UTC)) == datetime(2026, 6, 30, 6, 0, tzinfo=UTC)


def test_the_apscheduler_trigger_fires_at_the_croniter_times() -> None:
    schedule = parse_cron("0 0 1,15 * 0", "Europe/Berlin")
    trigger = schedule.trigger()
    fire = trigger.get_next_fire_time(None, NOW)
    fires = []
    for _ in range(3):
        fires.append(fire)
        fire = trigger.get_next_fire_time(fire, fire)
    assert [f.astimezone(UTC) for f in fires] == schedule.next_runs(NOW, 3)
    # A `now` exactly on a slot fires at that slot.
    assert trigger.get_next_fire_time(None, fires[1]) == fires[1]


def test_a_schedule_that_never_fires_is_refused() -> None:
    with pytest.raises(CronError, match="'0 0 31 2 \\*' never fires"):
        parse_cron("0 0 31 2 *")


@pytest.mark.parametrize("expression", ["0 0 L * *", "0 0 ? * *", "0 0 * * mon#2", "0 0 1W * *"])
def test_croniter_extensions_outside_crontab_are_refused(expression: str) -> None:
    with pytest.raises(CronError):
        parse_cron(expression)
