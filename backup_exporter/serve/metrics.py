"""The Prometheus metrics: one custom collector over the plans' live state (``core/plan_state.py``).

The same collector serves the daemon's /metrics (gauges and counters) and builds what a one-shot run pushes
to the Pushgateway or writes as a textfile (gauges only, some left out). It only reads snapshots: nothing is
listed or computed in storage at scrape time. Registries are always the caller's, never the global one.
"""

from __future__ import annotations

import math
import platform
from collections.abc import Callable, Collection, Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector

from backup_exporter import __version__
from backup_exporter.core.plan_state import RESULTS, PlanSnapshot, PlanStates

# name -> (help, value). Order is the exposition order. Help texts are the README's "Metrics" meanings.
GAUGES: dict[str, tuple[str, Callable[[PlanSnapshot], float]]] = {
    "backup_last_success_timestamp_seconds": (
        "UNIX time of the plan's last successful backup; 0 if none ever succeeded.", lambda s: s.last_success),
    "backup_last_exit_code": (
        "Exit code of the plan's last finished run: 0 success; see README 'Exit codes'.", lambda s: s.last_exit_code),
    "backup_last_attempt_timestamp_seconds": (
        "UNIX time the plan's latest run started (successful or not).", lambda s: s.last_attempt),
    "backup_last_duration_seconds": ("Duration of the plan's last finished run.", lambda s: s.last_duration),
    "backup_last_size_bytes": ("Size of the plan's last successful archive, in bytes.", lambda s: s.last_size),
    "backup_in_progress": (
        "1 while a backup of the plan runs in this process, else 0.", lambda s: 1 if s.in_progress else 0),
    "backup_next_run_timestamp_seconds": ("UNIX time of the plan's next scheduled run.", lambda s: s.next_run),
    "backup_max_age_seconds": (
        "Age of the last success above which BackupTooOld fires for this plan.", lambda s: s.max_age),
    "backup_stored_backups": (
        "Backups of the plan in storage after the last run or prune.", lambda s: s.stored_backups),
    "backup_stored_bytes": (
        "Bytes of the plan's backups in storage after the last run or prune.", lambda s: s.stored_bytes),
    "backup_last_restore_check_timestamp_seconds": (
        "UNIX time of the plan's last restore check; 0 if none ran.", lambda s: s.restore_check_time),
    "backup_last_restore_check_success": (
        "1 if the plan's last restore check passed, 0 if it failed or none ran.",
        lambda s: 1 if s.restore_check_success else 0),
}


# The live progress of a run under way (daemon only: a one-shot run pushes after its end). NaN says "no
# measure": no run under way, or no estimate (not yet known, unavailable, or 0 bytes).
PROGRESS: dict[str, tuple[str, Callable[[PlanSnapshot], float]]] = {
    "backup_progress_bytes": (
        "Source bytes (uncompressed BSON) the plan's run under way has dumped so far; 0 when none is.",
        lambda s: s.progress_bytes if s.in_progress else 0),
    "backup_progress_estimated_bytes": (
        "Source bytes the plan's run under way is estimated to dump (the server's collection stats); NaN when "
        "no run is under way or the estimate is not known.",
        lambda s: _or_nan(s.progress_estimated_bytes if s.in_progress else None)),
    "backup_progress_ratio": (
        "backup_progress_bytes / backup_progress_estimated_bytes of the run under way (above 1: beyond the "
        "estimate); NaN when no run is under way or the estimate is not known.",
        lambda s: _or_nan(s.progress_ratio)),
}


def _or_nan(value: float | None) -> float:
    return math.nan if value is None else float(value)


def gauge_values(snapshot: PlanSnapshot) -> dict[str, float]:
    """Return the plan's gauge values by metric name (what the status API shows)."""
    return {name: float(value(snapshot)) for name, (_, value) in GAUGES.items()}


