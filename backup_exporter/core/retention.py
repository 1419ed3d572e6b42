"""Which backups a retention policy keeps: pure, no I/O, no clock of its own.

The rules follow borg/restic ``prune``: every rule picks a set of backups to keep and the result is their
union. ``keep_last N`` keeps the N newest; ``keep_within D`` keeps everything made after ``now - D``;
``keep_daily/weekly/monthly N`` keep the newest backup of each of the N most recent UTC days / ISO weeks /
calendar months that have a backup at all (periods without a backup do not use up the count). Whatever
the policy says, the newest backup is always kept, so a prune can never leave a plan without a backup. A
policy with no rule keeps everything: retention is opt-in.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

_UNITS: dict[str, timedelta] = {
    "w": timedelta(weeks=1),
    "d": timedelta(days=1),
    "h": timedelta(hours=1),
    "m": timedelta(minutes=1),
    "s": timedelta(seconds=1),
}
_UNIT_ORDER = "wdhms"
_PART = re.compile(r"(\d+)([a-zA-Z]+)")

NEWEST_REASON = "newest backup is always kept"
NO_POLICY_REASON = "no retention rule: everything is kept"
NOT_KEPT_REASON = "outside every rule"


def parse_duration(text: str) -> timedelta:
    """Return the positive duration written as e.g. "36h", "7d", "2w", "90m", "1d12h" or "1w2d3h4m5s".

    Units: w (weeks), d (days), h (hours), m (minutes), s (seconds); each at most once, largest first.
    Raises ValueError naming the problem for anything else (empty, a bare number, an unknown or repeated
    unit, units out of order, zero).
    """
    original = text
    text = text.strip()
    if not text:
        raise ValueError("empty duration: write e.g. '36h', '7d', '2w', '90m' or '1d12h'")
    total = timedelta()
    position = 0
    last_rank = -1
    for match in _PART.finditer(text):
        if match.start() != position:
            break
        number, unit = match.groups()
        rank = _UNIT_ORDER.find(unit) if len(unit) == 1 else -1
        if rank < 0:
            raise ValueError(f"invalid duration {original!r}: unknown unit {unit!r} "
                             "(use w, d, h, m or s, e.g. '1d12h')")
        if rank <= last_rank:
            raise ValueError(f"invalid duration {original!r}: unit {unit!r} repeated or out of order "
                             "(largest unit first, each once, e.g. '1d12h')")
        last_rank = rank
        total += int(number) * _UNITS[unit]
        position = match.end()
    if position != len(text):
        raise ValueError(f"invalid duration {original!r}: expected <number><unit> parts such as "
                         "'36h', '7d', '2w', '90m' or '1d12h'")
    if total <= timedelta():
        raise ValueError(f"invalid duration {original!r}: must be longer than zero")
    return total


def format_duration(value: timedelta) -> str:
    """Return the compact form parse_duration reads ("1d12h"); "0s" for zero. Raises ValueError if < 0."""
    if value < timedelta():
        raise ValueError(f"negative duration {value}")
    seconds = int(value.total_seconds())
    parts = []
    for unit in _UNIT_ORDER:
        size = int(_UNITS[unit].total_seconds())
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"


@dataclass(frozen=True)
class RetentionPolicy:
    """Which backups to keep. Every field left None is a rule not in use; no rule at all keeps everything.

    Raises ValueError at construction for a negative count or a keep_within that is not positive.
    """

    keep_last: int | None = None
    keep_within: timedelta | None = None
    keep_daily: int | None = None
    keep_weekly: int | None = None
    keep_monthly: int | None = None

    def __post_init__(self) -> None:
        for rule in ("keep_last", "keep_daily", "keep_weekly", "keep_monthly"):
            value = getattr(self, rule)
            # bool is an int subclass; "keep_last: true" in YAML is a mistake, not 1.
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise ValueError(f"{rule} must be a whole number >= 0, got {value!r}")
        if self.keep_within is not None and (
                not isinstance(self.keep_within, timedelta) or self.keep_within <= timedelta()):
            raise ValueError(f"keep_within must be a positive duration, got {self.keep_within!r}")

    @property
    def is_empty(self) -> bool:
        """Return True when no rule is set, which means every backup is kept."""
        return all(getattr(self, rule) is None for rule in
                   ("keep_last", "keep_within", "keep_daily", "keep_weekly", "keep_monthly"))

    def describe(self) -> str:
        """Return the rules in use as one line, e.g. "keep_last=3 keep_within=7d"; "keep everything"."""
        if self.is_empty:
            return "keep everything"
        parts = []
        if self.keep_last is not None:
            parts.append(f"keep_last={self.keep_last}")
        if self.keep_within is not None:
            parts.append(f"keep_within={format_duration(self.keep_within)}")
        for rule in ("keep_daily", "keep_weekly", "keep_monthly"):
            value = getattr(self, rule)
            if value is not None:
                parts.append(f"{rule}={value}")
        return " ".join(parts)


@dataclass(frozen=True)
class Candidate:
    """A backup retention may choose from: its name and creation time (timezone-aware)."""

    name: str
    created: datetime


@dataclass(frozen=True)
class Decision:
    """What retention decided for one backup, and every rule that caused a keep."""

    name: str
    created: datetime
    keep: bool
    reasons: list[str] = field(default_factory=list)


def _day(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d")


def _iso_week(moment: datetime) -> str:
    year, week, _ = moment.isocalendar()
    return f"{year}-W{week:02d}"


def _month(moment: datetime) -> str:
    return moment.strftime("%Y-%m")


def _require_aware(moment: datetime, what: str) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{what} must be a timezone-aware datetime, got naive {moment.isoformat()}")
    return moment.astimezone(UTC)


# How far this host's clock may be ahead of storage's before it is taken to be wrong: a backup's name (this
# host's time when the run started) against the time storage wrote it (at the commit, which comes later),
# or `now` against storage's own time.
CLOCK_TOLERANCE = timedelta(minutes=10)


def clock_ahead(ours: datetime, theirs: datetime, tolerance: timedelta = CLOCK_TOLERANCE) -> timedelta | None:
    """Return by how much `ours` (a time by this host's clock: a backup's name, or now) is ahead of `theirs`
    (storage's clock for the same moment or a later one: the backup's write time, or storage's now), when
    that is more than `tolerance`; else None.

    A clock that ran ahead makes every real backup look old to keep_within/keep_daily and puts a
    future-named backup first for keep_last. Raises ValueError for a naive time."""
    ahead = _require_aware(ours, "this host's time") - _require_aware(theirs, "storage's time")
    return ahead if ahead > tolerance else None


def decide(backups: Sequence[Candidate], policy: RetentionPolicy, now: datetime) -> list[Decision]:
    """Return one Decision per backup, newest first (ties broken by name, larger first).

    Raises ValueError when `now` or a backup's time is naive (periods are UTC days/weeks/months, which a
    naive time cannot be placed in).
    """
    now = _require_aware(now, "now")
    ordered = sorted(((_require_aware(b.created, f"created time of {b.name!r}"), b) for b in backups),
                     key=lambda pair: (pair[0], pair[1].name), reverse=True)
    reasons: list[list[str]] = [[] for _ in ordered]

    if policy.is_empty:
        for entry in reasons:
            entry.append(NO_POLICY_REASON)
    else:
        if policy.keep_last is not None:
            for index in range(min(policy.keep_last, len(ordered))):
                reasons[index].append(f"keep_last {index + 1}/{policy.keep_last}")
        if policy.keep_within is not None:
            cutoff = now - policy.keep_within
            label = format_duration(policy.keep_within)
            for index, (created, _) in enumerate(ordered):
                if created >= cutoff:
                    reasons[index].append(f"keep_within {label}")
        periods: tuple[tuple[str, int | None, Callable[[datetime], str]], ...] = (
            ("keep_daily", policy.keep_daily, _day),
            ("keep_weekly", policy.keep_weekly, _iso_week),
            ("keep_monthly", policy.keep_monthly, _month))
        for rule, count, period_of in periods:
            if not count:
                continue
            seen = 0
            last_period: str | None = None
            # Walking newest first, the first backup met in a period is that period's newest.
            for index, (created, _) in enumerate(ordered):
                period = period_of(created)
                if period == last_period:
                    continue
                last_period = period
                reasons[index].append(f"{rule} {period}")
                seen += 1
                if seen >= count:
                    break
        if ordered and not reasons[0]:
            reasons[0].append(NEWEST_REASON)

    decisions = []
    for (created, backup), why in zip(ordered, reasons, strict=True):
        keep = bool(why)
        decisions.append(Decision(backup.name, created, keep, why if keep else [NOT_KEPT_REASON]))
    return decisions
