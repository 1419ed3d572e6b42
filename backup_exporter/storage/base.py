"""The storage contract: a small set of primitives every backend (local, Azure, in-memory) keeps.

A backend stores named objects (``prod/orders/2026-11-27T13-00-00Z.archive.gz``, ``prod/orders/_status.json``)
and knows nothing about backups: which names are a plan's archives, what the status records hold and what
metadata a backup carries are decided once, above it, in ``backup_exporter.repository``. Names are
``/``-separated paths; a "folder" is a name prefix ending at a ``/``.

The guarantees the rest of the project relies on:

* a streamed object (``start_upload``) becomes visible only at ``Upload.commit``; an abort or a crash leaves
  nothing that ``list_objects``/``stat``/``read`` would show;
* a commit never replaces an existing object of the same name (two runs named in the same second);
* a commit of an upload into a folder whose lock this process held and lost fails (a lease broken or not
  renewed for a whole lease period), so a run that no longer owns its plan commits nothing;
* ``list_objects`` either returns the complete listing or raises; never a partial list;
* small objects (``put``) are replaced atomically: a reader sees the old or the new bytes, never a mix.

The design follows restic's ``internal/backend``: one small interface, one folder per backend, the rules
above it in one place, and an in-memory backend (``storage.memory``) that passes the same contract tests.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

__all__ = ["ACCESS_TIERS", "READ_CHUNK", "ObjectInfo", "Storage", "Upload", "folder_of"]

# The Azure access tiers a backup may be committed into (the config stores them capitalised).
ACCESS_TIERS = ("Hot", "Cool", "Cold")
READ_CHUNK = 4 << 20  # default chunk size of Storage.read


@dataclass(frozen=True)
class ObjectInfo:
    """One stored object as listed or stat'ed."""

    name: str  # full object name, e.g. "prod/orders/2026-11-27T13-00-00Z.archive.gz"
    size: int
    last_modified: datetime  # timezone-aware UTC
    metadata: dict[str, str] = field(default_factory=dict)


class Upload(Protocol):
    """An object being streamed. Bytes are shipped while they are produced; nothing is visible until commit."""

    @property
    def bytes_uploaded(self) -> int:
        """Bytes durably handed to storage so far (staged blocks, or written and flushed)."""
        ...

    def write(self, data: bytes) -> None:
        """Append bytes; blocks while too much is in flight (backpressure).

        Raises StorageError when an earlier write failed, the upload is finished, or the lock of its folder
        was lost."""
        ...

    def commit(self, metadata: dict[str, str], *, access_tier: str | None = None) -> None:
        """Wait for every pending write, then make the object visible with `metadata`.

        `access_tier` (one of ACCESS_TIERS) is set by the same request that makes the object visible, on
        backends that have tiers (Azure); others ignore it. Raises StorageError when anything failed, when
        the lock of the object's folder was lost, and when an object of that name already exists: a
        committed object is never replaced. Nothing becomes visible then.
        """
        ...

    def abort(self) -> None:
        """Discard everything written; never raises, never leaves a visible object. A no-op after commit."""
        ...


class Storage(Protocol):
    """A place to keep objects. Implementations: storage.local.LocalStorage, storage.azure.AzureStorage,
    storage.memory.MemoryStorage. Every method raises StorageError (AuthenticationFailed for refused
    credentials) with one secret-free line."""

    def describe(self) -> str:
        """Return a human-readable location without secrets, e.g. 'azure://account/container'."""
        ...

    def ping(self) -> None:
        """Check the storage is reachable and usable. Raises StorageError (or AuthenticationFailed)."""
        ...

    def server_time(self) -> datetime | None:
        """Return storage's own current time (UTC), or None when it keeps no clock apart from this host's
        (local, memory). Retention checks this host's clock against it. Raises StorageError."""
        ...

    def start_upload(self, name: str) -> Upload:
        """Begin streaming the object `name`; nothing is visible until commit. Raises StorageError."""
        ...

    def put(self, name: str, data: bytes) -> None:
        """Create or replace the small object `name` atomically (status records). Raises StorageError."""
        ...

    def get(self, name: str) -> bytes | None:
        """Return the whole (small) object `name`, or None when it does not exist. Raises StorageError."""
        ...

    def read(self, name: str, chunk_size: int = READ_CHUNK) -> Iterator[bytes]:
        """Stream the object's bytes in chunks of at most `chunk_size`.

        Raises StorageError at once when the object is missing, and from the iterator on a failed read."""
        ...

    def stat(self, name: str) -> ObjectInfo:
        """Return size, time and metadata of one object. Raises StorageError when it is missing."""
        ...

    def list_objects(self, prefix: str) -> list[ObjectInfo]:
        """Return every object whose name is under the folder `prefix` (at any depth), sorted by name.

        `prefix` "" (or "/") lists everything; a trailing "/" is optional; a folder that does not exist
        lists as empty. Raises StorageError when the listing fails or is incomplete; never returns a
        partial list.
        """
        ...

    def delete(self, names: Sequence[str]) -> None:
        """Delete these objects (in batches where the backend supports it); missing ones are fine.

        Raises StorageError naming how many could not be deleted (e.g. an immutability policy refused).
        """
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


def folder_of(prefix: str) -> str:
    """Return `prefix` as a listing folder: without surrounding slashes and, unless empty, ending in "/"."""
    base = prefix.strip("/")
    return f"{base}/" if base else ""