class BackupCollector(Collector):
    """Yields every per-plan series from the state at each collect (so none is ever missing), and the
    build info."""

    def __init__(self, states: PlanStates, *, counters: bool = True, exclude: Collection[str] = ()) -> None:
        """`counters`: include the per-process counters and the progress of runs under way (daemon);
        `exclude`: gauge names to leave out."""
        self.states = states
        self.counters = counters
        self.exclude = frozenset(exclude)

    def collect(self) -> Iterator[Metric]:
        return self._families(self.states.all())

    def describe(self) -> Iterator[Metric]:
        """Yield the families without samples: the registry learns the names (for ``?name[]=``)."""
        return self._families([])

    def _families(self, snapshots: list[PlanSnapshot]) -> Iterator[Metric]:
        for name, (documentation, value) in GAUGES.items():
            if name in self.exclude:
                continue
            gauge = GaugeMetricFamily(name, documentation, labels=["plan"])
            for snapshot in snapshots:
                gauge.add_metric([snapshot.plan], float(value(snapshot)))
            yield gauge
        # The last `backupctl verify` of each depth (none until one ran): "stored" checked the stored bytes
        # only (an encrypted backup without its key), "deep" also walked the archive and every CRC.
        verified_at = GaugeMetricFamily("backup_last_verify_timestamp_seconds",
                                        "UNIX time of the plan's last backupctl verify, by depth (stored: the "
                                        "stored bytes' sha256 and size; deep: also the archive inside).",
                                        labels=["plan", "depth"])
        verified_ok = GaugeMetricFamily("backup_last_verify_success",
                                        "1 if the plan's last backupctl verify of that depth passed, else 0.",
                                        labels=["plan", "depth"])
        for snapshot in snapshots:
            for depth, (when, success) in sorted(snapshot.verify.items()):
                verified_at.add_metric([snapshot.plan, depth], when)
                verified_ok.add_metric([snapshot.plan, depth], 1.0 if success else 0.0)
        yield from (verified_at, verified_ok)
        # The last retention run of each plan with a policy (none until one ran, in this process or, pushed,
        # in the run): 0 while deletes are refused or retention refused to decide, so old backups pile up.
        retained_at = GaugeMetricFamily("backup_last_retention_timestamp_seconds",
                                        "UNIX time of the plan's last retention run.", labels=["plan"])
        retained_ok = GaugeMetricFamily("backup_last_retention_success",
                                        "1 if the plan's last retention run deleted what its policy chose, 0 if "
                                        "it failed (storage refused a delete, or the clock ran ahead).",
                                        labels=["plan"])
        for snapshot in snapshots:
            if snapshot.retention is not None:
                retained_at.add_metric([snapshot.plan], snapshot.retention[0])
                retained_ok.add_metric([snapshot.plan], 1.0 if snapshot.retention[1] else 0.0)
        yield from (retained_at, retained_ok)
        if self.counters:
            for name, (documentation, value) in PROGRESS.items():
                gauge = GaugeMetricFamily(name, documentation, labels=["plan"])
                for snapshot in snapshots:
                    gauge.add_metric([snapshot.plan], value(snapshot))
                yield gauge
            runs = CounterMetricFamily("backup_runs", "Runs of the plan by result (success, failure, skipped).",
                                       labels=["plan", "result"])
            uploaded = CounterMetricFamily("backup_uploaded_bytes",
                                           "Archive bytes uploaded to storage by this process.", labels=["plan"])
            deleted = CounterMetricFamily("backup_retention_deleted",
                                          "Backups deleted by the retention policy by this process.", labels=["plan"])
            refused = CounterMetricFamily("backup_retention_failures",
                                          "Retention runs that failed (storage refused a delete: immutability, "
                                          "legal hold, a lease, missing rights; the listing failed; or the "
                                          "clock ran ahead of storage's).",
                                          labels=["plan"])
            for snapshot in snapshots:
                for result in RESULTS:
                    runs.add_metric([snapshot.plan, result], snapshot.runs(result))
                uploaded.add_metric([snapshot.plan], snapshot.uploaded_bytes)
                deleted.add_metric([snapshot.plan], snapshot.retention_deleted)
                refused.add_metric([snapshot.plan], snapshot.retention_failures)
            yield from (runs, uploaded, deleted, refused)
        yield InfoMetricFamily("backup_exporter_build", "Version of backup_exporter and Python.",
                               value={"version": __version__, "python_version": platform.python_version()})


def metrics_registry(states: PlanStates, *, counters: bool = True, exclude: Collection[str] = ()) -> CollectorRegistry:
    """Return a new registry holding only the collector over `states`."""
    registry = CollectorRegistry()
    registry.register(BackupCollector(states, counters=counters, exclude=exclude))
    return registry
