"""The native engine's document copy: N collection readers feeding one multiplexer, like `mongodump -j N`.

Each reader thread takes the next collection (with more collections than readers, largest first by
estimated document count, as mongodump schedules them, so a big collection starts early and the small
ones are copied by the other readers meanwhile), reads it as the server's raw BSON batches
(`find_raw_batches`: no per-document objects) and hands each batch to the calling thread through one
bounded queue. The calling thread is the multiplexer: it writes each batch into the archive (a new
segment header whenever the namespace changes) and a namespace's EOF block once its reader is done.
Memory is bounded whatever the database size: one batch (at most the server's 16 MiB) per reader plus
`readers` batches waiting in the queue.
"""

from __future__ import annotations

import collections
import queue
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, cast

from pymongo import MongoClient
from pymongo.errors import OperationFailure, PyMongoError

from backup_exporter.archive import ArchiveWriter, CollectionMeta, count_documents
from backup_exporter.core.cancel import interrupted
from backup_exporter.core.errors import BackupError, Interrupted
from backup_exporter.mongo.errors import map_pymongo_error

_POLL_SECONDS = 0.1


@dataclass(frozen=True)
class _Batch:
    meta: CollectionMeta
    data: bytes
    documents: int


@dataclass(frozen=True)
class _Done:
    meta: CollectionMeta


@dataclass(frozen=True)
class _Failed:
    meta: CollectionMeta
    error: BaseException


_Item = _Batch | _Done | _Failed


def has_documents(meta: CollectionMeta) -> bool:
    """Whether the namespace's documents are copied: a view has metadata only (its rows are a query)."""
    return meta.type != "view"


class ParallelCopy:
    """Copies the documents of `metas` into `writer` with `readers` threads; see the module docstring."""

    def __init__(self, client: MongoClient[dict[str, Any]], uri: str, writer: ArchiveWriter,
                 cancel: threading.Event, *, readers: int = 4, batch_size: int = 1000) -> None:
        self.client = client
        self.uri = uri
        self.writer = writer
        self.cancel = cancel
        self.readers = max(1, readers)
        self.batch_size = max(1, batch_size)
        self._queue: queue.Queue[_Item] = queue.Queue(maxsize=self.readers)
        self._todo: collections.deque[CollectionMeta] = collections.deque()
        self._lock = threading.Lock()
        self._stop = threading.Event()

    def run(self, metas: Sequence[CollectionMeta]) -> dict[str, int]:
        """Copy every namespace and end it with its EOF block; returns documents per namespace that holds
        documents (views left out), in the order of `metas`.

        Raises Interrupted when `cancel` is set, DumpFailed/SourceUnavailable/AuthenticationFailed for a
        MongoDB error of any reader (naming the collection), ArchiveError for a malformed batch.
        """
        copied = [m for m in metas if has_documents(m)]
        for meta in metas:
            if not has_documents(meta):
                self.writer.end_namespace(meta.db, meta.collection)
        self._todo.extend(self.copy_order(copied))
        threads = [threading.Thread(target=self._reader, name=f"native-reader-{i}", daemon=True)
                   for i in range(min(self.readers, len(copied)))]
        for thread in threads:
            thread.start()
        try:
            open_namespaces = len(copied)
            while open_namespaces:
                try:
                    item = self._queue.get(timeout=_POLL_SECONDS)
                except queue.Empty:
                    if self.cancel.is_set():
                        raise interrupted(self.cancel) from None
                    continue
                if isinstance(item, _Failed):
                    raise self._error(item)
                meta = item.meta
                if isinstance(item, _Batch):
                    self.writer.write_batch(meta.db, meta.collection, item.data, item.documents)
                else:
                    self.writer.end_namespace(meta.db, meta.collection)
                    open_namespaces -= 1
        finally:
            self._stop.set()
            self._drain()
            for thread in threads:
                thread.join()
        # A view holds no documents of its own: it is in the archive, not in the counts.
        return {m.namespace: self.writer.documents(m.db, m.collection) for m in copied}

    def copy_order(self, metas: list[CollectionMeta]) -> list[CollectionMeta]:
        """Return the order to copy in: as given with one reader or when every collection gets a reader at
        once (the order cannot change when the dump ends, and asking costs a round trip each, a scan on
        some servers), else largest first."""
        if self.readers == 1 or len(metas) <= self.readers:
            return metas
        return sorted(metas, key=self._estimated_documents, reverse=True)

    def _estimated_documents(self, meta: CollectionMeta) -> int:
        """Return the collection's estimated document count for ordering; 0 when the server does not say."""
        try:
            return int(self.client[meta.db][meta.collection].estimated_document_count())
        except OperationFailure:
            return 0

    def _error(self, failed: _Failed) -> BaseException:
        error = failed.error
        if isinstance(error, Interrupted):
            return interrupted(self.cancel)
        if isinstance(error, PyMongoError):
            return map_pymongo_error(error, self.uri, what=f"reading {failed.meta.namespace}", started=True)
        return error

    def _drain(self) -> None:
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                return

    def _put(self, item: _Item) -> bool:
        """Queue item, waiting while the multiplexer is behind; False once the copy is stopping."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=_POLL_SECONDS)
                return True
            except queue.Full:
                continue
        return False

    def _next(self) -> CollectionMeta | None:
        with self._lock:
            return self._todo.popleft() if self._todo and not self._stop.is_set() else None

    def _reader(self) -> None:
        while (meta := self._next()) is not None:
            try:
                if not self._copy(meta):
                    return
            except (PyMongoError, BackupError) as exc:
                self._put(_Failed(meta, exc))
                return
            except Exception as exc:  # a bug: still reported by the multiplexer, not lost in a thread
                self._put(_Failed(meta, exc))
                return

    def _copy(self, meta: CollectionMeta) -> bool:
        """Read one collection into the queue; False when the copy is stopping."""
        coll = self.client[meta.db][meta.collection]
        with coll.find_raw_batches({}, batch_size=self.batch_size) as cursor:
            # A raw-batch cursor yields each reply's documents as one bytes object (typed as documents).
            for data in cast("Iterator[bytes]", cursor):
                if self.cancel.is_set():
                    raise Interrupted()
                if not self._put(_Batch(meta, data, count_documents(data, meta.namespace))):
                    return False
        return self._put(_Done(meta))
