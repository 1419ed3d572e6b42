"""Streaming reader and verifier of mongodump archives: events in archive order, every CRC checked.

Keeps at most one document (plus a small read buffer) in memory, whatever the archive's size.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import bson
from bson import json_util
from bson.json_util import CANONICAL_JSON_OPTIONS

from backup_exporter.archive.compression import DECOMPRESS_ERRORS, gunzip_stream
from backup_exporter.archive.events import (
    ArchiveEvent,
    ArchiveHeader,
    CollectionMeta,
    Document,
    NamespaceEnd,
    SegmentStart,
)
from backup_exporter.archive.format import (
    FORMAT_VERSION,
    GZIP_MAGIC,
    INT32,
    MAGIC,
    MAX_DOCUMENT_SIZE,
    TERMINATOR,
    NamespaceState,
    Readable,
    crc64,
    to_signed64,
)
from backup_exporter.core.errors import ArchiveError

_READ_CHUNK = 64 * 1024


class _Reader:
    """Reads exact byte counts from a stream through a small buffer, tracking the absolute offset."""

    def __init__(self, stream: Readable) -> None:
        self._stream = stream
        self._buf = bytearray()
        self._pos = 0  # read position inside _buf
        self.offset = 0  # absolute offset of the next byte handed out
        self._eof = False

    def _fill(self, n: int) -> None:
        while len(self._buf) - self._pos < n and not self._eof:
            try:
                chunk = self._stream.read(max(_READ_CHUNK, n - (len(self._buf) - self._pos)))
            except DECOMPRESS_ERRORS as exc:
                # gzip.GzipFile reports corrupt or truncated compressed input this way.
                raise ArchiveError(f"cannot read the archive stream at offset {self.offset}: "
                                   f"{type(exc).__name__}: {exc}") from exc
            if not chunk:
                self._eof = True
                break
            if self._pos:
                del self._buf[:self._pos]
                self._pos = 0
            self._buf += chunk

    def read(self, n: int) -> bytes:
        """Return up to n bytes (fewer only at the end of the stream)."""
        self._fill(n)
        data = bytes(self._buf[self._pos:self._pos + n])
        self._pos += len(data)
        self.offset += len(data)
        if self._pos >= len(self._buf):
            self._buf.clear()
            self._pos = 0
        return data

    def at_eof(self) -> bool:
        self._fill(1)
        return len(self._buf) - self._pos == 0


def _read_document(reader: _Reader, what: str) -> bytes | None:
    """Return the next raw BSON document, or None when the next four bytes are a terminator.

    Raises ArchiveError when the stream ends, a length is impossible, or the document is cut short.
    """
    start = reader.offset
    head = reader.read(4)
    if len(head) < 4:
        raise ArchiveError(f"archive truncated at offset {start}: expected {what} or a terminator, "
                           f"got end of stream")
    if head == TERMINATOR:
        return None
    (length,) = INT32.unpack(head)
    if length < 5 or length > MAX_DOCUMENT_SIZE:
        raise ArchiveError(f"invalid document length {length} at offset {start} (reading {what})")
    rest = reader.read(length - 4)
    if len(rest) < length - 4:
        raise ArchiveError(f"archive truncated at offset {start}: {what} needs {length} bytes, "
                           f"only {len(rest) + 4} left")
    if rest[-1] != 0:
        raise ArchiveError(f"malformed document at offset {start} (reading {what}): "
                           f"no trailing NUL byte")
    return head + rest


def _decode(raw: bytes, offset: int, what: str) -> dict[str, Any]:
    try:
        return bson.decode(raw)
    except Exception as exc:  # bson raises several types (InvalidBSON, ValueError, ...)
        raise ArchiveError(f"malformed {what} at offset {offset}: {exc}") from exc


def _require_str(doc: dict[str, Any], key: str, offset: int, what: str) -> str:
    value = doc.get(key)
    if not isinstance(value, str):
        raise ArchiveError(f"{what} at offset {offset} has no string field {key!r}")
    return value


def iter_archive(stream: Readable, *, strict_crc: bool = True) -> Iterator[ArchiveEvent]:
    """Yield the archive's events in order: ArchiveHeader, CollectionMeta..., then SegmentStart,
    Document and NamespaceEnd as they occur.

    `stream` must hold the uncompressed archive (see `open_archive_stream` for gzip input). With
    `strict_crc` a CRC mismatch raises; otherwise it is reported by `NamespaceEnd.crc_ok`.

    Raises ArchiveError naming the problem and its byte offset: bad magic, malformed or truncated
    documents, a missing terminator, a CRC mismatch, data for a namespace missing from the prelude or
    after its EOF block, or a namespace never ended by an EOF block.
    """
    reader = _Reader(stream)
    magic = reader.read(4)
    if magic != MAGIC:
        hint = " (the stream is gzip-compressed; decompress it first)" if magic[:2] == GZIP_MAGIC else ""
        if len(magic) < 4:
            raise ArchiveError(f"archive truncated at offset 0: {len(magic)} bytes, no magic number")
        raise ArchiveError(f"bad magic number {magic.hex()} at offset 0, expected {MAGIC.hex()}: "
                           f"not a mongodump archive{hint}")

    offset = reader.offset
    raw = _read_document(reader, "the archive header")
    if raw is None:
        raise ArchiveError(f"missing archive header at offset {offset}")
    head = _decode(raw, offset, "archive header")
    version = head.get("version")
    if version != FORMAT_VERSION:
        raise ArchiveError(f"unsupported archive format version {version!r} at offset {offset}, "
                           f"expected {FORMAT_VERSION!r}")
    concurrent = head.get("concurrent_collections", 1)
    yield ArchiveHeader(
        concurrent_collections=int(concurrent) if isinstance(concurrent, int) else 1,
        version=FORMAT_VERSION,
        server_version=str(head.get("server_version", "")),
        tool_version=str(head.get("tool_version", "")),
    )

    namespaces: dict[tuple[str, str], NamespaceState] = {}
    while True:
        offset = reader.offset
        raw = _read_document(reader, "collection metadata (prelude)")
        if raw is None:
            break
        doc = _decode(raw, offset, "collection metadata")
        db = _require_str(doc, "db", offset, "collection metadata")
        coll = _require_str(doc, "collection", offset, "collection metadata")
        text = _require_str(doc, "metadata", offset, "collection metadata")
        try:
            metadata = json_util.loads(text, json_options=CANONICAL_JSON_OPTIONS)
        except Exception as exc:  # ValueError, TypeError from json / json_util
            raise ArchiveError(f"metadata of {db}.{coll} at offset {offset} is not valid "
                               f"Extended JSON: {exc}") from exc
        if not isinstance(metadata, dict):
            raise ArchiveError(f"metadata of {db}.{coll} at offset {offset} is not a JSON object")
        if (db, coll) in namespaces:
            raise ArchiveError(f"namespace {db}.{coll} appears twice in the prelude (offset {offset})")
        namespaces[(db, coll)] = NamespaceState()
        size = doc.get("size", 0)
        yield CollectionMeta(db, coll, metadata, int(size) if isinstance(size, int) else 0,
                             str(doc.get("type", "collection")))

    while not reader.at_eof():
        offset = reader.offset
        raw = _read_document(reader, "a namespace header")
        if raw is None:
            raise ArchiveError(f"unexpected terminator at offset {offset}: expected a namespace header")
        doc = _decode(raw, offset, "namespace header")
        db = _require_str(doc, "db", offset, "namespace header")
        coll = _require_str(doc, "collection", offset, "namespace header")
        ns = f"{db}.{coll}"
        state = namespaces.get((db, coll))
        if state is None:
            raise ArchiveError(f"data for namespace {ns} at offset {offset}, which is not in the prelude")
        if state.ended:
            raise ArchiveError(f"data for namespace {ns} at offset {offset} after its EOF block")
        if doc.get("EOF"):
            term_offset = reader.offset
            if reader.read(4) != TERMINATOR:
                raise ArchiveError(f"missing terminator at offset {term_offset} after the EOF block "
                                   f"of {ns}")
            stored = doc.get("CRC", 0)
            stored_crc = int(stored) if isinstance(stored, int) else 0
            state.ended = True
            end = NamespaceEnd(db, coll, state.documents, state.bytes, stored_crc,
                               to_signed64(state.crc), offset)
            if strict_crc and not end.crc_ok:
                raise ArchiveError(f"CRC mismatch for namespace {ns} (EOF block at offset {offset}): "
                                   f"archive says {stored_crc}, data gives {end.computed_crc}")
            yield end
            continue
        yield SegmentStart(db, coll, offset)
        while True:
            doc_offset = reader.offset
            if reader.at_eof():
                raise ArchiveError(f"archive truncated at offset {doc_offset}: segment of {ns} "
                                   f"(started at offset {offset}) has no terminator")
            data = _read_document(reader, f"a document of {ns}")
            if data is None:
                break
            state.crc = crc64(data, state.crc)
            state.documents += 1
            state.bytes += len(data)
            yield Document(db, coll, data, doc_offset)

    open_namespaces = [f"{db}.{coll}" for (db, coll), s in namespaces.items() if not s.ended]
    if open_namespaces:
        raise ArchiveError(f"archive ends at offset {reader.offset} without an EOF block for "
                           f"{', '.join(open_namespaces)} (truncated?)")


@dataclass
class NamespaceSummary:
    """What one namespace holds."""

    meta: CollectionMeta
    documents: int = 0
    bytes: int = 0
    crc: int = 0
    crc_ok: bool = False

    @property
    def metadata(self) -> dict[str, Any]:
        return self.meta.metadata


@dataclass
class ArchiveSummary:
    """What a whole archive holds; `namespaces` keeps the prelude's order."""

    header: ArchiveHeader
    namespaces: dict[str, NamespaceSummary] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(ns.crc_ok for ns in self.namespaces.values())

    @property
    def documents(self) -> int:
        return sum(ns.documents for ns in self.namespaces.values())


