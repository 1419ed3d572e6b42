"""The storage contract on a local directory.

Layout under the root, for an object named ``prod/orders/2026-11-27T13-00-00Z.archive.gz``:

* ``prod/orders/2026-11-27T13-00-00Z.archive.gz``: the object's bytes;
* ``prod/orders/2026-11-27T13-00-00Z.archive.gz.meta.json``: the metadata of a committed upload, written
  before the object is renamed into place (see upload.py); never listed as an object itself;
* ``prod/orders/.2026-11-27T13-00-00Z.archive.gz.partial-<pid>-<rand>``: an upload in progress (hidden,
  never listed, removed by abort; a crash leaves it behind, still invisible).

Hidden names (a last part starting with ".") and ``.meta.json`` names are the layout's own, so they are
refused as object names. Every replacement is write-to-temp, fsync, rename, fsync the directory, so a
crash at any point leaves either the old or the new state, never a torn file.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat as stat_mode
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from backup_exporter.core.errors import StorageError
from backup_exporter.storage.base import READ_CHUNK, ObjectInfo
from backup_exporter.storage.local import lock as flock
from backup_exporter.storage.local.errors import META_SUFFIX, oserror
from backup_exporter.storage.local.upload import LocalUpload, meta_path
from backup_exporter.system.files import fsync_dir, write_atomically


class LocalStorage:
    """The Storage contract on a local directory `root`, which must exist (see ping)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).absolute()

    # -- paths ------------------------------------------------------------------------------------------

    def _path(self, name: str) -> Path:
        """Return the path of object `name`. Raises StorageError for names escaping the root or taken by
        the layout (hidden names, metadata files)."""
        parts = name.split("/")
        if (
            not name
            or name.startswith("/")
            or "\\" in name
            or "\0" in name
            or any(part in ("", ".", "..") for part in parts)
            or parts[-1].startswith(".")
            or parts[-1].endswith(META_SUFFIX)
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

    def server_time(self) -> datetime | None:
        """Return None: a local file system keeps this host's clock."""
        return None

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
        """Begin writing object `name` to a hidden temporary file. Raises StorageError."""
        return LocalUpload(self._path(name))

    def put(self, name: str, data: bytes) -> None:
        """Replace the small object `name` atomically. Raises StorageError."""
        path = self._path(name)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomically(path, data)
        except OSError as exc:
            raise oserror(f"write {path}", exc) from exc

    def get(self, name: str) -> bytes | None:
        """Return the object `name`, or None when it does not exist. Raises StorageError."""
        path = self._path(name)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise oserror(f"read {path}", exc) from exc

    def read(self, name: str, chunk_size: int = READ_CHUNK) -> Iterator[bytes]:
        """Return an iterator over the object's bytes in chunks of at most `chunk_size`.

        Raises StorageError at once when the object is missing, and from the iterator on read errors.
        """
        path = self._path(name)
        try:
            f = open(path, "rb")  # closed by the generator
        except FileNotFoundError as exc:
            raise StorageError(f"local storage: backup {name} does not exist") from exc
        except OSError as exc:
            raise oserror(f"read {path}", exc) from exc
        return self._chunks(f, path, max(1, chunk_size))

    @staticmethod
    def _chunks(f: IO[bytes], path: Path, chunk_size: int) -> Iterator[bytes]:
        with f:
            while True:
                try:
                    chunk = f.read(chunk_size)
                except OSError as exc:
                    raise oserror(f"read {path}", exc) from exc
                if not chunk:
                    return
                yield chunk

    def stat(self, name: str) -> ObjectInfo:
        """Return size, modification time and metadata of object `name`. Raises StorageError when missing."""
        path = self._path(name)
        try:
            st = os.stat(path)
        except FileNotFoundError as exc:
            raise StorageError(f"local storage: backup {name} does not exist") from exc
        except OSError as exc:
            raise oserror(f"read {path}", exc) from exc
        if not stat_mode.S_ISREG(st.st_mode):
            raise StorageError(f"local storage: backup {name} does not exist")
        return self._info(name, path, st)

    def _info(self, name: str, path: Path, st: os.stat_result) -> ObjectInfo:
        meta = meta_path(path)
        try:
            document: Any = json.loads(meta.read_bytes())
        except FileNotFoundError:
            document = {}  # written by put, or copied in by hand: no metadata
        except OSError as exc:
            raise oserror(f"read {meta}", exc) from exc
        except ValueError as exc:
            raise StorageError(f"local storage: metadata of {name} is not valid JSON ({meta})") from exc
        metadata = document.get("metadata", {}) if isinstance(document, dict) else {}
        return ObjectInfo(
            name=name,
            size=st.st_size,
            last_modified=datetime.fromtimestamp(st.st_mtime, tz=UTC),
            metadata={str(k): str(v) for k, v in metadata.items()},
        )

    def list_objects(self, prefix: str) -> list[ObjectInfo]:
        """Return every object under the folder `prefix`, at any depth, sorted by name.

        Hidden files (uploads in progress) and metadata files are not objects. A missing folder lists as
        empty. Raises StorageError when any directory cannot be read.
        """
        directory = self._dir(prefix)
        found: list[ObjectInfo] = []

        def fail(exc: OSError) -> None:
            if isinstance(exc, FileNotFoundError):
                return  # the folder does not exist (yet), or was removed while listing: nothing stored there
            raise oserror(f"list {exc.filename or directory}", exc) from exc

        for here, dirs, files in os.walk(directory, onerror=fail):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for file in files:
                if file.startswith(".") or file.endswith(META_SUFFIX):
                    continue
                path = Path(here, file)
                name = path.relative_to(self.root).as_posix()
                try:
                    st = os.stat(path)
                except FileNotFoundError:
                    continue  # deleted while listing: it is gone either way
                except OSError as exc:
                    raise oserror(f"list {path}", exc) from exc
                if stat_mode.S_ISREG(st.st_mode):
                    found.append(self._info(name, path, st))
        found.sort(key=lambda o: o.name)
        return found

    def delete(self, names: Sequence[str]) -> None:
        """Delete these objects and their metadata; already missing ones are fine. Raises StorageError."""
        touched: set[Path] = set()
        for name in names:
            path = self._path(name)
            # The object first: once it is gone it is no longer listed, even if removing the metadata fails.
            for target in (path, meta_path(path)):
                try:
                    target.unlink()
                except FileNotFoundError:
                    pass
                except OSError as exc:
                    raise oserror(f"delete {target}", exc) from exc
            touched.add(path.parent)
        for directory in touched:
            with contextlib.suppress(OSError):
                fsync_dir(directory)

    def lock(self, name: str, holder: str) -> contextlib.AbstractContextManager[None]:
        """Hold an exclusive flock on the file `name` for the with-block, recording `holder` in it.

        Raises LockHeld at entry when another open file (this or another process) holds it, and
        StorageError when the lock file cannot be used. The kernel releases the lock if the process dies.
        """
        return flock.hold(self._path(name), name, holder)

    def lock_holder(self, name: str) -> str | None:
        """Return the recorded holder of lock `name` when it is held, else None. Raises StorageError."""
        return flock.holder_of(self._path(name))

    def close(self) -> None:
        """Nothing to release."""
