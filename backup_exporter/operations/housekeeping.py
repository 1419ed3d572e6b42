"""What happens around backups: retention after a success, storage totals, scheduled restore drills."""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

from backup_exporter.archive.encryption import load_identities
from backup_exporter.config import Config, PlanConfig
from backup_exporter.core import naming
from backup_exporter.core.clock import SYSTEM, Clock
from backup_exporter.core.errors import BackupError, Interrupted
from backup_exporter.core.plan_state import PlanStates
from backup_exporter.operations.prune import PruneReport, prune
from backup_exporter.operations.restore import restore_latest_check
from backup_exporter.operations.run import RunOutcome
from backup_exporter.repository import backups, records
from backup_exporter.storage.base import Storage
from backup_exporter.system.logs import event, plan_logger

log = logging.getLogger(__name__)


def refresh_stored(cfg: Config, storage: Storage, state: PlanStates, plans: list[str] | None = None) -> None:
    """Set backup_stored_backups/bytes from a listing of each plan's backups (never at scrape time)."""
    for plan in cfg.plans.values():
        if plans is not None and plan.name not in plans:
            continue
        try:
            listed = backups.archives(storage, naming.plan_prefix(plan.prefix, plan.name))
        except BackupError as exc:
            log.warning("could not list the backups of plan %s: %s", plan.name, exc.message)
            continue
        ours = [b for b in listed if naming.time_of(b.name) is not None]
        state.set_stored(plan.name, len(ours), sum(b.size for b in ours))


def prune_plan(storage: Storage, plan: PlanConfig, state: PlanStates | None, *, dry_run: bool = False,
               now: datetime | None = None) -> PruneReport:
    """Apply the plan's retention policy; return the PruneReport. Raises StorageError."""
    now = now or datetime.now(UTC)
    try:
        report = prune(storage, plan.prefix, plan.name, plan.retention, now, dry_run=dry_run)
    except BackupError:
        # Storage that refuses deletes (immutability, legal hold) fails retention loudly: logged by the
        # caller, counted here for backup_retention_failures_total and backup_last_retention_success.
        if state is not None and not dry_run:
            state.add_retention_failure(plan.name)
            state.set_retention(plan.name, now.timestamp(), False)
        raise
    if state is not None and not dry_run:
        state.set_retention(plan.name, now.timestamp(), True)
        state.add_retention_deleted(plan.name, len(report.deleted))
        state.set_stored(plan.name, len(report.kept), sum(d.size for d in report.kept))
    return report


def after_success_hook(plan: PlanConfig, storage: Storage, state: PlanStates | None,
                       clock: Clock = SYSTEM) -> Callable[[RunOutcome], None]:
    """Return what runs after each successful backup: retention (if a policy is set, by `clock`), then
    storage totals."""

    def hook(outcome: RunOutcome) -> None:
        plog = plan_logger(__name__, plan.name)
        if not plan.retention.is_empty:
            try:
                report = prune_plan(storage, plan, state, now=clock.now())
            except BackupError:
                outcome.retention_ok = False  # a pushed run reports it (backup_last_retention_success 0)
                raise
            outcome.retention_ok = True
            event(plog, logging.INFO, "retention", "retention (%s): kept %d, deleted %d",
                  plan.retention.describe(), len(report.kept), len(report.deleted))
        elif state is not None:
            listed = [b for b in backups.archives(storage, naming.plan_prefix(plan.prefix, plan.name))
                      if naming.time_of(b.name) is not None]
            state.set_stored(plan.name, len(listed), sum(b.size for b in listed))

    return hook


def run_restore_check(plan: PlanConfig, storage: Storage, state: PlanStates | None,
                      cancel: threading.Event | None = None) -> bool:
    """Restore the plan's newest backup into its scratch URI, compare counts, record; return success.

    A drill stopped by `cancel` (daemon shutdown) records nothing: the previous verdict stands. Like
    `backupctl restore --engine auto`, the drill restores with mongorestore when it is on PATH (so the
    tool that will restore for real is the one drilled), with the native engine otherwise.
    """
    plog = plan_logger(__name__, plan.name)
    assert plan.restore_check.uri is not None
    ok, message = False, ""
    try:
        # The identity is read only now, and only from the plan's identity_file or the environment.
        identities = load_identities(plan.encryption.identity_file if plan.encryption else None, os.environ)
        report = restore_latest_check(storage, plan.prefix, plan.name, plan.restore_check.uri,
                                      mongorestore=shutil.which("mongorestore"), identities=identities,
                                      cancel=cancel)
        ok, message = bool(report.check_ok), report.summary()
    except Interrupted:
        event(plog, logging.WARNING, "restore_check", "restore check stopped by shutdown; nothing recorded")
        return False
    except BackupError as exc:
        message = exc.message
    now = time.time()
    key = naming.status_name(plan.prefix, plan.name)
    verdict = {"time": now, "success": ok, "message": message}

    try:
        records.save_restore_check(storage, key, verdict)
    except BackupError as exc:
        log.warning("could not record the restore check of plan %s: %s", plan.name, exc.message)
    if state is not None:
        state.set_restore_check(plan.name, now, ok)
    event(plog, logging.INFO if ok else logging.ERROR, "restore_check",
          "restore check %s: %s", "passed" if ok else "FAILED", message)
    return ok
