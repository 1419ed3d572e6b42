"""A clock the tests move by hand: the wall clock can jump (back or forward) while the monotonic clock only
advances, as on a machine whose time NTP steps."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta


class ManualClock:
    """Implements backup_exporter.core.clock.Clock; stands still until told to move."""

    def __init__(self, start: datetime) -> None:
        self._lock = threading.Lock()
        self._wall = start
        self._mono = 1000.0

    def now(self) -> datetime:
        with self._lock:
            return self._wall

    def monotonic(self) -> float:
        with self._lock:
            return self._mono

    def advance(self, seconds: float) -> None:
        """Let `seconds` pass: both clocks move."""
        with self._lock:
            self._wall += timedelta(seconds=seconds)
            self._mono += seconds

    def jump(self, seconds: float) -> None:
        """Set the wall clock `seconds` forward (negative: back); no time passes."""
        with self._lock:
            self._wall += timedelta(seconds=seconds)
