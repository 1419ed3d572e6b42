"""Local locks: an exclusive flock on a lock file that records its holder. The kernel releases it when the
holding process dies, so a local lock is never "lost" while held."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from backup_exporter.core.errors import LockHeld
from backup_exporter.core.naming import lock_subject
from backup_exporter.storage.local.errors import oserror


@contextlib.contextmanager
def hold(path: Path, name: str, holder: str) -> Iterator[None]:
    """Hold an exclusive flock on the file at `path` (lock `name`) for the with-block, recording `holder`.

    Raises LockHeld at entry when another open file (this or another process) holds it, and StorageError
    when the lock file cannot be used.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Never truncate on open: the file holds the current holder's description.
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise oserror(f"open lock {path}", exc) from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            current = _read_holder(fd)
            raise LockHeld(f"{lock_subject(name)} is locked by {current}", holder=current) from None
        except OSError as exc:
            raise oserror(f"lock {path}", exc) from exc
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, holder.encode("utf-8", "replace"), 0)
        except OSError as exc:
            raise oserror(f"write lock {path}", exc) from exc
        try:
            yield
        finally:
            # The file stays (deleting a lock file races with processes that just opened it);
            # emptying it tells lock_holder readers nobody holds it.
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # closing the last descriptor releases the flock


def holder_of(path: Path) -> str | None:
    """Return the recorded holder of the lock file at `path` when it is held, else None. Raises StorageError."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise oserror(f"open lock {path}", exc) from exc
    try:
        try:
            # Probe: a shared lock succeeds only when nobody holds the exclusive one.
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_holder(fd)
        except OSError as exc:
            raise oserror(f"probe lock {path}", exc) from exc
        return None
    finally:
        os.close(fd)


def _read_holder(fd: int) -> str:
    """Return the holder text kept in the lock file, or a placeholder when it is not written yet."""
    try:
        text = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
    except OSError:
        text = ""
    # One line: the holder is echoed into error messages.
    return " ".join(text.split()) or "an unknown holder"
