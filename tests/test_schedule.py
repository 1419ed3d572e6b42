"""Cron schedules mean what crontab(5) says they mean."""

from __future__ import annotations

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
