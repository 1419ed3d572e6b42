"""Retention decisions over generated histories with a fake clock; every expectation is computed
independently of backup_exporter.core.retention (group-by-period oracles) or written out by hand."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone

import pytest

from backup_exporter.core.retention import (
    CLOCK_TOLERANCE,
    NEWEST_REASON,
    NOT_KEPT_REASON,
    Candidate,
    Decision,
    RetentionPolicy,
    clock_ahead,
    decide,
    format_duration,
    parse_duration,
)

NOW = datetime(2026, 11, 27, 13, 0, 0, tzinfo=UTC)


def name_of(moment: datetime) -> str:
    return f"prod/orders/{moment.strftime('%Y-%m-%dT%H-%M-%SZ')}.archive.gz"


def history(seed: int = 7, days: int = 365) -> list[Candidate]:
    """A year of backups ending shortly before NOW: 1-4 a day at random times, with a few multi-day gaps
    (so periods without a backup exist), shuffled so decide() cannot rely on input order."""
    rng = random.Random(seed)
    start = NOW - timedelta(days=days)
    moments: set[datetime] = set()
    day = 0
    while day < days:
        if rng.random() < 0.03:
            day += rng.randint(2, 9)  # an outage: no backup for several days
            continue
        for _ in range(rng.randint(1, 4)):
            moment = start + timedelta(days=day, seconds=rng.randint(0, 86399))
            if moment < NOW:
                moments.add(moment.replace(microsecond=0))
        day += 1
    candidates = [Candidate(name_of(m), m) for m in moments]
    rng.shuffle(candidates)
    return candidates


def kept(decisions: list[Decision]) -> set[str]:
    return {d.name for d in decisions if d.keep}


def newest_per_period(backups: list[Candidate], period: Callable[[datetime], object], count: int) -> set[str]:
    """Oracle: group by period, take each group's newest, keep the `count` most recent groups."""
    groups: dict[object, Candidate] = {}
    for b in backups:
        key = period(b.created.astimezone(UTC))
        if key not in groups or b.created > groups[key].created:
            groups[key] = b
    recent = sorted(groups, key=lambda k: groups[k].created, reverse=True)[:count]
    return {groups[k].name for k in recent}


def newest(backups: list[Candidate]) -> str:
    return max(backups, key=lambda b: b.created).name


def by_day(m: datetime) -> object:
    return m.date()


def by_iso_week(m: datetime) -> object:
    return m.isocalendar()[:2]


def by_month(m: datetime) -> object:
    return (m.year, m.month)


@pytest.fixture(scope="module")
def year() -> list[Candidate]:
    backups = history()
    assert 500 < len(backups) < 1200, len(backups)
    return backups


def test_the_generated_history_has_days_without_any_backup(year: list[Candidate]) -> None:
    days_with_backup = {b.created.date() for b in year}
    assert len(days_with_backup) < 360


@pytest.mark.parametrize("n", [1, 2, 3, 10, 50])
def test_keep_last_keeps_exactly_the_n_newest_backups(year: list[Candidate], n: int) -> None:
    decisions = decide(year, RetentionPolicy(keep_last=n), NOW)
    expected = {b.name for b in sorted(year, key=lambda b: b.created, reverse=True)[:n]}
    assert kept(decisions) == expected
    assert len(decisions) == len(year)


def test_keep_last_larger_than_the_history_keeps_everything(year: list[Candidate]) -> None:
    assert kept(decide(year, RetentionPolicy(keep_last=len(year) + 5), NOW)) == {b.name for b in year}


@pytest.mark.parametrize("text", ["36h", "7d", "2w", "90m", "1d12h", "30d"])
def test_keep_within_keeps_everything_newer_than_now_minus_the_duration(year: list[Candidate],
                                                                         text: str) -> None:
    within = parse_duration(text)
    decisions = decide(year, RetentionPolicy(keep_within=within), NOW)
    expected = {b.name for b in year if b.created >= NOW - within}
    # The newest is always kept even when it is older than the window (e.g. "90m").
    expected.add(newest(year))
    assert kept(decisions) == expected


@pytest.mark.parametrize("n", [1, 7, 30, 400])
def test_keep_daily_keeps_the_newest_backup_of_each_of_the_n_most_recent_days_with_a_backup(
        year: list[Candidate], n: int) -> None:
    assert kept(decide(year, RetentionPolicy(keep_daily=n), NOW)) == newest_per_period(year, by_day, n)


