"""Apply a mongodump archive stream to MongoDB with pymongo, like `mongorestore --archive --gzip`.

The archive is read as a stream: collections are created (with their options) once the prelude is read,
documents go in as raw BSON in bounded batches as they arrive, and each namespace's indexes are built
when its EOF block has been read and its CRC checked. Memory holds one batch at most.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument
from bson.son import SON
from pymongo import MongoClient
from pymongo.collection import Collection
from pymongo.errors import (
    BulkWriteError,
    OperationFailure,
    PyMongoError,
)

from backup_exporter.archive import (
    ArchiveHeader,
    CollectionMeta,
    Document,
    NamespaceEnd,
    Readable,
    iter_archive,
    open_archive_stream,
)
from backup_exporter.core.cancel import interrupted
from backup_exporter.core.errors import (
    ArchiveError,
    BackupError,
    ExitCode,
    UsageError,
)
from backup_exporter.mongo.client import make_client
from backup_exporter.mongo.errors import AUTH_ERROR_CODES, describe_error, map_pymongo_error, scrub
from backup_exporter.mongo.namespaces import NamespaceMap
from backup_exporter.mongo.uri import render_hosts

MAX_BATCH_BYTES = 16 * 1024 * 1024
RAW_CODEC: CodecOptions[RawBSONDocument] = CodecOptions(document_class=RawBSONDocument)
NAMESPACE_EXISTS = 48
_MAX_ERRORS_KEPT = 10


class RestoreFailed(BackupError):
    """MongoDB refused part of a restore (a collection, an index, or documents with stop_on_error)."""

    exit_code = ExitCode.DATA


class RestoreArchiveError(ArchiveError):
    """The archive went bad part-way through a restore; `summary` says what had gone in by then."""

    def __init__(self, message: str, summary: RestoreSummary) -> None:
        super().__init__(message)
        self.summary = summary


@dataclass
class NamespaceRestore:
    """What happened to one namespace of the archive."""

    source: str
    target: str
    documents: int = 0  # inserted (or, in a dry run, read)
    failed: int = 0  # refused by the server (duplicate keys, validation), with stop_on_error off
    indexes: int = 0  # indexes created, besides _id_
    crc_ok: bool = False
    view: bool = False  # a view: created from its metadata, no documents
    errors: list[str] = field(default_factory=list)  # the first few refusal messages


@dataclass
class RestoreSummary:
    """The result of a restore; `namespaces` is keyed by source namespace, in archive order."""

    namespaces: dict[str, NamespaceRestore] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)  # source namespaces left out by the filters
    dry_run: bool = False

    @property
    def documents(self) -> int:
        return sum(ns.documents for ns in self.namespaces.values())

    @property
    def failed(self) -> int:
        return sum(ns.failed for ns in self.namespaces.values())

    def progress(self) -> str:
        """Return a one-line account of the documents restored so far."""
        parts = [f"{ns.target}={ns.documents}" for ns in self.namespaces.values() if ns.documents]
        return ", ".join(parts) if parts else "nothing"


class _Restorer:
    def __init__(self, client: MongoClient[dict[str, Any]] | None, uri: str, nsmap: NamespaceMap,
                 summary: RestoreSummary, *, drop: bool, batch_size: int, stop_on_error: bool,
                 bypass_validation: bool, cancel: threading.Event | None) -> None:
        self.client = client
        self.uri = uri
        self.nsmap = nsmap
        self.summary = summary
        self.drop = drop
        self.batch_size = batch_size
        self.stop_on_error = stop_on_error
        self.bypass_validation = bypass_validation
        self.cancel = cancel
        self.metas: dict[str, CollectionMeta] = {}
        self.batch: list[RawBSONDocument] = []
        self.batch_bytes = 0
        self.batch_ns: str | None = None
        self.started = False

    def check_cancel(self) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise interrupted(self.cancel)

    def _collection(self, ns: NamespaceRestore) -> Collection[RawBSONDocument]:
        assert self.client is not None
        db, coll = ns.target.split(".", 1)
        return cast("Collection[RawBSONDocument]", self.client[db].get_collection(coll, codec_options=RAW_CODEC))

    def add_meta(self, meta: CollectionMeta) -> None:
        ns = meta.namespace
        system = meta.collection.startswith("system.") and meta.collection != "system.js"
        if system or not self.nsmap.selected(ns):
            # system.* collections (users, roles, version) need mongorestore's special handling;
            # system.js (stored functions) is plain data, restored like mongorestore does.
            self.summary.skipped.append(ns)
            return
        db, coll = self.nsmap.target(ns)
        target = f"{db}.{coll}"
        if any(r.target == target for r in self.summary.namespaces.values()):
            raise UsageError(f"two archive namespaces would restore into {target}")
        self.metas[ns] = meta
        self.summary.namespaces[ns] = NamespaceRestore(ns, target, view=meta.type == "view")

    def prepare(self) -> None:
        """Drop (when asked) and create every target collection with its options."""
        if self.client is None:
            return
        # Fails fast (server selection) when the target is unreachable, before anything is written.
        self.client.admin.command("ping")
        self.started = True
        for source, meta in self.metas.items():
            self.check_cancel()
            ns = self.summary.namespaces[source]
            db_name, coll = ns.target.split(".", 1)
            db = self.client[db_name]
            if self.drop:
                db.drop_collection(coll)
            command: SON[str, Any] = SON([("create", coll)])
            for key, value in meta.options.items():
                command[key] = value
            try:
                db.command(command)
            except OperationFailure as exc:
                # An existing collection keeps its options and receives the documents, as with
                # mongorestore without --drop.
                if exc.code != NAMESPACE_EXISTS:
                    raise RestoreFailed(f"cannot create {ns.target}: {describe_error(exc, self.uri)}") from None

    def add_document(self, event: Document) -> None:
        ns = self.summary.namespaces.get(event.namespace)
        if ns is None:
            return
        if self.client is None:
            ns.documents += 1
            if ns.documents % self.batch_size == 0:
                self.check_cancel()
            return
        if self.batch_ns != event.namespace or len(self.batch) >= self.batch_size or \
                self.batch_bytes + len(event.raw) > MAX_BATCH_BYTES:
            self.flush()
        self.batch_ns = event.namespace
        self.batch.append(RawBSONDocument(event.raw))
        self.batch_bytes += len(event.raw)

    def flush(self) -> None:
        """Insert the pending batch; refused documents are counted (or raise with stop_on_error)."""
        if not self.batch or self.batch_ns is None:
            return
        self.check_cancel()
        ns = self.summary.namespaces[self.batch_ns]
        batch, self.batch, self.batch_bytes = self.batch, [], 0
        try:
            self._collection(ns).insert_many(batch, ordered=False,
                                             bypass_document_validation=self.bypass_validation)
            # pymongo lists no inserted_ids for RawBSONDocument; success means the whole batch went in.
            ns.documents += len(batch)
        except BulkWriteError as exc:
            details = exc.details
            errors = details.get("writeErrors", [])
            ns.documents += int(details.get("nInserted", 0))
            ns.failed += len(errors)
            for error in errors[: max(0, _MAX_ERRORS_KEPT - len(ns.errors))]:
                ns.errors.append(scrub(f"code {error.get('code')}: {error.get('errmsg', '')}", self.uri))
            if self.stop_on_error and errors:
                raise RestoreFailed(f"MongoDB refused {len(errors)} document(s) of {ns.target}: "
                                    f"{ns.errors[0] if ns.errors else ''}") from None

    def end_namespace(self, event: NamespaceEnd) -> None:
        ns = self.summary.namespaces.get(event.namespace)
        if ns is None:
            return
        self.flush()
        ns.crc_ok = event.crc_ok
        if not event.crc_ok:
            raise RestoreArchiveError(
                f"CRC mismatch for namespace {event.namespace} (EOF block at offset {event.offset}): "
                f"archive says {event.crc}, data gives {event.computed_crc}; its documents are already in "
                f"{ns.target}; restored so far: {self.summary.progress()}", self.summary)
        if self.client is None:
            return
        self.create_indexes(ns, self.metas[event.namespace])

    def create_indexes(self, ns: NamespaceRestore, meta: CollectionMeta) -> None:
        specs = []
        for index in meta.indexes:
            if index.get("name") == "_id_":
                continue
            # "ns" is legacy and refused by modern servers; everything else (unique, sparse,
            # expireAfterSeconds, partialFilterExpression, collation, ...) is passed through as dumped.
            specs.append({k: v for k, v in index.items() if k != "ns"})
        if not specs:
            return
        assert self.client is not None
        db, coll = ns.target.split(".", 1)
        try:
            self.client[db].command(SON([("createIndexes", coll), ("indexes", specs)]))
        except OperationFailure as exc:
            if exc.code in AUTH_ERROR_CODES:
                raise
            names = ", ".join(str(s.get("name")) for s in specs)
            raise RestoreFailed(f"cannot create indexes {names} on {ns.target}: "
                                f"{describe_error(exc, self.uri)}") from None
        ns.indexes += len(specs)


def restore_archive(stream: Readable, client_or_uri: MongoClient[Any] | str, *,
                    ns_include: Sequence[str] = (), ns_exclude: Sequence[str] = (),
                    ns_from: Sequence[str] = (), ns_to: Sequence[str] = (), drop: bool = False,
                    dry_run: bool = False, cancel: threading.Event | None = None, batch_size: int = 1000,
                    stop_on_error: bool = False, bypass_document_validation: bool = False,
                    connect_timeout_s: float = 10.0) -> RestoreSummary:
    """Restore an archive stream (plain or gzip, detected) into MongoDB and return per-namespace counts.

    `ns_include`/`ns_exclude` are globs on source "db.collection"; `ns_from`/`ns_to` rename with `*`
    wildcards (first match wins). A dry run reads and checks the whole archive without connecting.
    A client passed in is left open; a URI gets its own client, closed at the end.

    Raises ArchiveError (RestoreArchiveError, carrying the summary, once anything was written) for a
    malformed archive or a CRC mismatch, UsageError for bad filters, SourceUnavailable,
    AuthenticationFailed, RestoreFailed (the server refused a collection, index, or with stop_on_error a
    document), and Interrupted when `cancel` is set.
    """
    nsmap = NamespaceMap.build(ns_include, ns_exclude, ns_from, ns_to)
    summary = RestoreSummary(dry_run=dry_run)
    owned = isinstance(client_or_uri, str)
    uri = client_or_uri if isinstance(client_or_uri, str) else ""
    client: MongoClient[dict[str, Any]] | None = None
    started = False
    try:
        if not dry_run:
            if isinstance(client_or_uri, str):
                client = make_client(client_or_uri, connect_timeout_s, "backup_exporter-restore")
            else:
                client = client_or_uri
        restorer = _Restorer(client, uri, nsmap, summary, drop=drop, batch_size=max(1, batch_size),
                             stop_on_error=stop_on_error, bypass_validation=bypass_document_validation,
                             cancel=cancel)
        try:
            _run(restorer, stream)
        finally:
            started = restorer.started
    except PyMongoError as exc:
        raise _map_error(exc, uri, client, started=started) from None
    finally:
        if owned and client is not None:
            client.close()
    return summary


def _run(restorer: _Restorer, stream: Readable) -> None:
    prepared = False
    try:
        for event in iter_archive(open_archive_stream(stream), strict_crc=False):
            if isinstance(event, ArchiveHeader):
                continue
            if isinstance(event, CollectionMeta):
                restorer.add_meta(event)
                continue
            if not prepared:
                restorer.prepare()
                prepared = True
            if isinstance(event, Document):
                restorer.add_document(event)
            elif isinstance(event, NamespaceEnd):
                restorer.end_namespace(event)
        if not prepared:
            restorer.prepare()
    except RestoreArchiveError:
        raise
    except ArchiveError as exc:
        restorer.batch.clear()
        if not restorer.started:
            raise
        raise RestoreArchiveError(f"{exc}; restored before the error: {restorer.summary.progress()}",
                                  restorer.summary) from exc


def _map_error(exc: PyMongoError, uri: str, client: MongoClient[dict[str, Any]] | None,
               *, started: bool) -> BackupError:
    if uri:
        hosts = render_hosts(uri)
    elif client is not None:
        # The client's seed list holds hosts only, never credentials.
        hosts = ",".join(f"{h}:{p}" for h, p in client.topology_description.server_descriptions()) or \
            "unknown"
    else:
        hosts = "unknown"
    return map_pymongo_error(exc, uri, what="restoring", started=started, hosts=hosts, failure=RestoreFailed)