def verify_archive(stream: Readable, *, strict_crc: bool = True) -> ArchiveSummary:
    """Read a whole archive (uncompressed, or gzip: it is detected) and return its summary.

    Raises ArchiveError for any structural problem, and for a CRC mismatch unless `strict_crc` is false
    (then the summary's `crc_ok`/`ok` report it).
    """
    header: ArchiveHeader | None = None
    namespaces: dict[str, NamespaceSummary] = {}
    for event in iter_archive(open_archive_stream(stream), strict_crc=strict_crc):
        if isinstance(event, ArchiveHeader):
            header = event
        elif isinstance(event, CollectionMeta):
            namespaces[event.namespace] = NamespaceSummary(event)
        elif isinstance(event, NamespaceEnd):
            summary = namespaces[event.namespace]
            summary.documents = event.documents
            summary.bytes = event.bytes
            summary.crc = event.crc
            summary.crc_ok = event.crc_ok
    assert header is not None  # iter_archive always yields it first or raises
    return ArchiveSummary(header, namespaces)


class _PeekedStream:
    """A stream with bytes already read from its start put back in front."""

    def __init__(self, head: bytes, stream: Readable) -> None:
        self._head = head
        self._stream = stream

    def read(self, n: int = -1, /) -> bytes:
        if self._head:
            if n < 0:
                data, self._head = self._head + self._stream.read(), b""
                return data
            data, self._head = self._head[:n], self._head[n:]
            return data
        return self._stream.read(n)


def open_archive_stream(stream: Readable) -> Readable:
    """Return a stream of the uncompressed archive, decompressing when the input starts with gzip's magic.

    Raises ArchiveError when the stream cannot be read.
    """
    try:
        head = stream.read(2)
    except OSError as exc:
        raise ArchiveError(f"cannot read the archive stream at offset 0: {exc}") from exc
    peeked = _PeekedStream(head, stream)
    return gunzip_stream(peeked) if head == GZIP_MAGIC else peeked
