"""Reading a stored backup back: a file over storage chunks that hashes and counts every byte, and the
comparison of what was read with the sha256 and size recorded at commit."""

from __future__ import annotations

import hashlib
import io
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any

from backup_exporter.core.errors import ArchiveError, Interrupted
from backup_exporter.repository.metadata import expected_digest
from backup_exporter.storage.base import ObjectInfo

__all__ = ["READ_CHUNK", "BlobReader", "expected_digest", "finish_integrity", "integrity_problems", "signum_of"]

READ_CHUNK = 1 << 20  # storage read size: big enough for throughput, small enough to hold a few


def signum_of(cancel: threading.Event) -> int:
    # A runner's cancel token may record which signal set it; SIGTERM is what a stopping pod receives.
    return int(getattr(cancel, "signum", signal.SIGTERM))


class BlobReader(io.RawIOBase):
    """A read-only file over a storage chunk iterator that hashes and counts every byte it pulls.

    `tee`, when given, receives each chunk as it is pulled from storage (used to feed mongorestore with
    exactly the bytes that are being hashed and parsed). Holds at most one chunk.
    """

    def __init__(self, chunks: Iterator[bytes], tee: Callable[[bytes], None] | None = None,
                 cancel: threading.Event | None = None) -> None:
        super().__init__()
        self._chunks = chunks
        self._tee = tee
        self._cancel = cancel
        self._pending = memoryview(b"")
        self._exhausted = False
        self._hash = hashlib.sha256()
        self.size = 0

    def readable(self) -> bool:
        return True

    def _pull(self) -> bool:
        """Fetch the next chunk; return False at the end of the object."""
        while not self._exhausted:
            if self._cancel is not None and self._cancel.is_set():
                raise Interrupted(signum_of(self._cancel))
            chunk = next(self._chunks, None)
            if chunk is None:
                self._exhausted = True
                break
            if not chunk:
                continue
            self._hash.update(chunk)
            self.size += len(chunk)
            if self._tee is not None:
                self._tee(chunk)
            self._pending = memoryview(chunk)
            return True
        return False

    def readinto(self, buffer: Any) -> int:
        if not self._pending and not self._pull():
            return 0
        target = memoryview(buffer).cast("B")
        n = min(len(target), len(self._pending))
        target[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n

    def drain(self) -> None:
        """Pull (hash, count, tee) whatever the consumer did not read, without keeping it."""
        self._pending = memoryview(b"")
        while self._pull():
            self._pending = memoryview(b"")

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()

    def close(self) -> None:
        # Closing the generator releases the file or HTTP connection behind it at once.
        closer = getattr(self._chunks, "close", None)
        if callable(closer):
            closer()
        super().close()


def integrity_problems(reader: BlobReader, info: ObjectInfo) -> list[str]:
    """Return what does not match between the bytes read and the object's metadata and size."""
    expected_sha, expected_size = expected_digest(info)
    problems = []
    if expected_size is not None and reader.size != expected_size:
        problems.append(f"size mismatch: metadata says {expected_size} bytes, read {reader.size}")
    elif reader.size != info.size:
        problems.append(f"size mismatch: storage says {info.size} bytes, read {reader.size}")
    if expected_sha is not None and reader.sha256 != expected_sha:
        problems.append(f"sha256 mismatch: metadata says {expected_sha}, content is {reader.sha256}")
    return problems


def finish_integrity(name: str, reader: BlobReader, info: ObjectInfo) -> None:
    problems = integrity_problems(reader, info)
    if problems:
        raise ArchiveError(f"backup {name} was restored but does not match its metadata, so the restored "
                           f"data is suspect: {'; '.join(problems)}")