@pytest.mark.parametrize("n", [1, 4, 12, 60])
def test_keep_weekly_keeps_the_newest_backup_of_each_of_the_n_most_recent_iso_weeks(
        year: list[Candidate], n: int) -> None:
    assert kept(decide(year, RetentionPolicy(keep_weekly=n), NOW)) == newest_per_period(year, by_iso_week, n)


@pytest.mark.parametrize("n", [1, 6, 12, 24])
def test_keep_monthly_keeps_the_newest_backup_of_each_of_the_n_most_recent_calendar_months(
        year: list[Candidate], n: int) -> None:
    assert kept(decide(year, RetentionPolicy(keep_monthly=n), NOW)) == newest_per_period(year, by_month, n)


def test_combined_rules_keep_the_union_of_what_each_rule_keeps(year: list[Candidate]) -> None:
    policy = RetentionPolicy(keep_last=3, keep_within=timedelta(hours=36), keep_daily=7, keep_weekly=4,
                             keep_monthly=6)
    ordered = sorted(year, key=lambda b: b.created, reverse=True)
    expected = ({b.name for b in ordered[:3]}
                | {b.name for b in year if b.created >= NOW - timedelta(hours=36)}
                | newest_per_period(year, by_day, 7)
                | newest_per_period(year, by_iso_week, 4)
                | newest_per_period(year, by_month, 6))
    decisions = decide(year, policy, NOW)
    assert kept(decisions) == expected
    # Far fewer than the history: the rest really is deleted.
    assert len(expected) < 40 < len(year)


def test_every_kept_backup_names_each_rule_that_keeps_it(year: list[Candidate]) -> None:
    policy = RetentionPolicy(keep_last=2, keep_daily=3, keep_monthly=2)
    decisions = decide(year, policy, NOW)
    first = decisions[0]
    newest_day = first.created.strftime("%Y-%m-%d")
    assert first.reasons == ["keep_last 1/2", f"keep_daily {newest_day}",
                             f"keep_monthly {first.created.strftime('%Y-%m')}"]
    for decision in decisions:
        if decision.keep:
            assert decision.reasons and NOT_KEPT_REASON not in decision.reasons
        else:
            assert decision.reasons == [NOT_KEPT_REASON]


def test_decisions_come_back_newest_first_whatever_the_input_order(year: list[Candidate]) -> None:
    decisions = decide(year, RetentionPolicy(keep_last=1), NOW)
    times = [d.created for d in decisions]
    assert times == sorted(times, reverse=True)


def test_the_newest_backup_is_kept_even_with_keep_last_zero(year: list[Candidate]) -> None:
    decisions = decide(year, RetentionPolicy(keep_last=0), NOW)
    assert kept(decisions) == {newest(year)}
    assert decisions[0].reasons == [NEWEST_REASON]


def test_the_newest_backup_is_kept_when_every_backup_is_older_than_keep_within(year: list[Candidate]) -> None:
    decisions = decide(year, RetentionPolicy(keep_within=timedelta(days=1)), NOW + timedelta(days=30))
    assert kept(decisions) == {newest(year)}


def test_the_newest_backup_is_kept_when_all_period_counts_are_zero(year: list[Candidate]) -> None:
    policy = RetentionPolicy(keep_last=0, keep_daily=0, keep_weekly=0, keep_monthly=0)
    assert kept(decide(year, policy, NOW)) == {newest(year)}


def test_an_empty_policy_keeps_every_backup(year: list[Candidate]) -> None:
    policy = RetentionPolicy()
    assert policy.is_empty
    decisions = decide(year, policy, NOW)
    assert kept(decisions) == {b.name for b in year}
    assert all(d.reasons for d in decisions)


def test_a_policy_with_any_rule_is_not_empty() -> None:
    assert not RetentionPolicy(keep_last=0).is_empty
    assert not RetentionPolicy(keep_within=timedelta(hours=1)).is_empty
    assert not RetentionPolicy(keep_monthly=1).is_empty


def test_no_backups_give_no_decisions() -> None:
    assert decide([], RetentionPolicy(keep_last=3), NOW) == []


def at(text: str) -> Candidate:
    moment = datetime.fromisoformat(text)
    return Candidate(name_of(moment.astimezone(UTC)), moment)


