"""Writes mongodump archives, interleaving namespaces the way mongodump's multiplexer does.

mongodump (`common/archive/multiplexer.go`) writes a namespace header only when the namespace of the
data changes, so consecutive buffers of one collection share a segment; the segment is terminated when
another namespace's data or an EOF block follows. `write_batch` does exactly that. `write_documents`
writes self-contained segments (the byte-for-byte rewrite of a mongodump archive relies on it).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import bson
from bson.int64 import Int64

from backup_exporter.archive.events import ArchiveHeader, CollectionMeta
from backup_exporter.archive.format import (
    INT32,
    MAGIC,
    SEGMENT_LIMIT,
    TERMINATOR,
    NamespaceState,
    Writable,
    count_documents,
    crc64,
    to_signed64,
)
from backup_exporter.core.errors import ArchiveError


class ArchiveWriter:
    """Writes a mongodump archive to `out` (anything with write(bytes)).

    Call write_prelude once, then write_documents/write_batch and end_namespace per namespace (segments of
    different namespaces may interleave), then close(). Misuse (data before the prelude, a namespace not
    in the prelude or already ended, close with namespaces left open) raises RuntimeError: it is a bug.
    """

    def __init__(self, out: Writable, *, segment_limit: int = SEGMENT_LIMIT) -> None:
        self._out = out
        self._segment_limit = segment_limit
        self._states: dict[tuple[str, str], NamespaceState] | None = None
        self._open: tuple[str, str] | None = None  # namespace of the segment left open by write_batch
        self._open_bytes = 0
        self.bytes_written = 0

    def _write(self, data: bytes) -> None:
        self._out.write(data)
        self.bytes_written += len(data)

    def write_prelude(self, header: ArchiveHeader, collections: Sequence[CollectionMeta]) -> None:
        """Write magic, header, one metadata document per collection, and the prelude's terminator."""
        if self._states is not None:
            raise RuntimeError("the archive prelude is already written")
        self._states = {}
        self._write(MAGIC)
        self._write(bson.encode({
            "concurrent_collections": header.concurrent_collections,
            "version": header.version,
            "server_version": header.server_version,
            "tool_version": header.tool_version,
        }))
        for meta in collections:
            key = (meta.db, meta.collection)
            if key in self._states:
                raise RuntimeError(f"namespace {meta.namespace} is twice in the prelude")
            self._states[key] = NamespaceState()
            self._write(bson.encode({
                "db": meta.db,
                "collection": meta.collection,
                "metadata": meta.metadata_json(),
                "size": meta.size,
                "type": meta.type,
            }))
        self._write(TERMINATOR)

    def _state(self, db: str, collection: str) -> NamespaceState:
        if self._states is None:
            raise RuntimeError("write_prelude must come first")
        state = self._states.get((db, collection))
        if state is None:
            raise RuntimeError(f"namespace {db}.{collection} is not in the prelude")
        if state.ended:
            raise RuntimeError(f"namespace {db}.{collection} is already ended")
        return state

    @staticmethod
    def _namespace_header(db: str, collection: str, eof: bool, crc: int) -> bytes:
        return bson.encode({"db": db, "collection": collection, "EOF": eof, "CRC": Int64(crc)})

    def _close_open_segment(self) -> None:
        if self._open is not None:
            self._write(TERMINATOR)
            self._open = None

    def write_documents(self, db: str, collection: str, raw_docs: Iterable[bytes]) -> int:
        """Write the raw BSON documents as one or more segments of db.collection; returns how many.

        A new segment starts whenever the current one would grow past the segment limit. No segment is
        written when raw_docs is empty. Raises ArchiveError for a byte string that is not one document.
        """
        state = self._state(db, collection)
        self._close_open_segment()
        header = self._namespace_header(db, collection, False, 0)
        in_segment = False
        segment_bytes = 0
        count = 0
        for raw in raw_docs:
            if len(raw) < 5 or INT32.unpack_from(raw)[0] != len(raw):
                raise ArchiveError(f"document {state.documents + 1} of {db}.{collection} is not a "
                                   f"single BSON document ({len(raw)} bytes)")
            if in_segment and segment_bytes + len(raw) > self._segment_limit:
                self._write(TERMINATOR)
                in_segment = False
            if not in_segment:
                self._write(header)
                in_segment = True
                segment_bytes = 0
            self._write(raw)
            segment_bytes += len(raw)
            state.crc = crc64(raw, state.crc)
            state.documents += 1
            state.bytes += len(raw)
            count += 1
        if in_segment:
            self._write(TERMINATOR)
        return count

    def write_batch(self, db: str, collection: str, data: bytes, documents: int | None = None) -> int:
        """Write `data`, documents back to back (a cursor's raw batch), as the multiplexer does: into the
        open segment when it belongs to db.collection and stays within the segment limit, else into a new
        segment (the open one is terminated). Returns how many documents data holds.

        `documents` is the count when the caller already walked the batch; otherwise it is counted here.
        Raises ArchiveError when data is not whole BSON documents.
        """
        state = self._state(db, collection)
        if not data:
            return 0
        count = count_documents(data, f"{db}.{collection}") if documents is None else documents
        key = (db, collection)
        if self._open != key or self._open_bytes + len(data) > self._segment_limit:
            self._close_open_segment()
            self._write(self._namespace_header(db, collection, False, 0))
            self._open, self._open_bytes = key, 0
        self._write(data)
        self._open_bytes += len(data)
        state.crc = crc64(data, state.crc)
        state.documents += count
        state.bytes += len(data)
        return count

    def end_namespace(self, db: str, collection: str) -> int:
        """Write db.collection's EOF block; returns its CRC (signed int64, as stored)."""
        state = self._state(db, collection)
        self._close_open_segment()
        state.ended = True
        crc = to_signed64(state.crc)
        self._write(self._namespace_header(db, collection, True, crc))
        self._write(TERMINATOR)
        return crc

    def documents(self, db: str, collection: str) -> int:
        """Return how many documents of db.collection were written so far."""
        if self._states is None or (db, collection) not in self._states:
            return 0
        return self._states[(db, collection)].documents

    def close(self) -> None:
        """Check the archive is complete; the caller closes `out` itself.

        Raises RuntimeError when the prelude is missing or a namespace was never ended.
        """
        if self._states is None:
            raise RuntimeError("closing an archive without a prelude")
        left = [f"{db}.{coll}" for (db, coll), s in self._states.items() if not s.ended]
        if left:
            raise RuntimeError(f"namespaces never ended: {', '.join(left)}")
