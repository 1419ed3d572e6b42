"""A local upload: bytes go to a hidden temporary file; commit writes the metadata beside it and renames
it into place (metadata first, so a visible object always has its metadata)."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import IO

from backup_exporter.core.errors import StorageError
from backup_exporter.storage.local.errors import META_SUFFIX, oserror
from backup_exporter.system.files import fsync_dir, temp_path, write_atomically


def meta_path(path: Path) -> Path:
    """Return where the metadata of the object at `path` is kept."""
    return path.with_name(path.name + META_SUFFIX)


class LocalUpload:
    """An object being written to a hidden temporary file; commit renames it into place."""

    def __init__(self, final: Path) -> None:
        self._final = final
        self._temp = temp_path(final)
        self._bytes = 0
        self._done = False
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            # Unbuffered: every write reaches the OS at once, so bytes_uploaded is honest.
            self._file: IO[bytes] = open(self._temp, "xb", buffering=0)  # closed in commit or abort
        except OSError as exc:
            raise oserror(f"create {self._temp.parent}", exc) from exc

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
            raise oserror(f"write {self._temp}", exc) from exc
        self._bytes += len(data)

    def commit(self, metadata: dict[str, str], *, access_tier: str | None = None) -> None:
        """Make the object visible: fsync it, write its metadata, rename it, fsync the directory.

        `access_tier` is ignored: a directory has no tiers. Raises StorageError, also when an object of
        that name already exists (it is never replaced); the temporary file is removed on failure.
        """
        del access_tier
        if self._done:
            raise StorageError(f"local storage: upload of {self._final.name} is already finished")
        self._done = True
        meta = meta_path(self._final)
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
            # Metadata first: an object must never be visible without it, while metadata without its
            # object is harmless (never listed) and overwritten by the next commit of that name.
            write_atomically(meta, json.dumps(document, sort_keys=True).encode())
            os.replace(self._temp, self._final)
            fsync_dir(self._final.parent)
        except OSError as exc:
            self._discard()
            raise oserror(f"commit {self._final}", exc) from exc

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
