"""What this process knows about each plan right now: the live state the metrics and the status API show.

Operations (a run, retention, a restore drill) and the daemon's scheduler update it; the metrics collector
(``serve/metrics.py``) and the status API read immutable snapshots of it. It is pure (no I/O, no
Prometheus): every value has its README "Metrics" meaning, and one lock makes every update atomic, so a
scrape never sees half a run.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from backup_exporter.core.status import SUCCESS, PlanStatus

# Results that backup_runs_total counts: an interrupted run counts as a failure.
RESULTS = ("success", "failure", "skipped")


@dataclass(frozen=True)
class PlanSnapshot:
    """One plan's state at one moment. Times are UNIX seconds (UTC); 0 means "none yet"."""

    plan: str
    last_success: float = 0.0  # when the last successful backup finished
    last_size: int = 0  # archive bytes of the last successful backup
    last_exit_code: int = 0  # of the last finished run
    last_attempt: float = 0.0  # when the latest run started
    last_duration: float = 0.0  # of the last finished run
    in_progress: bool = False  # a backup of the plan runs in this process
    # The run under way (0 and None when none): source bytes (uncompressed BSON) dumped so far, and the
    # estimate of them from the server's collection stats (None until known, or when it is unavailable).
    progress_bytes: int = 0
    progress_estimated_bytes: int | None = None
    next_run: float = 0.0  # the next scheduled run (daemon only)
    max_age: float = 0.0  # the plan's BackupTooOld threshold
    stored_backups: int = 0  # backups in storage after the last run or prune
    stored_bytes: int = 0
    restore_check_time: float = 0.0  # the last restore drill
    restore_check_success: bool = False
    verify: dict[str, tuple[float, bool]] = field(default_factory=dict)  # depth -> (time, success)
    runs_success: int = 0  # counters since this process started
    runs_failure: int = 0
    runs_skipped: int = 0
    uploaded_bytes: int = 0
    retention_deleted: int = 0
    retention_failures: int = 0  # retention runs refused by storage (WORM, legal hold, lease, rights)
    retention: tuple[float, bool] | None = None  # the last retention run: (time, success); None until one ran
    record: PlanStatus | None = None  # the status record last loaded or written, if any

    def runs(self, result: str) -> int:
        """Return how many runs ended with `result` (one of RESULTS) in this process."""
        return int(getattr(self, f"runs_{result}"))

    @property
    def progress_ratio(self) -> float | None:
        """Return the part of the estimated source bytes the run under way has dumped (above 1: beyond the
        estimate), or None when no run is under way or its estimate is unknown or 0."""
        if not self.in_progress or not self.progress_estimated_bytes:
            return None
        return self.progress_bytes / self.progress_estimated_bytes


class PlanStates:
    """The live state of a fixed set of plans; every method is thread-safe."""

    def __init__(self, plans: Iterable[str]) -> None:
        self._lock = threading.Lock()
        self._plans = {name: PlanSnapshot(name) for name in plans}

    @property
    def plans(self) -> list[str]:
        return list(self._plans)

    def get(self, plan: str) -> PlanSnapshot:
        """Return the plan's current snapshot. Raises KeyError for a plan not in the set."""
        with self._lock:
            return self._plans[plan]

    def all(self) -> list[PlanSnapshot]:
        """Return every plan's snapshot, all taken at the same moment."""
        with self._lock:
            return list(self._plans.values())

    def _set(self, plan: str, **changes: Any) -> None:
        with self._lock:
            self._plans[plan] = replace(self._plans[plan], **changes)

    def _add(self, plan: str, name: str, count: int) -> None:
        with self._lock:
            current = self._plans[plan]
            self._plans[plan] = replace(current, **{name: getattr(current, name) + count})

    # -- from status records --------------------------------------------------------------------------------

    def apply_status(self, record: PlanStatus) -> None:
        """Take the values a stored run record holds (last success, last attempt, restore-check verdict)."""
        self._set(record.plan, record=record, **_from_record(record))

    # -- from run events ------------------------------------------------------------------------------------

    def run_started(self, plan: str, started: float) -> None:
        self._set(plan, in_progress=True, last_attempt=started, progress_bytes=0, progress_estimated_bytes=None)

    def set_progress(self, plan: str, source_bytes: int, estimated_bytes: int | None) -> None:
        """Set how far the run under way got: source bytes dumped, of `estimated_bytes` (None: unknown).
        Ignored when no run is under way (a late update must not outlive its run)."""
        with self._lock:
            current = self._plans[plan]
            if current.in_progress:
                self._plans[plan] = replace(current, progress_bytes=source_bytes,
                                            progress_estimated_bytes=estimated_bytes)

    def run_finished(self, plan: str, result: str, exit_code: int, record: PlanStatus | None = None) -> None:
        """Count a finished run (result success, failure or interrupted) with its exit code, applying the
        status record it ends with (if any) in the same step."""
        with self._lock:
            current = self._plans[plan]
            key = "runs_success" if result == SUCCESS else "runs_failure"
            changes: dict[str, Any] = {} if record is None else {**_from_record(record), "record": record}
            # The run's own exit code wins over the record's (they differ only when recording failed).
            changes.update({"in_progress": False, "last_exit_code": exit_code, key: getattr(current, key) + 1,
                            "progress_bytes": 0, "progress_estimated_bytes": None})
            self._plans[plan] = replace(current, **changes)

    def run_skipped(self, plan: str) -> None:
        self._add(plan, "runs_skipped", 1)

    def add_uploaded(self, plan: str, count: int) -> None:
        if count > 0:
            self._add(plan, "uploaded_bytes", count)

    def add_retention_deleted(self, plan: str, count: int) -> None:
        if count > 0:
            self._add(plan, "retention_deleted", count)

    def add_retention_failure(self, plan: str) -> None:
        self._add(plan, "retention_failures", 1)

    # -- from the daemon and housekeeping -------------------------------------------------------------------

    def set_stored(self, plan: str, backups: int, total_bytes: int) -> None:
        self._set(plan, stored_backups=backups, stored_bytes=total_bytes)

    def set_retention(self, plan: str, when: float, success: bool) -> None:
        self._set(plan, retention=(when, success))

    def set_restore_check(self, plan: str, when: float, success: bool) -> None:
        self._set(plan, restore_check_time=when, restore_check_success=success)

    def set_next_run(self, plan: str, when: float) -> None:
        self._set(plan, next_run=when)

    def set_max_age(self, plan: str, seconds: float) -> None:
        self._set(plan, max_age=seconds)

    def set_last_success(self, plan: str, finished: float, size: int) -> None:
        """Set the last success's time and size directly (when they come from elsewhere than a record)."""
        self._set(plan, last_success=finished, last_size=size)


def _from_record(record: PlanStatus) -> dict[str, Any]:
    """Return the snapshot fields a status record determines (only those it holds)."""
    changes: dict[str, Any] = {}
    if record.last_success is not None:
        changes.update(last_success=record.last_success.finished, last_size=record.last_success.size)
    if record.last_attempt is not None:
        attempt = record.last_attempt
        changes.update(last_exit_code=attempt.exit_code, last_attempt=attempt.started,
                       last_duration=attempt.duration)
    if record.verify:
        changes["verify"] = {depth: (float(v.get("time", 0.0)), bool(v.get("success")))
                             for depth, v in record.verify.items()}
    check = record.restore_check
    if check.get("time"):
        changes.update(restore_check_time=float(check["time"]), restore_check_success=bool(check.get("success")))
    return changes
