"""`backupctl verify`: stream a backup once, checking gzip, archive structure, every namespace CRC, and the
sha256 and size recorded at commit."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from backup_exporter import archive
from backup_exporter.core.errors import ArchiveError
from backup_exporter.repository.reading import READ_CHUNK, BlobReader, expected_digest, integrity_problems
from backup_exporter.storage.base import Storage


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

    @property
    def documents(self) -> int:
        return sum(self.namespaces.values())


def verify_backup(storage: Storage, name: str, *, cancel: threading.Event | None = None,
                  on_read: Callable[[bytes], None] | None = None) -> VerifyReport:
    """Stream backup `name` once: check its gzip stream, archive structure and every namespace CRC, and
    compare its sha256 and size with the object's metadata. `on_read` sees each chunk read (progress).

    Returns the VerifyReport (per-namespace document counts). Raises ArchiveError naming every problem
    found (sha256 or size mismatch, corrupt gzip data, CRC mismatch of a namespace, truncation),
    StorageError (or AuthenticationFailed) when the object cannot be read, and Interrupted when `cancel`
    is set.
    """
    info = storage.backup_info(name)
    reader = BlobReader(storage.read_backup(name, READ_CHUNK), tee=on_read, cancel=cancel)
    summary: archive.ArchiveSummary | None = None
    archive_problem: str | None = None
    try:
        try:
            summary = archive.verify_archive(archive.gunzip_stream(reader))
        except (ArchiveError, *archive.DECOMPRESS_ERRORS) as exc:
            archive_problem = archive.describe_archive_problem(exc)
        # Hash every byte even after a failure, so the report can say whether the stored object changed
        # since it was written (sha256 mismatch) or was written bad.
        reader.drain()
    finally:
        reader.close()
    problems = integrity_problems(reader, info)
    if archive_problem is not None:
        problems.append(archive_problem)
    if problems or summary is None:
        raise ArchiveError(f"backup {name} failed verification: {'; '.join(problems)}")
    return VerifyReport(
        name=name, size=reader.size, sha256=reader.sha256, sha256_checked=expected_digest(info)[0] is not None,
        engine=info.metadata.get("engine") or None, tool_version=summary.header.tool_version,
        server_version=summary.header.server_version,
        namespaces={ns: s.documents for ns, s in summary.namespaces.items()})
