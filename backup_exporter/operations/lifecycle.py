"""What happens to a plan's backups after they are stored: list, verify, prune, restore.

Every byte goes through the Storage protocol and is streamed: a backup is read chunk by chunk, hashed as it
arrives, and fed to a parser, MongoDB or mongorestore on the way, so memory stays bounded whatever the size
of the archive. A backup's integrity is judged twice: by its own structure (gzip CRC, per-namespace
CRC-64 of the archive) and by the sha256/size recorded in its metadata when it was stored.
"""

from __future__ import annotations

import hashlib
import io
import logging
import signal
import subprocess
import threading
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pymongo.errors import PyMongoError

from backup_exporter import archive
from backup_exporter.core import argv as commands
from backup_exporter.core.errors import ArchiveError, BackupError, ExitCode, Interrupted, UsageError
from backup_exporter.core.naming import plan_prefix, time_of
from backup_exporter.core.retention import Candidate, RetentionPolicy, decide
from backup_exporter.mongo.client import make_client
from backup_exporter.mongo.errors import map_pymongo_error, scrub
from backup_exporter.mongo.namespaces import pattern_regex, target_namespace
from backup_exporter.restore.native import RestoreArchiveError, RestoreFailed, restore_archive
from backup_exporter.storage.base import BackupInfo, Storage
from backup_exporter.system import execute

log = logging.getLogger(__name__)

READ_CHUNK = 1 << 20  # storage read size: big enough for throughput, small enough to hold a few
_STDERR_LINES = 5

__all__ = [
    "ListedBackup",
    "PruneReport",
    "RestoreReport",
    "RestoredNamespace",
    "VerifyReport",
    "list_backups",
    "plan_prefix",
    "prune",
    "restore",
    "restore_latest_check",
    "verify_backup",
]


# ------------------------------------------------------------------------------------------- listing


@dataclass(frozen=True)
class ListedBackup:
    """One backup of a plan, with what the retention policy decides for it."""

    name: str
    time: datetime  # UTC start time, from the name
    size: int  # bytes of the stored object
    sha256: str | None  # from metadata; None when the object carries none
    engine: str | None  # "native" / "mongodump", from metadata
    keep: bool
    reasons: list[str] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)


def _plan_backups(storage: Storage, prefix: str, plan: str) -> list[tuple[BackupInfo, datetime]]:
    """Return the plan's archives with their start times; objects that are not ours are left out.

    Raises StorageError (or AuthenticationFailed) when the listing fails.
    """
    folder = plan_prefix(prefix, plan)
    found = []
    for info in storage.list_backups(folder):
        # The backend already limits the listing to the folder; checking again here is what guarantees
        # that a prune never touches another plan's objects, whatever a backend returns.
        rest = info.name[len(folder) + 1:] if info.name.startswith(folder + "/") else None
        if rest is None or "/" in rest:
            continue
        started = time_of(info.name)
        if started is None:
            continue  # e.g. "manual-copy.archive.gz": not named by us, so not ours to judge or delete
        found.append((info, started))
    return found


def list_backups(storage: Storage, prefix: str, plan: str, policy: RetentionPolicy,
                 now: datetime) -> list[ListedBackup]:
    """Return the plan's backups newest first, each with the retention policy's verdict and reasons.

    Only objects named `<prefix>/<plan>/<UTC timestamp>.archive.gz` are listed. Raises StorageError (or
    AuthenticationFailed) when the listing fails, ValueError when `now` is naive.
    """
    backups = _plan_backups(storage, prefix, plan)
    infos = {info.name: info for info, _ in backups}
    decisions = decide([Candidate(info.name, started) for info, started in backups], policy, now)
    listed = []
    for decision in decisions:
        info = infos[decision.name]
        listed.append(ListedBackup(
            name=info.name, time=decision.created, size=info.size,
            sha256=info.metadata.get("sha256") or None, engine=info.metadata.get("engine") or None,
            keep=decision.keep, reasons=list(decision.reasons), metadata=dict(info.metadata)))
    return listed


# ------------------------------------------------------------------------------------------ pruning


@dataclass
class PruneReport:
    """What a prune kept and deleted (or, in a dry run, would delete), newest first."""

    plan: str
    policy: RetentionPolicy
    dry_run: bool
    kept: list[ListedBackup] = field(default_factory=list)
    deleted: list[ListedBackup] = field(default_factory=list)

    @property
    def kept_bytes(self) -> int:
        return sum(b.size for b in self.kept)

    @property
    def deleted_bytes(self) -> int:
        return sum(b.size for b in self.deleted)