def test_days_without_a_backup_do_not_use_up_the_daily_count() -> None:
    backups = [at("2026-11-27T01:00:00+00:00"), at("2026-11-27T09:00:00+00:00"),
               at("2026-11-20T05:00:00+00:00"), at("2026-11-10T05:00:00+00:00"),
               at("2026-11-01T05:00:00+00:00")]
    decisions = decide(backups, RetentionPolicy(keep_daily=3), NOW)
    assert [(d.created.isoformat(), d.keep, d.reasons) for d in decisions] == [
        ("2026-11-27T09:00:00+00:00", True, ["keep_daily 2026-11-27"]),
        ("2026-11-27T01:00:00+00:00", False, [NOT_KEPT_REASON]),
        ("2026-11-20T05:00:00+00:00", True, ["keep_daily 2026-11-20"]),
        ("2026-11-10T05:00:00+00:00", True, ["keep_daily 2026-11-10"]),
        ("2026-11-01T05:00:00+00:00", False, [NOT_KEPT_REASON]),
    ]


def test_days_are_utc_days_even_for_times_given_in_another_zone() -> None:
    new_york = timezone(timedelta(hours=-5))
    late_evening = Candidate("a", datetime(2026, 11, 26, 20, 0, tzinfo=new_york))  # 2026-11-27 01:00 UTC
    earlier = Candidate("b", datetime(2026, 11, 27, 0, 30, tzinfo=UTC))
    decisions = decide([late_evening, earlier], RetentionPolicy(keep_daily=5), NOW)
    assert [(d.name, d.keep) for d in decisions] == [("a", True), ("b", False)]
    assert decisions[0].reasons == ["keep_daily 2026-11-27"]
    assert decisions[0].created.tzinfo == UTC


def test_weeks_are_iso_weeks_that_span_the_new_year() -> None:
    # 2026-12-31 (Thu) and 2027-01-03 (Sun) are both in ISO week 2026-W53; 2027-01-04 starts 2027-W01.
    backups = [at("2026-12-28T10:00:00+00:00"), at("2026-12-31T10:00:00+00:00"),
               at("2027-01-03T10:00:00+00:00"), at("2027-01-04T10:00:00+00:00")]
    decisions = decide(backups, RetentionPolicy(keep_weekly=2), datetime(2027, 1, 5, tzinfo=UTC))
    assert [(d.created.date().isoformat(), d.keep, d.reasons) for d in decisions] == [
        ("2027-01-04", True, ["keep_weekly 2027-W01"]),
        ("2027-01-03", True, ["keep_weekly 2026-W53"]),
        ("2026-12-31", False, [NOT_KEPT_REASON]),
        ("2026-12-28", False, [NOT_KEPT_REASON]),
    ]


def test_months_are_calendar_months_in_utc() -> None:
    backups = [at("2026-10-31T23:30:00-05:00"),  # 2026-11-01 04:30 UTC: November
               at("2026-10-30T12:00:00+00:00"), at("2026-10-02T12:00:00+00:00"),
               at("2026-09-15T12:00:00+00:00")]
    decisions = decide(backups, RetentionPolicy(keep_monthly=2), NOW)
    assert [(d.created.isoformat(), d.keep, d.reasons) for d in decisions] == [
        ("2026-11-01T04:30:00+00:00", True, ["keep_monthly 2026-11"]),
        ("2026-10-30T12:00:00+00:00", True, ["keep_monthly 2026-10"]),
        ("2026-10-02T12:00:00+00:00", False, [NOT_KEPT_REASON]),
        ("2026-09-15T12:00:00+00:00", False, [NOT_KEPT_REASON]),
    ]


def test_keep_within_includes_a_backup_exactly_at_the_boundary() -> None:
    backups = [at("2026-11-26T13:00:00+00:00"), at("2026-11-26T12:59:59+00:00"),
               at("2026-11-27T12:00:00+00:00")]
    decisions = decide(backups, RetentionPolicy(keep_within=timedelta(days=1)), NOW)
    assert [(d.created.isoformat(), d.keep) for d in decisions] == [
        ("2026-11-27T12:00:00+00:00", True), ("2026-11-26T13:00:00+00:00", True),
        ("2026-11-26T12:59:59+00:00", False)]
    assert decisions[0].reasons == ["keep_within 1d"]


