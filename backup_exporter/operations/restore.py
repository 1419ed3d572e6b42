"""`backupctl restore`: stream a backup from storage into MongoDB with the native engine or mongorestore,
then compare the bytes read with the stored sha256 (and, for a drill, the restored counts)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

from pymongo.errors import PyMongoError
from pyrage import x25519

from backup_exporter import archive
from backup_exporter.core.errors import ArchiveError, BackupError, ExitCode
from backup_exporter.core.naming import plan_prefix
from backup_exporter.mongo.client import make_client
from backup_exporter.mongo.errors import map_pymongo_error
from backup_exporter.mongo.namespaces import NamespaceMap, check_patterns
from backup_exporter.repository.backups import plan_backups
from backup_exporter.repository.reading import finish_integrity, open_backup
from backup_exporter.restore.mongorestore import restore_with_mongorestore
from backup_exporter.restore.native import RestoreArchiveError, RestoreFailed, restore_archive
from backup_exporter.restore.report import RestoredNamespace, RestoreReport
from backup_exporter.storage.base import ObjectInfo, Storage


def restore(storage: Storage, name: str, *, target_uri: str, ns_include: Sequence[str] = (),
            ns_from: Sequence[str] = (), ns_to: Sequence[str] = (), drop: bool = False,
            dry_run: bool = False, mongorestore: str | None = None, check: bool = False,
            identities: Sequence[x25519.Identity] | None = None,
            cancel: threading.Event | None = None,
            on_read: Callable[[bytes], None] | None = None) -> RestoreReport:
    """Restore backup `name` into the MongoDB at `target_uri`, streaming it from storage; `on_read` sees
    every archive chunk as it is read (the terminal's progress line).

    With `mongorestore` (the binary's path) the blob goes into mongorestore's stdin (the URI only through
    its --config pipe) while the archive is parsed on the way for its counts; otherwise it is applied with
    pymongo (restore_native). Either way the sha256 and size of the bytes read are compared with the
    object's metadata at the end. An encrypted backup is decrypted on the way with `identities`. With
    `check` (a restore drill) each restored collection's document count in the target is compared with the
    archive's, and mismatches are reported in the RestoreReport.

    Returns the RestoreReport. Raises ArchiveError for a corrupt archive or a checksum/size mismatch (the
    latter after the data went in: the target then holds suspect data), DecryptionFailed (an ArchiveError)
    for encrypted bytes that were changed, ConfigError for an encrypted backup without identities,
    WrongIdentity when they do not open it, StorageError when the blob cannot
    be read, UsageError for bad namespace options, RestoreFailed (mongorestore's non-zero exit, or MongoDB
    refusing a collection or index), SourceUnavailable/AuthenticationFailed for the target, Interrupted
    when `cancel` is set.
    """
    # Both engines refuse the same malformed patterns, before anything is read or started.
    check_patterns(ns_include, (), ns_from, ns_to)
    info = storage.stat(name)
    if mongorestore:
        report = restore_with_mongorestore(storage, info, mongorestore, target_uri=target_uri,
                                            ns_include=ns_include, ns_from=ns_from, ns_to=ns_to, drop=drop,
                                            dry_run=dry_run, identities=identities, cancel=cancel,
                                            on_read=on_read)
    else:
        report = _restore_native(storage, info, target_uri=target_uri, ns_include=ns_include,
                                 ns_from=ns_from, ns_to=ns_to, drop=drop, dry_run=dry_run, identities=identities,
                                 cancel=cancel, on_read=on_read)
    if check and not dry_run:
        _check_counts(report, target_uri)
    return report


def restore_targets(storage: Storage, name: str, *, ns_include: Sequence[str] = (),
                    ns_from: Sequence[str] = (), ns_to: Sequence[str] = (),
                    identities: Sequence[x25519.Identity] | None = None) -> list[str]:
    """Return the target namespaces a restore of backup `name` would write, from the archive's prelude
    only (its first bytes: the blob is not downloaded or decompressed further).

    Raises UsageError for bad patterns, StorageError when the blob cannot be read, ArchiveError when
    its prelude is unreadable, ConfigError/WrongIdentity for an encrypted backup without the right identity.
    """
    nsmap = NamespaceMap.build(ns_include, (), ns_from, ns_to)
    opened = open_backup(storage, storage.stat(name), identities)
    targets: list[str] = []
    try:
        for event in archive.iter_archive(archive.gunzip_stream(opened.archive)):
            if isinstance(event, archive.ArchiveHeader):
                continue
            if not isinstance(event, archive.CollectionMeta):
                break  # the prelude ends where the first namespace segment begins
            system = event.collection.startswith("system.") and event.collection != "system.js"
            if not system and nsmap.selected(event.namespace):
                targets.append(".".join(nsmap.target(event.namespace)))
    except (ArchiveError, *archive.DECOMPRESS_ERRORS) as exc:
        raise ArchiveError(f"backup {name} is corrupt: {archive.describe_archive_problem(exc)}") from exc
    finally:
        opened.close()
    return targets


def restore_latest_check(storage: Storage, prefix: str, plan: str, target_uri: str, *,
                         mongorestore: str | None = None, identities: Sequence[x25519.Identity] | None = None,
                         cancel: threading.Event | None = None) -> RestoreReport:
    """Run a restore drill: restore the plan's newest backup into the scratch MongoDB at `target_uri`
    under the same namespaces, replacing same-named collections there (--drop, so drills repeat
    cleanly), and compare every collection's document count with the archive's.

    Returns the RestoreReport (check_ok True/False). Raises BackupError (DATA) when the plan has no backup,
    and whatever `restore` raises.
    """
    backups = plan_backups(storage, prefix, plan)
    if not backups:
        raise BackupError(f"plan {plan} has no backup in {plan_prefix(prefix, plan)}/ to restore",
                          ExitCode.DATA)
    newest, _ = max(backups, key=lambda pair: (pair[1], pair[0].name))
    return restore(storage, newest.name, target_uri=target_uri, drop=True, check=True,
                   mongorestore=mongorestore, identities=identities, cancel=cancel)


def _restore_native(storage: Storage, info: ObjectInfo, *, target_uri: str, ns_include: Sequence[str],
                    ns_from: Sequence[str], ns_to: Sequence[str], drop: bool, dry_run: bool,
                    identities: Sequence[x25519.Identity] | None, cancel: threading.Event | None,
                    on_read: Callable[[bytes], None] | None = None) -> RestoreReport:
    name = info.name
    opened = open_backup(storage, info, identities, tee=on_read, cancel=cancel)
    try:
        try:
            summary = restore_archive(archive.gunzip_stream(opened.archive), target_uri, ns_include=ns_include,
                                      ns_from=ns_from, ns_to=ns_to, drop=drop, dry_run=dry_run,
                                      cancel=cancel)
        except (ArchiveError, *archive.DECOMPRESS_ERRORS) as exc:
            written = " (part of it is already in the target)" if isinstance(exc, RestoreArchiveError) else ""
            raise ArchiveError(f"backup {name} is corrupt{written}: {archive.describe_archive_problem(exc)}") from exc
        except RestoreFailed as exc:
            # A corrupt blob can decompress into documents that are not valid BSON, which the server
            # refuses before the namespace's CRC is reached. Reading the rest tells a corrupt blob (its
            # checksum differs) from data the server refuses for its own reasons.
            opened.drain()
            problems = opened.problems()
            if problems:
                raise ArchiveError(f"backup {name} is corrupt (part of it is already in the target): "
                                   f"{'; '.join(problems)}; MongoDB refused it: {exc.message}") from exc
            raise
        opened.drain()
    finally:
        opened.close()
    finish_integrity(name, opened)
    report = RestoreReport(name, "native", dry_run, opened.blob.size, opened.blob.sha256,
                           skipped=list(summary.skipped))
    for ns in summary.namespaces.values():
        report.namespaces.append(RestoredNamespace(
            source=ns.source, target=ns.target, archive_documents=ns.documents + ns.failed,
            restored_documents=None if dry_run else ns.documents, failed_documents=ns.failed, view=ns.view))
    return report


def _check_counts(report: RestoreReport, target_uri: str) -> None:
    """Count each restored collection in the target and record every count that differs from the
    archive's. Raises SourceUnavailable/AuthenticationFailed/ConfigError when the target cannot be read."""
    client = make_client(target_uri, 10.0, "backup_exporter-check")
    try:
        for ns in report.namespaces:
            if ns.view:
                continue  # a view's count is its source's, already checked
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