def prune(storage: Storage, prefix: str, plan: str, policy: RetentionPolicy, now: datetime,
          dry_run: bool = False) -> PruneReport:
    """Delete the plan's backups the policy does not keep, in batches; return what was kept and deleted.

    Only `<prefix>/<plan>/<timestamp>.archive.gz` objects are ever deleted, the newest backup never, and
    nothing at all with an empty policy. Raises StorageError (or AuthenticationFailed) when the listing
    fails (then nothing is deleted) or a deletion fails (then some of the batch may be gone).
    """
    listed = list_backups(storage, prefix, plan, policy, now)
    report = PruneReport(plan, policy, dry_run,
                         kept=[b for b in listed if b.keep], deleted=[b for b in listed if not b.keep])
    folder = plan_prefix(prefix, plan) + "/"
    doomed = [b.name for b in report.deleted]
    # Belt and braces: list_backups only returns names under the folder, but deleting is irreversible.
    strays = [name for name in doomed if not name.startswith(folder) or "/" in name[len(folder):]]
    if strays:
        raise BackupError(f"internal error: prune of {folder} chose {strays[0]}, outside it; nothing deleted",
                          ExitCode.SOFTWARE)
    if doomed and not dry_run:
        storage.delete_backups(doomed)
    for backup in report.deleted:
        log.info("%s %s (%s)", "would delete" if dry_run else "deleted", backup.name,
                 ", ".join(backup.reasons))
    return report


# ------------------------------------------------------------------------------------ blob streaming


def _signum(cancel: threading.Event) -> int:
    # A runner's cancel token may record which signal set it; SIGTERM is what a stopping pod receives.
    return int(getattr(cancel, "signum", signal.SIGTERM))


class _BlobReader(io.RawIOBase):
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
                raise Interrupted(_signum(self._cancel))
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


def _expected(info: BackupInfo) -> tuple[str | None, int | None]:
    """Return (sha256, size) recorded in the object's metadata; None for a missing or unreadable value."""
    sha = (info.metadata.get("sha256") or "").strip().lower() or None
    raw_size = (info.metadata.get("size") or "").strip()
    size = int(raw_size) if raw_size.isdigit() else None
    return sha, size


def _integrity_problems(reader: _BlobReader, info: BackupInfo) -> list[str]:
    """Return what does not match between the bytes read and the object's metadata and size."""
    expected_sha, expected_size = _expected(info)
    problems = []
    if expected_size is not None and reader.size != expected_size:
        problems.append(f"size mismatch: metadata says {expected_size} bytes, read {reader.size}")
    elif reader.size != info.size:
        problems.append(f"size mismatch: storage says {info.size} bytes, read {reader.size}")
    if expected_sha is not None and reader.sha256 != expected_sha:
        problems.append(f"sha256 mismatch: metadata says {expected_sha}, content is {reader.sha256}")
    return problems


_DECOMPRESS_ERRORS = (OSError, EOFError, zlib.error)  # how gzip/zlib report corrupt input


def _archive_problem(exc: BaseException) -> str:
    """Return what is wrong with the archive, one line, saying "truncated" when the gzip stream ends early."""
    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, EOFError):
        cause = cause.__cause__
    if isinstance(exc, ArchiveError):
        text = exc.message
    else:
        kind = "zlib.error" if isinstance(exc, zlib.error) else type(exc).__name__
        text = f"gzip stream is corrupt: {kind}: {exc}"
    # gzip says "Compressed file ended before the end-of-stream marker": a blob cut short.
    return f"truncated: {text}" if cause is not None and "truncated" not in text else text


# ---------------------------------------------------------------------------------------- verifying


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


