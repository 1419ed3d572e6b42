"""`backupctl verify`: stream a backup once, checking gzip, archive structure, every namespace CRC, and the
sha256 and size recorded at commit; an encrypted backup without its key (or --deep): the stored bytes only."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from pyrage import x25519

from backup_exporter import archive
from backup_exporter.archive import encryption
from backup_exporter.core.errors import ArchiveError
from backup_exporter.repository.reading import (
    READ_CHUNK,
    BlobReader,
    expected_digest,
    integrity_problems,
    is_encrypted,
    open_backup,
    recipients_of,
)
from backup_exporter.storage.base import ObjectInfo, Storage


@dataclass
class VerifyReport:
    """A backup that passed verification: its checksum, size and what the archive holds."""

    name: str
    size: int
    sha256: str
    sha256_checked: bool  # False when the object carries no sha256 in its metadata
    engine: str | None
    tool_version: str
    server_version: str
    namespaces: dict[str, int] = field(default_factory=dict)  # "db.coll" -> documents, archive order
    encrypted: bool = False
    recipients: list[str] = field(default_factory=list)  # fingerprints of the public keys it is encrypted for
    contents_checked: bool = True  # False: an encrypted backup verified without its key (bytes only)

    @property
    def documents(self) -> int:
        return sum(self.namespaces.values())


def verify_backup(storage: Storage, name: str, *, deep: bool = False,
                  identities: Sequence[x25519.Identity] | None = None,
                  cancel: threading.Event | None = None,
                  on_read: Callable[[bytes], None] | None = None) -> VerifyReport:
    """Stream backup `name` once: compare its sha256 and size with the object's metadata, and check its
    gzip stream, archive structure and every namespace CRC. `on_read` sees
    each chunk read (progress).

    An encrypted backup is only hashed (no key needed: the metadata describes the encrypted bytes) unless
    `deep`, which decrypts it with `identities` and checks the archive inside too (and the decrypted
    archive's sha256 and size recorded at commit).

    Returns the VerifyReport (per-namespace document counts when the archive was read). Raises
    ArchiveError naming every problem found (sha256 or size mismatch, not age data, data that does not
    decrypt, corrupt gzip data, CRC mismatch of a namespace, truncation), ConfigError for `deep` on an
    encrypted backup without identities, WrongIdentity when they do not open it, StorageError (or
    AuthenticationFailed) when the object cannot be read, and Interrupted when `cancel` is set.
    """
    info = storage.stat(name)
    encrypted = is_encrypted(info)
    if encrypted and not deep:
        return _verify_stored_bytes(storage, info, cancel, on_read)
    opened = open_backup(storage, info, identities, tee=on_read, cancel=cancel)
    summary: archive.ArchiveSummary | None = None
    archive_problem: str | None = None
    try:
        try:
            summary = archive.verify_archive(archive.gunzip_stream(opened.archive))
        except (ArchiveError, *archive.DECOMPRESS_ERRORS) as exc:
            archive_problem = archive.describe_archive_problem(exc)
        # Hash every byte even after a failure, so the report can say whether the stored object changed
        # since it was written (sha256 mismatch) or was written bad.
        opened.drain()
    finally:
        opened.close()
    problems = opened.problems()
    if archive_problem is not None and archive_problem not in problems:
        problems.append(archive_problem)
    if problems or summary is None:
        raise ArchiveError(f"backup {name} failed verification: {'; '.join(problems)}")
    return VerifyReport(
        name=name, size=opened.blob.size, sha256=opened.blob.sha256,
        sha256_checked=expected_digest(info)[0] is not None, engine=info.metadata.get("engine") or None,
        tool_version=summary.header.tool_version, server_version=summary.header.server_version,
        namespaces={ns: s.documents for ns, s in summary.namespaces.items()},
        encrypted=encrypted, recipients=recipients_of(info), contents_checked=True)


def _verify_stored_bytes(storage: Storage, info: ObjectInfo, cancel: threading.Event | None,
                         on_read: Callable[[bytes], None] | None) -> VerifyReport:
    """Hash an encrypted backup without decrypting it: sha256 and size against the metadata, and the age
    header at its start. Raises ArchiveError naming every problem."""
    reader = BlobReader(storage.read(info.name, READ_CHUNK), tee=on_read, cancel=cancel)
    try:
        head = reader.read(len(encryption.AGE_MAGIC))
        reader.drain()
    finally:
        reader.close()
    problems = integrity_problems(reader, info)
    if head != encryption.AGE_MAGIC:
        problems.append("the object does not start like age-encrypted data (age-encryption.org/v1)")
    if expected_digest(info)[0] is None:
        problems.append("its metadata holds no sha256, so without the key nothing can be checked "
                        "(verify --deep with the identity decrypts it)")
    if problems:
        raise ArchiveError(f"backup {info.name} failed verification: {'; '.join(problems)}")
    return VerifyReport(name=info.name, size=reader.size, sha256=reader.sha256, sha256_checked=True,
                        engine=info.metadata.get("engine") or None, tool_version=info.metadata.get("tool_version", ""),
                        server_version=info.metadata.get("server_version", ""), encrypted=True,
                        recipients=recipients_of(info), contents_checked=False)
