"""The per-plan records kept beside the backups: the run record (``_status.json``) and the restore-check
verdict (``_restore_check.json``), loaded and stored through any storage backend."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

from backup_exporter.core.errors import StorageError
from backup_exporter.core.status import VERIFY_DEPTHS, PlanStatus, restore_check_name, verify_name
from backup_exporter.storage.base import Storage
from backup_exporter.system import holders


def load(storage: Storage, name: str, plan: str) -> PlanStatus:
    """Return the plan's stored status (empty when none), with its restore-check verdict. Raises StorageError
    naming the object when it is unreadable, so the operator knows which file to inspect or delete."""
    data = storage.get(name)
    try:
        record = PlanStatus.from_json(plan, data)
    except StorageError as exc:
        raise StorageError(f"{exc.message} ({name} in {storage.describe()})") from None
    check_name = restore_check_name(name)
    check = storage.get(check_name)
    if check:
        try:
            verdict = json.loads(check)
            if not isinstance(verdict, dict):
                raise TypeError(f"expected a JSON object, got {type(verdict).__name__}")
        except (ValueError, TypeError) as exc:
            raise StorageError(f"restore-check record of plan '{plan}' is unreadable: {exc} "
                               f"({check_name} in {storage.describe()})") from None
        record.restore_check = verdict
    verified = storage.get(verify_name(name))
    if verified:
        try:
            verdicts = json.loads(verified)
            record.verify = {depth: dict(verdicts[depth]) for depth in VERIFY_DEPTHS
                             if isinstance(verdicts, dict) and isinstance(verdicts.get(depth), dict)}
        except (ValueError, TypeError) as exc:
            raise StorageError(f"verify record of plan '{plan}' is unreadable: {exc} "
                               f"({verify_name(name)} in {storage.describe()})") from None
    return record


def save_verify(storage: Storage, status_name: str, depth: str, verdict: dict[str, Any]) -> None:
    """Store the verdict of a `backupctl verify` of `depth` (stored | deep) beside the plan's status, keeping
    the other depth's. Raises StorageError."""
    name = verify_name(status_name)
    try:
        current = json.loads(storage.get(name) or b"{}")
    except ValueError:
        current = {}
    current = current if isinstance(current, dict) else {}
    current[depth] = verdict
    storage.put(name, json.dumps(current, sort_keys=True).encode())


def save_restore_check(storage: Storage, status_name: str, verdict: dict[str, Any]) -> None:
    """Store the plan's latest restore-check verdict beside its status. Raises StorageError."""
    storage.put(restore_check_name(status_name), json.dumps(verdict, sort_keys=True).encode())


# Only runs rewrite the record, and they hold the plan's storage lock while they do, which serialises
# writers across processes; this lock adds the same guarantee for callers in one process that do not.
_update_locks: dict[str, threading.Lock] = {}
_update_locks_guard = threading.Lock()


def update(storage: Storage, name: str, plan: str, change: Callable[[PlanStatus], PlanStatus]) -> PlanStatus:
    """Load the plan's record, apply `change`, store and return the result, with no other writer of this
    process in between. Raises StorageError (nothing is stored then)."""
    with _update_locks_guard:
        lock = _update_locks.setdefault(name, threading.Lock())
    with lock:
        new = change(load(storage, name, plan))
        save(storage, name, new)
        return new


def save(storage: Storage, name: str, status: PlanStatus) -> None:
    """Store the plan's status. Raises StorageError."""
    storage.put(name, status.to_json())


def settle(storage: Storage, status: PlanStatus, lock_name: str) -> PlanStatus:
    """Return `status` as readers should show it: a `running` attempt whose plan lock nobody holds any more,
    or whose holder is a process of this host that no longer exists (its Azure lease not yet expired), died
    without recording its end, and is shown as a failure (exit 137). Nothing is written.

    Raises StorageError when the lock cannot be read."""
    if status.running is None:
        return status
    holder = storage.lock_holder(lock_name)
    if holder is not None and holders.gone_pid(holder) is None:
        return status
    return status.abandoned()