def verify_backup(storage: Storage, name: str, *, cancel: threading.Event | None = None) -> VerifyReport:
    """Stream backup `name` once: check its gzip stream, archive structure and every namespace CRC, and
    compare its sha256 and size with the object's metadata.

    Returns the VerifyReport (per-namespace document counts). Raises ArchiveError naming every problem
    found (sha256 or size mismatch, corrupt gzip data, CRC mismatch of a namespace, truncation),
    StorageError (or AuthenticationFailed) when the object cannot be read, and Interrupted when `cancel`
    is set.
    """
    info = storage.backup_info(name)
    reader = _BlobReader(storage.read_backup(name, READ_CHUNK), cancel=cancel)
    summary: archive.ArchiveSummary | None = None
    archive_problem: str | None = None
    try:
        try:
            summary = archive.verify_archive(archive.gunzip_stream(reader))
        except (ArchiveError, *_DECOMPRESS_ERRORS) as exc:
            archive_problem = _archive_problem(exc)
        # Hash every byte even after a failure, so the report can say whether the stored object changed
        # since it was written (sha256 mismatch) or was written bad.
        reader.drain()
    finally:
        reader.close()
    problems = _integrity_problems(reader, info)
    if archive_problem is not None:
        problems.append(archive_problem)
    if problems or summary is None:
        raise ArchiveError(f"backup {name} failed verification: {'; '.join(problems)}")
    return VerifyReport(
        name=name, size=reader.size, sha256=reader.sha256, sha256_checked=_expected(info)[0] is not None,
        engine=info.metadata.get("engine") or None, tool_version=summary.header.tool_version,
        server_version=summary.header.server_version,
        namespaces={ns: s.documents for ns, s in summary.namespaces.items()})


# ----------------------------------------------------------------------------------------- restoring


@dataclass
class RestoredNamespace:
    """One namespace of the archive and where it went."""

    source: str
    target: str
    archive_documents: int  # documents the archive holds for it
    restored_documents: int | None = None  # inserted (native engine; None with mongorestore)
    failed_documents: int = 0  # refused by the server (native engine)
    target_documents: int | None = None  # counted in the target after the restore (check only)


@dataclass
class RestoreReport:
    """The result of a restore; `check_mismatches` is empty when the drill found nothing wrong."""

    name: str
    engine: str  # "native" or "mongorestore"
    dry_run: bool
    size: int
    sha256: str
    namespaces: list[RestoredNamespace] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # archive namespaces left out by ns_include
    checked: bool = False
    check_mismatches: list[str] = field(default_factory=list)

    @property
    def check_ok(self) -> bool | None:
        """True/False for a check that ran, None when none was asked for (or the run was a dry run)."""
        return not self.check_mismatches if self.checked else None

    @property
    def documents(self) -> int:
        return sum(ns.archive_documents for ns in self.namespaces)

    def summary(self) -> str:
        """Return one line: what was restored, how, and the check's verdict."""
        what = "dry run of" if self.dry_run else "restored"
        line = (f"{what} {self.name} with {self.engine}: {len(self.namespaces)} namespaces, "
                f"{self.documents} documents")
        if self.checked:
            line += ("; document counts match" if not self.check_mismatches else
                     f"; {len(self.check_mismatches)} count mismatch(es): {'; '.join(self.check_mismatches)}")
        return line


def _included(ns: str, ns_include: Sequence[str]) -> bool:
    return not ns_include or any(pattern_regex(p).fullmatch(ns) for p in ns_include)


def restore(storage: Storage, name: str, *, target_uri: str, ns_include: Sequence[str] = (),
            ns_from: Sequence[str] = (), ns_to: Sequence[str] = (), drop: bool = False,
            dry_run: bool = False, mongorestore: str | None = None, check: bool = False,
            cancel: threading.Event | None = None) -> RestoreReport:
    """Restore backup `name` into the MongoDB at `target_uri`, streaming it from storage.

    With `mongorestore` (the binary's path) the blob goes into mongorestore's stdin (the URI only through
    its --config pipe) while the archive is parsed on the way for its counts; otherwise it is applied with
    pymongo (restore_native). Either way the sha256 and size of the bytes read are compared with the
    object's metadata at the end. With `check` (a restore drill) each restored collection's document count
    in the target is compared with the archive's, and mismatches are reported in the RestoreReport.

    Returns the RestoreReport. Raises ArchiveError for a corrupt archive or a checksum/size mismatch (the
    latter after the data went in: the target then holds suspect data), StorageError when the blob cannot
    be read, UsageError for bad namespace options, RestoreFailed (mongorestore's non-zero exit, or MongoDB
    refusing a collection or index), SourceUnavailable/AuthenticationFailed for the target, Interrupted
    when `cancel` is set.
    """
    if len(ns_from) != len(ns_to):
        raise UsageError(f"ns_from has {len(ns_from)} patterns but ns_to has {len(ns_to)}: "
                         f"they pair up one to one")
    info = storage.backup_info(name)
    if mongorestore:
        report = _restore_with_mongorestore(storage, info, mongorestore, target_uri=target_uri,
                                            ns_include=ns_include, ns_from=ns_from, ns_to=ns_to, drop=drop,
                                            dry_run=dry_run, cancel=cancel)
    else:
        report = _restore_native(storage, info, target_uri=target_uri, ns_include=ns_include,
                                 ns_from=ns_from, ns_to=ns_to, drop=drop, dry_run=dry_run, cancel=cancel)
    if check and not dry_run:
        _check_counts(report, target_uri)
    return report


