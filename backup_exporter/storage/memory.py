"""The storage contract in memory: for tests about run, retention and lifecycle logic, where a real
directory or Azurite adds time but nothing under test. It passes the same contract tests as the local and
Azure backends (tests/test_storage_contract.py), and keeps their guarantees: nothing visible before commit,
a commit never replaces an object, a lost lock fails the commits of its folder (see break_lock), a
listing is all or nothing.

One MemoryStorage is one store: locks exclude holders of the same object (threads of one process).
Everything is guarded by one mutex, so it is safe to share between threads.
"""

from __future__ import annotations

import contextlib
import posixpath
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from backup_exporter.core.errors import LockHeld, StorageError
from backup_exporter.core.naming import lock_subject
from backup_exporter.storage.base import READ_CHUNK, ObjectInfo, folder_of


@dataclass
class _Object:
    data: bytes
    metadata: dict[str, str]
    modified: datetime


@dataclass
class _Lease:
    holder: str
    lost: bool = False


class MemoryUpload:
    """An object buffered in memory; commit inserts it into the store in one step."""

    def __init__(self, store: MemoryStorage, name: str, lease: _Lease | None) -> None:
        self._store = store
        self._name = name
        self._lease = lease  # the lock held on the object's folder when the upload started
        self._buffer = bytearray()
        self._written = 0
        self._done = False

    @property
    def bytes_uploaded(self) -> int:
        """Return the bytes written so far."""
        return self._written

    def write(self, data: bytes) -> None:
        """Append `data`. Raises StorageError after commit or abort, or when the folder's lock was lost."""
        self._check()
        self._buffer += data
        self._written += len(data)

    def commit(self, metadata: dict[str, str], *, access_tier: str | None = None) -> None:
        """Make the object visible with `metadata` (`access_tier` is ignored: memory has no tiers).

        Raises StorageError when the object exists already (it is never replaced), when the lock of its
        folder was lost, or after commit or abort; nothing is visible then.
        """
        del access_tier
        self._check()
        self._done = True
        try:
            self._store.insert(self._name, bytes(self._buffer), dict(metadata))
        finally:
            self._buffer = bytearray()

    def abort(self) -> None:
        """Discard the buffered bytes; never raises."""
        self._done = True
        self._buffer = bytearray()

    def _check(self) -> None:
        if self._done:
            raise StorageError(f"memory storage: upload of {self._name} is already finished")
        if self._lease is not None and self._lease.lost:
            raise StorageError(f"memory storage: the lock of {posixpath.dirname(self._name)} was lost while "
                               f"uploading {self._name}: another run may hold the plan, so this one is not "
                               f"committed")