def test_keep_last_reasons_count_up_from_the_newest() -> None:
    backups = [at("2026-11-25T00:00:00+00:00"), at("2026-11-26T00:00:00+00:00"),
               at("2026-11-27T00:00:00+00:00")]
    decisions = decide(backups, RetentionPolicy(keep_last=3), NOW)
    assert [d.reasons for d in decisions] == [["keep_last 1/3"], ["keep_last 2/3"], ["keep_last 3/3"]]


def test_a_naive_time_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        decide([Candidate("x", datetime(2026, 1, 1))], RetentionPolicy(keep_last=1), NOW)
    with pytest.raises(ValueError, match="timezone-aware"):
        decide([], RetentionPolicy(keep_last=1), datetime(2026, 1, 1))


@pytest.mark.parametrize("kwargs", [{"keep_last": -1}, {"keep_daily": -3}, {"keep_weekly": True},
                                    {"keep_monthly": 1.5}, {"keep_within": timedelta(0)},
                                    {"keep_within": timedelta(hours=-1)}])
def test_a_policy_with_a_negative_or_non_integer_rule_is_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="keep_"):
        RetentionPolicy(**kwargs)  # type: ignore[arg-type]


def test_a_policy_describes_its_rules_in_one_line() -> None:
    assert RetentionPolicy().describe() == "keep everything"
    assert (RetentionPolicy(keep_last=3, keep_within=timedelta(hours=36), keep_monthly=6).describe()
            == "keep_last=3 keep_within=1d12h keep_monthly=6")


@pytest.mark.parametrize(("text", "expected"), [
    ("36h", timedelta(hours=36)),
    ("7d", timedelta(days=7)),
    ("2w", timedelta(weeks=2)),
    ("90m", timedelta(minutes=90)),
    ("1d12h", timedelta(days=1, hours=12)),
    ("1w2d3h4m5s", timedelta(weeks=1, days=2, hours=3, minutes=4, seconds=5)),
    ("45s", timedelta(seconds=45)),
    (" 7d ", timedelta(days=7)),
    ("0d6h", timedelta(hours=6)),
    ("400d", timedelta(days=400)),
])
def test_parse_duration_reads_compact_durations(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(("text", "message"), [
    ("", "empty duration"),
    ("   ", "empty duration"),
    ("7", "expected <number><unit>"),
    ("d", "expected <number><unit>"),
    ("7 d", "expected <number><unit>"),
    ("1.5h", "expected <number><unit>"),
    ("-1d", "expected <number><unit>"),
    ("7y", "unknown unit 'y'"),
    ("7days", "unknown unit 'days'"),
    ("7D", "unknown unit 'D'"),
    ("12h1d", "out of order"),
    ("1h1h", "repeated or out of order"),
    ("0h", "longer than zero"),
    ("7d!", "expected <number><unit>"),
])
def test_parse_duration_refuses_malformed_text_with_a_clear_message(text: str, message: str) -> None:
    with pytest.raises(ValueError, match="duration") as caught:
        parse_duration(text)
    assert message in str(caught.value)


@pytest.mark.parametrize("text", ["36h", "7d", "2w", "90m", "1d12h", "1w2d3h4m5s"])
def test_format_duration_writes_what_parse_duration_reads(text: str) -> None:
    value = parse_duration(text)
    assert parse_duration(format_duration(value)) == value


def test_format_duration_uses_the_largest_units() -> None:
    assert format_duration(timedelta(hours=36)) == "1d12h"
    assert format_duration(timedelta(minutes=90)) == "1h30m"
    assert format_duration(timedelta(days=14)) == "2w"


def test_a_name_ahead_of_its_write_time_by_more_than_the_tolerance_means_the_clock_ran_ahead() -> None:
    written = datetime(2026, 12, 4, 17, 0, tzinfo=UTC)
    assert clock_ahead(written + CLOCK_TOLERANCE, written) is None  # at the bound: still trusted
    assert clock_ahead(written + CLOCK_TOLERANCE + timedelta(seconds=1), written) == CLOCK_TOLERANCE + timedelta(
        seconds=1)
    # A name behind its write time is every normal run (it starts before its commit) or a copied backup.
    assert clock_ahead(written - timedelta(days=300), written) is None
    with pytest.raises(ValueError, match="naive"):
        clock_ahead(datetime(2026, 12, 4, 17, 0), written)  # a naive time, on purpose
