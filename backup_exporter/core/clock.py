"""The clocks the project decides by: the UTC wall clock for names, stamps and schedules, a monotonic one
for durations, and noticing when the wall clock jumps.

Why one injectable object and not ``datetime.now`` in place: the wall clock can be set back or forward
(NTP stepping a clock that drifted, a VM resumed, an operator), and what the daemon does then must be
provable without changing the machine's time. Every decision our code makes (which schedule slot a run
serves, whether a missed run is caught up, a run's start and finish stamps, its duration) reads a `Clock`;
tests pass one they move by hand.

APScheduler 3.x reads ``datetime.now`` itself in its loop (``BaseScheduler._process_jobs``); it is not
handed our clock. Its part is small and is tested with chosen times on its own job objects: it runs every
job whose next fire time is not after its `now`, coalesced to one run, and asks our trigger for the next
fire time after the slot it ran. The rules that keep a jump harmless are ours and read our clock: the
trigger skips straight to the latest due slot (`core.schedule`), a scheduled run names the slot it serves and
is skipped when storage shows an attempt at or after that slot (`operations.run`), and the daemon wakes
APScheduler when it sees the wall clock jump (`serve.scheduler`), so a forward jump is acted on within the
status refresh interval, not after the wait APScheduler computed before it.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """Return the wall-clock time, timezone-aware, in UTC."""
        ...

    def monotonic(self) -> float:
        """Return seconds of a clock that never goes back and does not jump (for durations)."""
        ...


class SystemClock:
    """The machine's clocks."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()


SYSTEM = SystemClock()


class JumpWatch:
    """Tells how far the wall clock moved on its own between two looks: the wall clock's change minus the
    monotonic clock's change (positive: it jumped forward)."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._wall = clock.now().timestamp()
        self._mono = clock.monotonic()

    def jump(self) -> float:
        """Return the wall clock's jump in seconds since the previous call (or creation)."""
        wall, mono = self.clock.now().timestamp(), self.clock.monotonic()
        moved = (wall - self._wall) - (mono - self._mono)
        self._wall, self._mono = wall, mono
        return moved
