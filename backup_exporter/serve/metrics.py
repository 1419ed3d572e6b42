"""The Prometheus metrics, on a registry owned by the caller (never the global one).

Every per-plan series is created at construction, so a missing series never stands for zero. Values come
from status records (``apply_status``) and from run events; nothing is computed at scrape time.
"""

from __future__ import annotations

import platform
from collections.abc import Collection, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Info

from backup_exporter import __version__
from backup_exporter.core.status import FAILURE, INTERRUPTED, SUCCESS, PlanStatus

RESULTS = ("success", "failure", "skipped")


class BackupMetrics:
    """Gauges (and, in daemon mode, counters) for a set of plans."""

    def __init__(self, registry: CollectorRegistry, plans: Iterable[str], *, counters: bool = True,
                 exclude: Collection[str] = ()) -> None:
        """Create every series for every plan; gauges named in `exclude` are kept off the registry."""
        self.registry = registry
        self.plans = list(plans)
        self.counters = counters
        self.exclude = frozenset(exclude)
        g = self._gauge
        self.last_success = g("backup_last_success_timestamp_seconds",
                              "UNIX time of the plan's last successful backup; 0 if none ever succeeded.")
        self.last_exit_code = g("backup_last_exit_code",
                                "Exit code of the plan's last finished run: 0 success; see README 'Exit codes'.")
        self.last_attempt = g("backup_last_attempt_timestamp_seconds",
                              "UNIX time the plan's latest run started (successful or not).")
        self.last_duration = g("backup_last_duration_seconds", "Duration of the plan's last finished run.")
        self.last_size = g("backup_last_size_bytes", "Size of the plan's last successful archive, in bytes.")
        self.in_progress = g("backup_in_progress", "1 while a backup of the plan runs in this process, else 0.")
        self.next_run = g("backup_next_run_timestamp_seconds", "UNIX time of the plan's next scheduled run.")
        self.max_age = g("backup_max_age_seconds",
                         "Age of the last success above which BackupTooOld fires for this plan.")
        self.stored_backups = g("backup_stored_backups", "Backups of the plan in storage after the last "
                                "run or prune.")
        self.stored_bytes = g("backup_stored_bytes", "Bytes of the plan's backups in storage after the last "
                              "run or prune.")
        self.restore_check_time = g("backup_last_restore_check_timestamp_seconds",
                                    "UNIX time of the plan's last restore check; 0 if none ran.")
        self.restore_check_success = g("backup_last_restore_check_success",
                                       "1 if the plan's last restore check passed, 0 if it failed or none ran.")
        if counters:
            self.runs = Counter("backup_runs", "Runs of the plan by result (success, failure, skipped).",
                                ["plan", "result"], registry=registry)
            self.uploaded = Counter("backup_uploaded_bytes", "Archive bytes uploaded to storage by this process.",
                                    ["plan"], registry=registry)
            self.retention_deleted = Counter("backup_retention_deleted",
                                             "Backups deleted by the retention policy by this process.",
                                             ["plan"], registry=registry)
            for plan in self.plans:
                for result in RESULTS:
                    self.runs.labels(plan, result)
                self.uploaded.labels(plan)
                self.retention_deleted.labels(plan)
        info = Info("backup_exporter_build", "Version of backup_exporter and Python.", registry=registry)
        info.info({"version": __version__, "python_version": platform.python_version()})

    def snapshot(self, plan: str) -> dict[str, float]:
        """Return the plan's current gauge values by metric name (for the status API)."""
        values: dict[str, float] = {}
        for metric in self.registry.collect():
            if metric.type != "gauge":
                continue
            for sample in metric.samples:
                if sample.labels.get("plan") == plan:
                    values[sample.name] = sample.value
        return values

    def _gauge(self, name: str, documentation: str) -> Gauge:
        gauge = Gauge(name, documentation, ["plan"], registry=None if name in self.exclude else self.registry)
        for plan in self.plans:
            gauge.labels(plan)
        return gauge

    def apply_status(self, status: PlanStatus) -> None:
        """Set the gauges that mirror a stored run record."""
        plan = status.plan
        if status.last_success is not None:
            self.last_success.labels(plan).set(status.last_success.finished)
            self.last_size.labels(plan).set(status.last_success.size)
        if status.last_attempt is not None:
            attempt = status.last_attempt
            self.last_exit_code.labels(plan).set(attempt.exit_code)
            self.last_attempt.labels(plan).set(attempt.started)
            self.last_duration.labels(plan).set(attempt.duration)
        check = status.restore_check
        if check.get("time"):
            self.restore_check_time.labels(plan).set(float(check["time"]))
            self.restore_check_success.labels(plan).set(1 if check.get("success") else 0)

    def run_started(self, plan: str, started: float) -> None:
        self.in_progress.labels(plan).set(1)
        self.last_attempt.labels(plan).set(started)

    def run_finished(self, plan: str, result: str) -> None:
        """Count a finished run: result is a status result (success, failure, interrupted)."""
        self.in_progress.labels(plan).set(0)
        if self.counters:
            self.runs.labels(plan, "success" if result == SUCCESS else "failure").inc()
        assert result in (SUCCESS, FAILURE, INTERRUPTED)

    def run_skipped(self, plan: str) -> None:
        if self.counters:
            self.runs.labels(plan, "skipped").inc()

    def add_uploaded(self, plan: str, count: int) -> None:
        if self.counters and count > 0:
            self.uploaded.labels(plan).inc(count)

    def set_stored(self, plan: str, backups: int, total_bytes: int) -> None:
        self.stored_backups.labels(plan).set(backups)
        self.stored_bytes.labels(plan).set(total_bytes)

    def add_retention_deleted(self, plan: str, count: int) -> None:
        if self.counters and count > 0:
            self.retention_deleted.labels(plan).inc(count)
