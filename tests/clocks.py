"""A clock the tests move by hand: the wall clock can jump (back or forward) while the monotonic clock only
advances, as on a machine whose time NTP steps."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta


class ManualClock:
    """Implements backup_exporter.core.clock.Clock. Stands still unless `ticking` (then both clocks follow
    real time from `start`); `advance` lets time pass on both clocks, `jump` moves the wall clock only."""

    def __init__(self, start: datetime, *, ticking: bool = False) -> None:
        self._lock = threading.Lock()
        self._start = start
        self._ticking = ticking
        self._base = time.monotonic()
        self._passed = 0.0  # seconds both clocks moved by advance()
        self._jumped = 0.0  # seconds the wall clock alone moved by jump()

    def _elapsed(self) -> float:
        return (time.monotonic() - self._base if self._ticking else 0.0) + self._passed

    def now(self) -> datetime:
        with self._lock:
            return self._start + timedelta(seconds=self._elapsed() + self._jumped)

    def monotonic(self) -> float:
        with self._lock:
            return 1000.0 + self._elapsed()

    def advance(self, seconds: float) -> None:
        """Let `seconds` pass: both clocks move."""
        with self._lock:
            self._passed += seconds

    def jump(self, seconds: float) -> None:
        """Set the wall clock `seconds` forward (negative: back); no time passes."""
        with self._lock:
            self._jumped += seconds
