"""Restoring with the real mongorestore: the blob goes into its stdin (the URI only through its --config
pipe) while the archive is parsed on the way for its counts and checked against the stored sha256."""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Callable, Sequence

from pyrage import x25519

from backup_exporter import archive
from backup_exporter.core import argv as commands
from backup_exporter.core.errors import ArchiveError, ExitCode, Interrupted
from backup_exporter.mongo.errors import scrub
from backup_exporter.mongo.namespaces import pattern_matches, target_namespace
from backup_exporter.mongo.reachability import unreachable
from backup_exporter.mongo.tool_errors import tool_failure
from backup_exporter.mongo.uri import render_hosts, uri_secrets
from backup_exporter.repository.reading import finish_integrity, open_backup, signum_of
from backup_exporter.restore.native import RestoreFailed
from backup_exporter.restore.report import RestoredNamespace, RestoreReport
from backup_exporter.storage.base import ObjectInfo, Storage
from backup_exporter.system import execute

_STDERR_LINES = 5


def _included(ns: str, ns_include: Sequence[str]) -> bool:
    return not ns_include or any(pattern_matches(p, ns) for p in ns_include)


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


def _feed(feeder: _StdinFeeder | None, chunk: bytes, on_read: Callable[[bytes], None] | None) -> None:
    assert feeder is not None  # set before the first chunk is pulled
    if on_read is not None:
        on_read(chunk)
    feeder(chunk)


def restore_with_mongorestore(storage: Storage, info: ObjectInfo, binary: str, *, target_uri: str,
                               ns_include: Sequence[str], ns_from: Sequence[str], ns_to: Sequence[str],
                               drop: bool, dry_run: bool, identities: Sequence[x25519.Identity] | None = None,
                               cancel: threading.Event | None,
                               on_read: Callable[[bytes], None] | None = None,
                               connect_timeout_s: float = 10.0) -> RestoreReport:
    """Restore `info` with mongorestore; `on_read` sees every archive chunk as it is read. Returns the
    report; raises what operations.restore.restore documents (SourceUnavailable when no member of the
    target answers within `connect_timeout_s`, before mongorestore starts)."""
    name = info.name
    # mongorestore, like mongodump, can keep retrying a target it never reaches (with directConnection it
    # outlives its own serverSelectionTimeoutMS and SIGTERM): ask first, as the native restorer does.
    not_answering = unreachable(target_uri, connect_timeout_s)
    if not_answering is not None:
        raise not_answering
    argv = commands.mongorestore_argv(binary, ns_include=ns_include, ns_from=ns_from, ns_to=ns_to, drop=drop,
                             dry_run=dry_run)
    feeder: _StdinFeeder | None = None
    # Opened first: an encrypted backup without an identity fails before mongorestore starts. Every chunk
    # the archive parser pulls (decrypted first, if need be) is handed on to mongorestore's stdin.
    opened = open_backup(storage, info, identities, tee=lambda chunk: _feed(feeder, chunk, on_read),
                         cancel=cancel)
    try:
        command = execute.Command(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                  secret_files={"config": commands.tool_config(target_uri)},
                                  log_prefix="mongorestore: ", secrets=uri_secrets(target_uri))
    except OSError as exc:
        opened.close()
        raise RestoreFailed(f"cannot start mongorestore ({binary}): {exc.strerror or exc}",
                            ExitCode.CONFIG) from None
    feeder = _StdinFeeder(command)
    # mongorestore gets exactly the bytes that were checked, and a corrupt archive stops it early.
    finished = False
    summary: archive.ArchiveSummary | None = None
    try:
        try:
            summary = archive.verify_archive(archive.gunzip_stream(opened.archive))
            opened.drain()
        except _ChildStopped:
            pass
        except (ArchiveError, *archive.DECOMPRESS_ERRORS) as exc:
            raise ArchiveError(f"backup {name} is corrupt (mongorestore had received part of it): "
                               f"{archive.describe_archive_problem(exc)}") from exc
        feeder.close()
        code = _wait(command, cancel)
        finished = True
    finally:
        opened.close()
        if not finished:
            command.stop(grace=5)
        command.close()
    if code != 0:
        tail = " | ".join(scrub(line, target_uri) for line in command.stderr_tail(_STDERR_LINES))
        exit_code = execute.exit_code_of(code)
        message = f"mongorestore exited with code {exit_code}: {tail or 'no output'}"
        # A target never reached (69) or refusing the credentials (77) exits as the native restorer does.
        known = tool_failure(code, tail, render_hosts(target_uri), message)
        if known is not None:
            raise known
        raise RestoreFailed(message, exit_code if 0 < exit_code < 64 or exit_code > 128 else ExitCode.DATA)
    if feeder.broken or summary is None:
        raise RestoreFailed("mongorestore exited successfully without reading the whole archive")
    finish_integrity(name, opened)
    report = RestoreReport(name, "mongorestore", dry_run, opened.blob.size, opened.blob.sha256)
    for ns, ns_summary in summary.namespaces.items():
        if not _included(ns, ns_include):
            report.skipped.append(ns)
            continue
        report.namespaces.append(RestoredNamespace(
            source=ns, target=target_namespace(ns, ns_from, ns_to),
            archive_documents=ns_summary.documents, view=ns_summary.meta.type == "view"))
    return report


def _wait(command: execute.Command, cancel: threading.Event | None) -> int:
    """Return the child's exit code; stop it and raise Interrupted when `cancel` is set meanwhile."""
    while True:
        try:
            return command.wait(timeout=0.5)
        except subprocess.TimeoutExpired:
            if cancel is not None and cancel.is_set():
                command.stop(grace=5)
                raise Interrupted(signum_of(cancel)) from None