class MemoryStorage:
    """The Storage contract in a dict. `label` names it in describe()."""

    def __init__(self, label: str = "test") -> None:
        self.label = label
        self._objects: dict[str, _Object] = {}
        self._leases: dict[str, _Lease] = {}  # by lock name
        self._lost: dict[str, _Lease] = {}  # broken leases whose with-block has not ended yet, by lock name
        self._mutex = threading.Lock()

    # -- test helpers -----------------------------------------------------------------------------------

    def break_lock(self, name: str) -> None:
        """Take the lock `name` away from its holder, as an operator breaking an Azure lease does: the
        holder's uploads in that folder then fail, and another holder may take the lock."""
        with self._mutex:
            lease = self._leases.pop(name, None)
            if lease is not None:
                lease.lost = True
                self._lost[name] = lease  # uploads its holder starts from now on fail too

    # -- Storage ----------------------------------------------------------------------------------------

    def describe(self) -> str:
        """Return e.g. 'memory://test'."""
        return f"memory://{self.label}"

    def ping(self) -> None:
        """Always reachable."""

    def server_time(self) -> datetime | None:
        """Return None: memory keeps this host's clock."""
        return None

    def start_upload(self, name: str) -> MemoryUpload:
        """Begin buffering object `name`. Raises StorageError for an invalid name."""
        _check_name(name)
        with self._mutex:
            lease = self._lease_of_folder(name)
        return MemoryUpload(self, name, lease)

    def insert(self, name: str, data: bytes, metadata: dict[str, str]) -> None:
        """Add a committed object. Raises StorageError when it exists, or its folder's lock was lost."""
        with self._mutex:
            if name in self._objects:
                raise StorageError(f"memory storage: backup {name} already exists; it is left as it was and "
                                   f"this upload is not committed")
            self._objects[name] = _Object(data, metadata, datetime.now(UTC))

    def put(self, name: str, data: bytes) -> None:
        """Replace the object `name` (without metadata)."""
        _check_name(name)
        with self._mutex:
            self._objects[name] = _Object(bytes(data), {}, datetime.now(UTC))

    def get(self, name: str) -> bytes | None:
        """Return the object's bytes, or None when it does not exist."""
        with self._mutex:
            found = self._objects.get(name)
        return found.data if found is not None else None

    def read(self, name: str, chunk_size: int = READ_CHUNK) -> Iterator[bytes]:
        """Return an iterator over the object's bytes. Raises StorageError at once when it is missing."""
        data = self.get(name)
        if data is None:
            raise StorageError(f"memory storage: backup {name} does not exist")
        step = max(1, chunk_size)
        return iter([data[start : start + step] for start in range(0, len(data), step)])

    def stat(self, name: str) -> ObjectInfo:
        """Return the object's size, time and metadata. Raises StorageError when it is missing."""
        with self._mutex:
            found = self._objects.get(name)
            if found is None:
                raise StorageError(f"memory storage: backup {name} does not exist")
            return _info(name, found)

    def list_objects(self, prefix: str) -> list[ObjectInfo]:
        """Return every object under the folder `prefix`, at any depth, sorted by name."""
        folder = folder_of(prefix)
        with self._mutex:
            return [_info(name, found) for name, found in sorted(self._objects.items())
                    if name.startswith(folder)]

    def delete(self, names: Sequence[str]) -> None:
        """Delete these objects; missing ones are fine."""
        with self._mutex:
            for name in names:
                self._objects.pop(name, None)

    @contextlib.contextmanager
    def lock(self, name: str, holder: str) -> Iterator[None]:
        """Hold the lock `name` for the with-block. Raises LockHeld at entry when it is held."""
        _check_name(name)
        lease = _Lease(" ".join(holder.split()) or "an unknown holder")
        with self._mutex:
            current = self._leases.get(name)
            if current is not None:
                raise LockHeld(f"{lock_subject(name)} is locked by {current.holder}", holder=current.holder)
            self._leases[name] = lease
            # Like the lock blob of Azure and the lock file of the local backend, the lock is an object.
            self._objects.setdefault(name, _Object(b"", {}, datetime.now(UTC)))
        try:
            yield
        finally:
            with self._mutex:
                if self._leases.get(name) is lease:
                    del self._leases[name]
                if self._lost.get(name) is lease:
                    del self._lost[name]

    def lock_holder(self, name: str) -> str | None:
        """Return the holder of lock `name`, or None when it is free."""
        with self._mutex:
            lease = self._leases.get(name)
        return lease.holder if lease is not None else None

    def close(self) -> None:
        """Nothing to release; the objects live as long as the instance."""

    def _lease_of_folder(self, name: str) -> _Lease | None:
        """Return the lease held on the folder of object `name` (a lost one when it was broken), or None."""
        folder = posixpath.dirname(name)
        for table in (self._leases, self._lost):
            for lock_name, lease in table.items():
                if posixpath.dirname(lock_name) == folder:
                    return lease
        return None


def _check_name(name: str) -> None:
    if not name or name.startswith("/") or any(part in ("", ".", "..") for part in name.split("/")):
        raise StorageError(f"memory storage: invalid object name {name!r}")


def _info(name: str, found: _Object) -> ObjectInfo:
    return ObjectInfo(name=name, size=len(found.data), last_modified=found.modified, metadata=dict(found.metadata))
