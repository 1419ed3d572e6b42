"""Which objects of a plan's folder are its backups: the rule every listing, prune, drill and storage total
goes through. Backends list objects; only this module decides which of them are archives."""

from __future__ import annotations

from datetime import datetime

from backup_exporter.core.naming import ARCHIVE_SUFFIXES, plan_prefix, time_of
from backup_exporter.storage.base import ObjectInfo, Storage, folder_of


def is_archive_in(folder: str, name: str) -> bool:
    """Return whether object `name` is an archive directly in `folder` (not deeper, not a sibling)."""
    base = folder_of(folder)
    if not name.startswith(base):
        return False
    rest = name[len(base):]
    return bool(rest) and "/" not in rest and not rest.startswith(".") and rest.endswith(ARCHIVE_SUFFIXES)


def archives(storage: Storage, folder: str) -> list[ObjectInfo]:
    """Return the committed archives (``*.archive.gz``) directly in `folder`, oldest first.

    Status records, locks, foreign files and deeper folders are left out. Raises StorageError (or
    AuthenticationFailed) when the listing fails; never returns a partial list.
    """
    found = [o for o in storage.list_objects(folder) if is_archive_in(folder, o.name)]
    found.sort(key=lambda o: (o.last_modified, o.name))
    return found


def plan_backups(storage: Storage, prefix: str, plan: str) -> list[tuple[ObjectInfo, datetime]]:
    """Return the plan's archives with their start times; objects that are not ours are left out.

    Raises StorageError (or AuthenticationFailed) when the listing fails.
    """
    found = []
    for info in archives(storage, plan_prefix(prefix, plan)):
        started = time_of(info.name)
        if started is None:
            continue  # e.g. "manual-copy.archive.gz": not named by us, so not ours to judge or delete
        found.append((info, started))
    return found

