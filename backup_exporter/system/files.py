"""Durable local file writes: a temporary name beside the target, fsync, rename, fsync the directory."""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

# Marks temporary files; readers of a directory (the local storage listing) skip names containing it.
PARTIAL_MARKER = ".partial-"


def fsync_dir(directory: Path) -> None:
    """Flush a directory entry change (a rename or unlink) to disk; raises OSError."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_path(final: Path) -> Path:
    """Return a fresh hidden temporary path next to `final` (same directory, so rename is atomic)."""
    return final.with_name(f".{final.name}{PARTIAL_MARKER}{os.getpid()}-{secrets.token_hex(4)}")


def write_atomically(final: Path, data: bytes, mode: int | None = None) -> None:
    """Replace `final` with `data` (file mode `mode` when given): a reader sees the old or the new content,
    never a mix, and no temporary file is left behind. Raises OSError."""
    temp = temp_path(final)
    try:
        with open(temp, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if mode is not None:
            os.chmod(temp, mode)
        os.replace(temp, final)
    except BaseException:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise
    fsync_dir(final.parent)