def restore_latest_check(storage: Storage, prefix: str, plan: str, target_uri: str, *,
                         mongorestore: str | None = None,
                         cancel: threading.Event | None = None) -> RestoreReport:
    """Run a restore drill: restore the plan's newest backup into the scratch MongoDB at `target_uri`
    under the same namespaces, replacing same-named collections there (--drop, so drills repeat
    cleanly), and compare every collection's document count with the archive's.

    Returns the RestoreReport (check_ok True/False). Raises BackupError (DATA) when the plan has no backup,
    and whatever `restore` raises.
    """
    backups = _plan_backups(storage, prefix, plan)
    if not backups:
        raise BackupError(f"plan {plan} has no backup in {plan_prefix(prefix, plan)}/ to restore",
                          ExitCode.DATA)
    newest, _ = max(backups, key=lambda pair: (pair[1], pair[0].name))
    return restore(storage, newest.name, target_uri=target_uri, drop=True, check=True,
                   mongorestore=mongorestore, cancel=cancel)


def _finish_integrity(name: str, reader: _BlobReader, info: BackupInfo) -> None:
    problems = _integrity_problems(reader, info)
    if problems:
        raise ArchiveError(f"backup {name} was restored but does not match its metadata, so the restored "
                           f"data is suspect: {'; '.join(problems)}")


def _restore_native(storage: Storage, info: BackupInfo, *, target_uri: str, ns_include: Sequence[str],
                    ns_from: Sequence[str], ns_to: Sequence[str], drop: bool, dry_run: bool,
                    cancel: threading.Event | None) -> RestoreReport:
    name = info.name
    reader = _BlobReader(storage.read_backup(name, READ_CHUNK), cancel=cancel)
    try:
        try:
            summary = restore_archive(archive.gunzip_stream(reader), target_uri, ns_include=ns_include,
                                      ns_from=ns_from, ns_to=ns_to, drop=drop, dry_run=dry_run,
                                      cancel=cancel)
        except (ArchiveError, *_DECOMPRESS_ERRORS) as exc:
            written = " (part of it is already in the target)" if isinstance(exc, RestoreArchiveError) else ""
            raise ArchiveError(f"backup {name} is corrupt{written}: {_archive_problem(exc)}") from exc
        except RestoreFailed as exc:
            # A corrupt blob can decompress into documents that are not valid BSON, which the server
            # refuses before the namespace's CRC is reached. Reading the rest tells a corrupt blob (its
            # checksum differs) from data the server refuses for its own reasons.
            reader.drain()
            problems = _integrity_problems(reader, info)
            if problems:
                raise ArchiveError(f"backup {name} is corrupt (part of it is already in the target): "
                                   f"{'; '.join(problems)}; MongoDB refused it: {exc.message}") from exc
            raise
        reader.drain()
    finally:
        reader.close()
    _finish_integrity(name, reader, info)
    report = RestoreReport(name, "native", dry_run, reader.size, reader.sha256, skipped=list(summary.skipped))
    for ns in summary.namespaces.values():
        report.namespaces.append(RestoredNamespace(
            source=ns.source, target=ns.target, archive_documents=ns.documents + ns.failed,
            restored_documents=None if dry_run else ns.documents, failed_documents=ns.failed))
    return report


class _ChildStopped(Exception):
    """mongorestore closed its stdin; not an OSError, so the archive reader does not turn it into an
    ArchiveError on its way up."""


class _StdinFeeder:
    """Writes chunks into a child's stdin; raises _ChildStopped once the child stopped reading."""

    def __init__(self, command: execute.Command) -> None:
        assert command.process.stdin is not None
        self._stdin = command.process.stdin
        self.broken = False

    def __call__(self, chunk: bytes) -> None:
        if self.broken:
            raise _ChildStopped()
        try:
            self._stdin.write(chunk)
        except (BrokenPipeError, ValueError):
            # The child exited (or closed stdin): reading on would be wasted, and its exit code says why.
            self.broken = True
            raise _ChildStopped() from None

    def close(self) -> None:
        try:
            self._stdin.close()
        except OSError:
            self.broken = True


