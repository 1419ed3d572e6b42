"""Backups in a local directory (a mounted volume, or tests).

Layout under the root, for an object named ``prod/orders/2026-11-27T13-00-00Z.archive.gz``:

* ``prod/orders/2026-11-27T13-00-00Z.archive.gz``: the committed archive;
* ``prod/orders/2026-11-27T13-00-00Z.archive.gz.meta.json``: its metadata, written before the archive is
  renamed into place, so a listed archive always has its metadata;
* ``prod/orders/.2026-11-27T13-00-00Z.archive.gz.partial-<pid>-<rand>``: an upload in progress (hidden,
  never listed, removed by abort; a crash leaves it behind, still invisible).

Every replacement is write-to-temp, fsync, rename, fsync the directory, so a crash at any point leaves
either the old or the new state, never a torn file.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from backup_exporter.core.errors import LockHeld, StorageError
from backup_exporter.core.naming import lock_subject
from backup_exporter.storage.base import ARCHIVE_SUFFIXES, BackupInfo
from backup_exporter.system.files import PARTIAL_MARKER
from backup_exporter.system.files import fsync_dir as _fsync_dir
from backup_exporter.system.files import temp_path as _temp_path
from backup_exporter.system.files import write_atomically as _write_atomically

META_SUFFIX = ".meta.json"
_PARTIAL = PARTIAL_MARKER


def _oserror(what: str, exc: OSError) -> StorageError:
    """Return a one-line StorageError for an OSError met while doing `what`."""
    reason = exc.strerror or type(exc).__name__
    return StorageError(f"local storage: cannot {what}: {reason}")


class LocalUpload:
    """An archive being written to a hidden temporary file; commit renames it into place."""

    def __init__(self, final: Path) -> None:
        self._final = final
        self._temp = _temp_path(final)
        self._bytes = 0
        self._done = False
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            # Unbuffered: every write reaches the OS at once, so bytes_uploaded is honest.
            self._file: IO[bytes] = open(self._temp, "xb", buffering=0)  # closed in commit or abort
        except OSError as exc:
            raise _oserror(f"create {self._temp.parent}", exc) from exc

    @property
    def bytes_uploaded(self) -> int:
        """Return the bytes written to the temporary file so far."""
        return self._bytes

    def write(self, data: bytes) -> None:
        """Append `data` to the temporary file. Raises StorageError (also after commit or abort)."""
        if self._done:
            raise StorageError(f"local storage: upload of {self._final.name} is already finished")
        try:
            view = memoryview(data)
            # A raw file may write less than asked; loop until all of it is written.
            while view:
                written = self._file.write(view)
                view = view[written or 0 :]
        except OSError as exc:
            raise _oserror(f"write {self._temp}", exc) from exc
        self._bytes += len(data)

    def commit(self, metadata: dict[str, str]) -> None:
        """Make the archive visible: fsync it, write its metadata, rename it, fsync the directory.

        Raises StorageError, also when a backup of that name already exists (it is never replaced); the
        temporary file is removed on failure.
        """
        if self._done:
            raise StorageError(f"local storage: upload of {self._final.name} is already finished")
        self._done = True
        meta = self._final.with_name(self._final.name + META_SUFFIX)
        if os.path.lexists(self._final):
            # Checked before the metadata is written, which would otherwise replace the existing
            # backup's. The plan's lock keeps another writer of this name away meanwhile.
            self._discard()
            raise StorageError(f"local storage: backup {self._final} already exists; it is left as it was "
                               f"and this upload is not committed")
        try:
            os.fsync(self._file.fileno())
            self._file.close()
            document = {"size": self._bytes, "metadata": dict(metadata)}
            # Metadata first: an archive must never be visible without it (list ignores such archives),
            # while metadata without its archive is harmless and overwritten by the next commit.
            _write_atomically(meta, json.dumps(document, sort_keys=True).encode())
            os.replace(self._temp, self._final)
            _fsync_dir(self._final.parent)
        except OSError as exc:
            self._discard()
            raise _oserror(f"commit {self._final}", exc) from exc

    def abort(self) -> None:
        """Discard the temporary file; never raises."""
        if self._done:
            return
        self._done = True
        self._discard()

    def _discard(self) -> None:
        with contextlib.suppress(OSError):
            self._file.close()
        with contextlib.suppress(OSError):
            self._temp.unlink()


class LocalStorage:
    """The Storage contract on a local directory `root`, which must exist (see ping)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).absolute()

    # -- paths ------------------------------------------------------------------------------------------

    def _path(self, name: str) -> Path:
        """Return the path of object `name`. Raises StorageError for names escaping the root."""
        parts = name.split("/")
        if (
            not name
            or name.startswith("/")
            or "\\" in name
            or "\0" in name
            or any(part in ("", ".", "..") for part in parts)
        ):
            raise StorageError(f"local storage: invalid object name {name!r}")
        return self.root.joinpath(*parts)

    def _dir(self, prefix: str) -> Path:
        prefix = prefix.strip("/")
        return self._path(prefix) if prefix else self.root

    # -- Storage ----------------------------------------------------------------------------------------

    def describe(self) -> str:
        """Return the location as a file:// URL."""
        return f"file://{self.root}"

    def ping(self) -> None:
        """Check the root is an existing, writable directory. Raises StorageError.

        The root is not created: a missing root usually means a volume that is not mounted, and writing
        backups into the container's own filesystem instead would lose them.
        """
        if not self.root.is_dir():
            raise StorageError(f"local storage directory {self.root} does not exist")
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise StorageError(f"local storage directory {self.root} is not writable")

    def start_upload(self, name: str) -> LocalUpload:
        """Begin writing archive `name` to a hidden temporary file. Raises StorageError."""
        return LocalUpload(self._path(name))

    def list_backups(self, prefix: str) -> list[BackupInfo]:
        """Return committed archives directly in `prefix/` that have their metadata, oldest first.

        Raises StorageError when the directory cannot be read; a missing directory lists as empty.
        """
        directory = self._dir(prefix)
        base = prefix.strip("/")
        found: list[BackupInfo] = []
        try:
            entries = list(os.scandir(directory))
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise _oserror(f"list {directory}", exc) from exc
        for entry in entries:
            if entry.name.startswith(".") or not entry.name.endswith(ARCHIVE_SUFFIXES):
                continue
            name = f"{base}/{entry.name}" if base else entry.name
            info = self._info(name, missing_ok=True)
            if info is not None:
                found.append(info)
        found.sort(key=lambda b: (b.last_modified, b.name))
        return found

    def _info(self, name: str, missing_ok: bool) -> BackupInfo | None:
        path = self._path(name)
        meta = path.with_name(path.name + META_SUFFIX)
        try:
            st = os.stat(path)
            if not os.path.isfile(path):
                raise FileNotFoundError(errno.ENOENT, "not a file")
            document: Any = json.loads(meta.read_bytes())
        except FileNotFoundError as exc:
            # Without its metadata an archive was never committed by us: not a backup.
            if missing_ok:
                return None
            raise StorageError(f"local storage: backup {name} does not exist") from exc
        except OSError as exc:
            raise _oserror(f"read {path}", exc) from exc
        except ValueError as exc:
            raise StorageError(f"local storage: metadata of {name} is not valid JSON") from exc
        metadata = document.get("metadata", {}) if isinstance(document, dict) else {}
        return BackupInfo(
            name=name,
            size=st.st_size,
            last_modified=datetime.fromtimestamp(st.st_mtime, tz=UTC),
            metadata={str(k): str(v) for k, v in metadata.items()},
        )

    def backup_info(self, name: str) -> BackupInfo:
        """Return size, modification time and metadata of archive `name`. Raises StorageError."""
        info = self._info(name, missing_ok=False)
        assert info is not None  # missing_ok=False raises instead
        return info

    def read_backup(self, name: str, chunk_size: int = 4 << 20) -> Iterator[bytes]:
        """Return an iterator over the archive's bytes in chunks of at most `chunk_size`.

        Raises StorageError at once when the object is missing, and from the iterator on read errors.
        """
        path = self._path(name)
        try:
            f = open(path, "rb")  # closed by the generator
        except FileNotFoundError as exc:
            raise StorageError(f"local storage: backup {name} does not exist") from exc
        except OSError as exc:
            raise _oserror(f"read {path}", exc) from exc
        return self._chunks(f, path, chunk_size)

    @staticmethod
    def _chunks(f: IO[bytes], path: Path, chunk_size: int) -> Iterator[bytes]:
        with f:
            while True:
                try:
                    chunk = f.read(chunk_size)
                except OSError as exc:
                    raise _oserror(f"read {path}", exc) from exc
                if not chunk:
                    return
                yield chunk

    def delete_backups(self, names: Sequence[str]) -> None:
        """Delete these archives and their metadata; already missing ones are fine. Raises StorageError."""
        touched: set[Path] = set()
        for name in names:
            path = self._path(name)
            meta = path.with_name(path.name + META_SUFFIX)
            # Archive first: once it is gone the backup is no longer listed, even if removing the
            # metadata fails.
            for target in (path, meta):
                try:
                    target.unlink()
                except FileNotFoundError:
                    pass
                except OSError as exc:
                    raise _oserror(f"delete {target}", exc) from exc
            touched.add(path.parent)
        for directory in touched:
            with contextlib.suppress(OSError):
                _fsync_dir(directory)

    def read_status(self, name: str) -> bytes | None:
        """Return the status object `name`, or None when it does not exist. Raises StorageError."""
        path = self._path(name)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise _oserror(f"read {path}", exc) from exc

    def write_status(self, name: str, data: bytes) -> None:
        """Replace the status object `name` atomically. Raises StorageError."""
        path = self._path(name)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            _write_atomically(path, data)
        except OSError as exc:
            raise _oserror(f"write {path}", exc) from exc

    @contextlib.contextmanager
    def lock(self, name: str, holder: str) -> Iterator[None]:
        """Hold an exclusive flock on the file `name` for the with-block, recording `holder` in it.

        Raises LockHeld at entry when another open file (this or another process) holds it, and
        StorageError when the lock file cannot be used. The kernel releases the lock if the process dies.
        """
        path = self._path(name)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # Never truncate on open: the file holds the current holder's description.
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise _oserror(f"open lock {path}", exc) from exc
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                current = _read_holder(fd)
                raise LockHeld(f"{lock_subject(name)} is locked by {current}") from None
            except OSError as exc:
                raise _oserror(f"lock {path}", exc) from exc
            try:
                os.ftruncate(fd, 0)
                os.pwrite(fd, holder.encode("utf-8", "replace"), 0)
            except OSError as exc:
                raise _oserror(f"write lock {path}", exc) from exc
            try:
                yield
            finally:
                # The file stays (deleting a lock file races with processes that just opened it);
                # emptying it tells lock_holder readers nobody holds it.
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, 0)
        finally:
            os.close(fd)  # closing the last descriptor releases the flock

    def lock_holder(self, name: str) -> str | None:
        """Return the recorded holder of lock `name` when it is held, else None. Raises StorageError."""
        path = self._path(name)
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise _oserror(f"open lock {path}", exc) from exc
        try:
            try:
                # Probe: a shared lock succeeds only when nobody holds the exclusive one.
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return _read_holder(fd)
            except OSError as exc:
                raise _oserror(f"probe lock {path}", exc) from exc
            return None
        finally:
            os.close(fd)

    def close(self) -> None:
        """Nothing to release."""


def _read_holder(fd: int) -> str:
    """Return the holder text kept in the lock file, or a placeholder when it is not written yet."""
    try:
        text = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
    except OSError:
        text = ""
    # One line: the holder is echoed into error messages.
    return " ".join(text.split()) or "an unknown holder"
