"""`backupctl prune` and retention after each success: delete what the policy does not keep."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from backup_exporter.core.errors import BackupError, ExitCode
from backup_exporter.core.naming import plan_prefix
from backup_exporter.core.retention import CLOCK_TOLERANCE, RetentionPolicy, clock_ahead, format_duration
from backup_exporter.operations.listing import ListedBackup, list_backups
from backup_exporter.storage.base import Storage

log = logging.getLogger("backup_exporter.lifecycle")


class ClockAhead(BackupError):
    """Retention refused: the clock that names backups ran ahead of storage's clock."""

    exit_code = ExitCode.DATA


@dataclass
class PruneReport:
    """What a prune kept and deleted (or, in a dry run, would delete), newest first."""

    plan: str
    policy: RetentionPolicy
    dry_run: bool
    kept: list[ListedBackup] = field(default_factory=list)
    deleted: list[ListedBackup] = field(default_factory=list)

    @property
    def kept_bytes(self) -> int:
        return sum(b.size for b in self.kept)

    @property
    def deleted_bytes(self) -> int:
        return sum(b.size for b in self.deleted)


def _refuse_a_clock_ahead(storage: Storage, report: PruneReport, now: datetime, folder: str) -> None:
    """Raise ClockAhead when this host's clock ran ahead of storage's: when `now` is ahead of storage's own
    time, or when the newest backup's name is ahead of the time storage wrote it (a clock that was ahead
    when it named that backup). Either way the policy's choice cannot be trusted. Raises StorageError when
    storage's time cannot be read."""
    fix = "fix the clock (NTP)"
    server = storage.server_time()
    if server is not None and (ahead := clock_ahead(now, server)) is not None:
        raise ClockAhead(f"retention of {folder} refused, nothing deleted: this host's time "
                         f"{now:%Y-%m-%dT%H:%M:%SZ} is {_minutes(ahead)} ahead of storage's "
                         f"{server:%Y-%m-%dT%H:%M:%SZ} (more than {format_duration(CLOCK_TOLERANCE)}); {fix}")
    newest = (report.kept + report.deleted)[0] if report.kept or report.deleted else None
    if newest is None or newest.written is None:
        return
    if (ahead := clock_ahead(newest.time, newest.written)) is not None:
        raise ClockAhead(
            f"retention of {folder} refused, nothing deleted: backup {newest.name} is named "
            f"{newest.time:%Y-%m-%dT%H:%M:%SZ} but storage wrote it at {newest.written:%Y-%m-%dT%H:%M:%SZ}, "
            f"so this host's clock ran {_minutes(ahead)} ahead (more than "
            f"{format_duration(CLOCK_TOLERANCE)}); {fix}, then check that backup and delete or keep it by hand")


def _minutes(ahead: timedelta) -> str:
    """Return `ahead` to the minute ("4w2d"): the seconds of a run or a request are noise here."""
    return format_duration(timedelta(minutes=round(ahead.total_seconds() / 60)))


def prune(storage: Storage, prefix: str, plan: str, policy: RetentionPolicy, now: datetime,
          dry_run: bool = False) -> PruneReport:
    """Delete the plan's backups the policy does not keep, in batches; return what was kept and deleted.

    Only `<prefix>/<plan>/<timestamp>.archive.gz` objects are ever deleted, the newest backup never, and
    nothing at all with an empty policy. Raises StorageError (or AuthenticationFailed) when the listing
    fails (then nothing is deleted) or a deletion fails (then some of the batch may be gone); ClockAhead,
    with nothing deleted (also in a dry run), when this host's clock is ahead of storage's or the newest
    backup's name is ahead of its write time.
    """
    listed = list_backups(storage, prefix, plan, policy, now)
    report = PruneReport(plan, policy, dry_run,
                         kept=[b for b in listed if b.keep], deleted=[b for b in listed if not b.keep])
    folder = plan_prefix(prefix, plan) + "/"
    doomed = [b.name for b in report.deleted]
    # Belt and braces: list_backups only returns names under the folder, but deleting is irreversible.
    strays = [name for name in doomed if not name.startswith(folder) or "/" in name[len(folder):]]
    if strays:
        raise BackupError(f"internal error: prune of {folder} chose {strays[0]}, outside it; nothing deleted",
                          ExitCode.SOFTWARE)
    if doomed:
        _refuse_a_clock_ahead(storage, report, now, folder)
    if doomed and not dry_run:
        storage.delete(doomed)
    for backup in report.deleted:
        log.info("%s %s (%s)", "would delete" if dry_run else "deleted", backup.name,
                 ", ".join(backup.reasons))
    return report