def _restore_with_mongorestore(storage: Storage, info: BackupInfo, binary: str, *, target_uri: str,
                               ns_include: Sequence[str], ns_from: Sequence[str], ns_to: Sequence[str],
                               drop: bool, dry_run: bool,
                               cancel: threading.Event | None) -> RestoreReport:
    name = info.name
    argv = commands.mongorestore_argv(binary, ns_include=ns_include, ns_from=ns_from, ns_to=ns_to, drop=drop,
                             dry_run=dry_run)
    chunks = storage.read_backup(name, READ_CHUNK)
    try:
        command = execute.Command(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                  secret_files={"config": commands.tool_config(target_uri)},
                                  log_prefix="mongorestore: ")
    except OSError as exc:
        closer = getattr(chunks, "close", None)
        if callable(closer):
            closer()
        raise RestoreFailed(f"cannot start mongorestore ({binary}): {exc.strerror or exc}",
                            ExitCode.CONFIG) from None
    feeder = _StdinFeeder(command)
    # The archive parser pulls the blob; every chunk it pulls is hashed and handed to mongorestore too, so
    # mongorestore gets exactly the bytes that were checked, and a corrupt archive stops it early.
    reader = _BlobReader(chunks, tee=feeder, cancel=cancel)
    finished = False
    summary: archive.ArchiveSummary | None = None
    try:
        try:
            summary = archive.verify_archive(archive.gunzip_stream(reader))
            reader.drain()
        except _ChildStopped:
            pass
        except (ArchiveError, *_DECOMPRESS_ERRORS) as exc:
            raise ArchiveError(f"backup {name} is corrupt (mongorestore had received part of it): "
                               f"{_archive_problem(exc)}") from exc
        feeder.close()
        code = _wait(command, cancel)
        finished = True
    finally:
        reader.close()
        if not finished:
            command.stop(grace=5)
        command.close()
    if code != 0:
        tail = " | ".join(scrub(line, target_uri) for line in command.stderr_tail(_STDERR_LINES))
        exit_code = execute.exit_code_of(code)
        raise RestoreFailed(f"mongorestore exited with code {exit_code}: {tail or 'no output'}",
                            exit_code if 0 < exit_code < 64 or exit_code > 128 else ExitCode.DATA)
    if feeder.broken or summary is None:
        raise RestoreFailed("mongorestore exited successfully without reading the whole archive")
    _finish_integrity(name, reader, info)
    report = RestoreReport(name, "mongorestore", dry_run, reader.size, reader.sha256)
    for ns, ns_summary in summary.namespaces.items():
        if not _included(ns, ns_include):
            report.skipped.append(ns)
            continue
        report.namespaces.append(RestoredNamespace(
            source=ns, target=target_namespace(ns, ns_from, ns_to),
            archive_documents=ns_summary.documents))
    return report


def _wait(command: execute.Command, cancel: threading.Event | None) -> int:
    """Return the child's exit code; stop it and raise Interrupted when `cancel` is set meanwhile."""
    while True:
        try:
            return command.wait(timeout=0.5)
        except subprocess.TimeoutExpired:
            if cancel is not None and cancel.is_set():
                command.stop(grace=5)
                raise Interrupted(_signum(cancel)) from None


def _check_counts(report: RestoreReport, target_uri: str) -> None:
    """Count each restored collection in the target and record every count that differs from the
    archive's. Raises SourceUnavailable/AuthenticationFailed/ConfigError when the target cannot be read."""
    client = make_client(target_uri, 10.0, "backup_exporter-check")
    try:
        for ns in report.namespaces:
            db, _, coll = ns.target.partition(".")
            ns.target_documents = client[db][coll].count_documents({})
            if ns.target_documents != ns.archive_documents:
                report.check_mismatches.append(
                    f"{ns.target}: {ns.target_documents} documents, the archive's {ns.source} has "
                    f"{ns.archive_documents}")
    except PyMongoError as exc:
        raise map_pymongo_error(exc, target_uri, what="counting restored documents", started=False) from None
    finally:
        client.close()
    report.checked = True
