"""Reading a stored backup back: a file over storage chunks that hashes and counts every byte, the
decryption of an encrypted backup on the way, and the comparison of what was read with the sha256 and size
recorded at commit."""

from __future__ import annotations

import hashlib
import io
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from pyrage import x25519

from backup_exporter.archive import encryption
from backup_exporter.core.errors import ArchiveError, ConfigError, DecryptionFailed, Interrupted
from backup_exporter.core.naming import is_encrypted_name
from backup_exporter.repository.metadata import expected_digest
from backup_exporter.storage.base import ObjectInfo, Storage

__all__ = ["READ_CHUNK", "BlobReader", "OpenedBackup", "expected_digest", "finish_integrity",
           "integrity_problems", "is_encrypted", "open_backup", "recipients_of", "signum_of"]

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


def finish_integrity(name: str, opened: OpenedBackup) -> None:
    """Raise ArchiveError when a restored backup's bytes do not match its metadata (see OpenedBackup)."""
    problems = opened.problems()
    if problems:
        raise ArchiveError(f"backup {name} was restored but does not match its metadata, so the restored "
                           f"data is suspect: {'; '.join(problems)}")


# ------------------------------------------------------------------------------------ encrypted backups


def is_encrypted(info: ObjectInfo) -> bool:
    """Return True when the backup is age-encrypted (by its name or its metadata)."""
    return is_encrypted_name(info.name) or info.metadata.get(encryption.METADATA_KEY) == encryption.FORMAT


def recipients_of(info: ObjectInfo) -> list[str]:
    """Return the fingerprints of the public keys the backup was encrypted for, as its metadata records."""
    return [r for r in (info.metadata.get("recipients") or "").split(",") if r]


@dataclass
class OpenedBackup:
    """A stored backup being read: `blob` yields and hashes the stored bytes (what the metadata's sha256
    and size describe); `archive` yields and hashes the gzip'd archive: the blob itself, or, for an
    encrypted backup, its decryption."""

    info: ObjectInfo
    blob: BlobReader
    archive: BlobReader
    decrypt_error: DecryptionFailed | None = None  # kept when met, reported by problems()

    @property
    def encrypted(self) -> bool:
        return self.archive is not self.blob

    def drain(self) -> None:
        """Read (hash, count, tee) whatever the consumer left, archive first, then the rest of the blob.
        A decryption failure is not raised here: problems() reports it."""
        try:
            self.archive.drain()
        except DecryptionFailed:
            pass  # kept in decrypt_error
        if self.encrypted:
            self.blob.drain()

    def problems(self) -> list[str]:
        """Return what does not match the metadata: the stored bytes, and the decrypted archive's sha256
        and size when the backup recorded them."""
        problems = integrity_problems(self.blob, self.info)
        if self.decrypt_error is not None:
            problems.append(self.decrypt_error.message)  # what was decrypted before it is beside the point
        elif self.encrypted:
            sha = (self.info.metadata.get("archive_sha256") or "").strip().lower()
            size = (self.info.metadata.get("archive_size") or "").strip()
            if size.isdigit() and self.archive.size != int(size):
                problems.append(f"decrypted archive size mismatch: metadata says {size} bytes, "
                                f"decrypted {self.archive.size}")
            elif sha and self.archive.sha256 != sha:
                problems.append(f"decrypted archive sha256 mismatch: metadata says {sha}, "
                                f"content is {self.archive.sha256}")
        return problems

    def close(self) -> None:
        self.archive.close()  # for an encrypted backup this stops the decrypting thread first
        self.blob.close()


def open_backup(storage: Storage, info: ObjectInfo, identities: Sequence[x25519.Identity] | None, *,
                tee: Callable[[bytes], None] | None = None,
                cancel: threading.Event | None = None) -> OpenedBackup:
    """Return the backup `info` opened for reading; `tee` receives every archive chunk as it is pulled.

    Raises ConfigError when the backup is encrypted and no identity was given (nothing is read then).
    Reading the archive raises WrongIdentity or DecryptionFailed for an encrypted backup that the
    identities cannot open, or whose bytes were changed.
    """
    encrypted = is_encrypted(info)
    if encrypted and not identities:
        fingerprints = ", ".join(recipients_of(info)) or "unrecorded keys"
        raise ConfigError([f"backup {info.name} is encrypted (age, for {fingerprints}): give the identity "
                           f"with --identity-file PATH, ${encryption.ENV_IDENTITY_FILE} or "
                           f"${encryption.ENV_IDENTITY}"])
    chunks = storage.read(info.name, READ_CHUNK)
    if not encrypted:
        reader = BlobReader(chunks, tee=tee, cancel=cancel)
        return OpenedBackup(info, reader, reader)
    assert identities is not None
    blob = BlobReader(chunks, cancel=cancel)
    plain = encryption.decrypted_chunks(blob, identities, name=info.name, recipients=recipients_of(info))
    opened = OpenedBackup(info, blob, blob)
    opened.archive = BlobReader(_keeping_decrypt_error(plain, opened), tee=tee, cancel=cancel)
    return opened


def _keeping_decrypt_error(chunks: Iterator[bytes], opened: OpenedBackup) -> Iterator[bytes]:
    try:
        yield from chunks
    except DecryptionFailed as exc:
        opened.decrypt_error = exc
        raise
