"""Which objects of a plan's folder are its backups: the rule every listing, prune and drill goes through."""

from __future__ import annotations

from datetime import datetime

from backup_exporter.core.naming import plan_prefix, time_of
from backup_exporter.storage.base import BackupInfo, Storage


def plan_backups(storage: Storage, prefix: str, plan: str) -> list[tuple[BackupInfo, datetime]]:
    """Return the plan's archives with their start times; objects that are not ours are left out.

    Raises StorageError (or AuthenticationFailed) when the listing fails.
    """
    folder = plan_prefix(prefix, plan)
    found = []
    for info in storage.list_backups(folder):
        # The backend already limits the listing to the folder; checking again here is what guarantees
        # that a prune never touches another plan's objects, whatever a backend returns.
        rest = info.name[len(folder) + 1:] if info.name.startswith(folder + "/") else None
        if rest is None or "/" in rest:
            continue
        started = time_of(info.name)
        if started is None:
            continue  # e.g. "manual-copy.archive.gz": not named by us, so not ours to judge or delete
        found.append((info, started))
    return found
