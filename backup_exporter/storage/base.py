"""The contract every storage backend keeps.

A backup is one object named ``<prefix>/<plan>/<UTC timestamp>.archive.gz``. It becomes visible only when
``Upload.commit`` is called; ``Upload.abort`` (or a crash) leaves nothing a listing would show. Beside the
backups each plan has a small status document (``<prefix>/<plan>/_status.json``) holding the last run's
result, so every process that backs up or exports metrics for the plan shares one truth, and a lock
(``<prefix>/<plan>/_lock``) so that no two processes dump the same plan at once.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from backup_exporter.core.naming import ARCHIVE_SUFFIX, ARCHIVE_SUFFIXES, LOCK_NAME, STATUS_NAME

__all__ = ["ARCHIVE_SUFFIX", "ARCHIVE_SUFFIXES", "LOCK_NAME", "STATUS_NAME", "BackupInfo", "Storage", "Upload"]


@dataclass(frozen=True)
class BackupInfo:
    """One committed backup as listed from storage."""

    name: str  # full object name, e.g. "prod/orders/2026-11-27T13-00-00Z.archive.gz"
    size: int
    last_modified: datetime  # timezone-aware UTC
    metadata: dict[str, str] = field(default_factory=dict)


class Upload(Protocol):
    """An archive being written. Bytes are shipped while they are produced; nothing is visible until commit."""

    @property
    def bytes_uploaded(self) -> int:
        """Bytes durably handed to storage so far (staged blocks, or written and flushed)."""
        ...

    def write(self, data: bytes) -> None:
        """Append bytes; blocks while too much is in flight (backpressure). Raises StorageError."""
        ...

    def commit(self, metadata: dict[str, str]) -> None:
        """Wait for every pending write, then make the object visible with metadata.

        Raises StorageError when anything failed, and when an object of that name already exists: a
        committed backup is never replaced. Nothing becomes visible then.
        """
        ...

    def abort(self) -> None:
        """Discard everything written; never raises, never leaves a visible object."""
        ...


class Storage(Protocol):
    """A place to keep backups. Implementations: storage.local.LocalStorage, storage.azure.AzureStorage."""

    def describe(self) -> str:
        """Return a human-readable location without secrets, e.g. 'azure://account/container'."""
        ...

    def ping(self) -> None:
        """Check the storage is reachable and usable. Raises StorageError (or AuthenticationFailed)."""
        ...

    def start_upload(self, name: str) -> Upload:
        """Begin writing the object `name`. Raises StorageError."""
        ...

    def list_backups(self, prefix: str) -> list[BackupInfo]:
        """Return committed archives directly under `prefix/` (names ending .archive.gz or .archive.gz.age),
        oldest first.

        Raises StorageError when the listing fails or is incomplete; never returns a partial list.
        """
        ...

    def read_backup(self, name: str, chunk_size: int = 4 << 20) -> Iterator[bytes]:
        """Stream the object's bytes in chunks. Raises StorageError (missing object included)."""
        ...

    def backup_info(self, name: str) -> BackupInfo:
        """Return size, time and metadata of one object. Raises StorageError when missing."""
        ...

    def delete_backups(self, names: Sequence[str]) -> None:
        """Delete these objects (in batches where the backend supports it). Raises StorageError."""
        ...

    def read_status(self, name: str) -> bytes | None:
        """Return the small status object `name`, or None when it does not exist. Raises StorageError."""
        ...

    def write_status(self, name: str, data: bytes) -> None:
        """Replace the small status object `name` atomically. Raises StorageError."""
        ...

    def lock(self, name: str, holder: str) -> contextlib.AbstractContextManager[None]:
        """Hold an exclusive lock named `name` for the duration of the with-block.

        Raises LockHeld at entry when another holder has it. The lock is renewed while held and expires by
        itself (within a minute) if the holder dies. Should it be lost while held (a lease broken, or not
        renewed for a whole lease period), writes and commits of uploads in the lock's folder raise
        StorageError, so a run that no longer owns its plan commits nothing. `holder` is a description
        recorded for `status`.
        """
        ...

    def lock_holder(self, name: str) -> str | None:
        """Return the description of the current holder of lock `name`, or None when free."""
        ...

    def close(self) -> None:
        """Release connections and threads."""
        ...
