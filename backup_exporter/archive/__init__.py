"""The mongodump archive format: writer, streaming reader and verifier.

Layout (spec: ``common/archive/spec.md`` in mongodb/mongo-tools)::

    magic 0x8199e26d (little-endian bytes 6d e2 99 81)
    header document {concurrent_collections, version, server_version, tool_version}
    one collection-metadata document per collection {db, collection, metadata, size, type}
    terminator 0xffffffff
    then, in any order and interleaved:
      namespace segment: {db, collection, EOF: false, CRC: 0} raw BSON documents... 0xffffffff
      namespace EOF:     {db, collection, EOF: true,  CRC: crc64} 0xffffffff

The CRC of a namespace is CRC-64/XZ over the concatenated raw bytes of all its documents, stored as a
signed int64. Everything here is pure: it reads from and writes to objects the caller hands in, and keeps
at most one document (plus a small read buffer) in memory.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

import bson
import fastcrc
from bson import json_util
from bson.int64 import Int64
from bson.json_util import CANONICAL_JSON_OPTIONS

from backup_exporter.core.errors import ArchiveError

MAGIC = b"\x6d\xe2\x99\x81"  # 0x8199e26d little-endian
TERMINATOR = b"\xff\xff\xff\xff"
FORMAT_VERSION = "0.1"
GZIP_MAGIC = b"\x1f\x8b"

# MongoDB's own limit is 16 MiB per document; the server allows internal documents up to 16 MiB + 16 KiB,
# so anything larger is corruption, not data, and refusing it keeps a corrupt length from making the
# reader allocate gigabytes.
MAX_DOCUMENT_SIZE = 16 * 1024 * 1024 + 16 * 1024
# A writer starts a new segment once the current one holds this much, so a reader that buffers whole
# segments (mongorestore does not, but others might) never needs more than about this.
SEGMENT_LIMIT = 16 * 1024 * 1024
_READ_CHUNK = 64 * 1024
_INT32 = struct.Struct("<i")


class Readable(Protocol):
    def read(self, n: int = -1, /) -> bytes: ...


class Writable(Protocol):
    def write(self, data: bytes, /) -> Any: ...


def crc64(data: bytes, initial: int = 0) -> int:
    """Return CRC-64/XZ of data continuing from `initial` (an unsigned previous value, 0 to start)."""
    return int(fastcrc.crc64.xz(data, initial))


def to_signed64(value: int) -> int:
    """Return the unsigned 64-bit value as the signed int64 the archive stores."""
    return value - (1 << 64) if value >= (1 << 63) else value


def to_unsigned64(value: int) -> int:
    """Return the archive's signed int64 CRC as the unsigned value CRC functions use."""
    return value & 0xFFFFFFFFFFFFFFFF


def render_metadata(metadata: dict[str, Any]) -> str:
    """Return metadata as mongodump writes it: canonical Extended JSON v2, compact, UTF-8 unescaped."""
    return json_util.dumps(metadata, json_options=CANONICAL_JSON_OPTIONS, separators=(",", ":"),
                           ensure_ascii=False)


# --------------------------------------------------------------------------------------------- events


@dataclass(frozen=True)
class ArchiveHeader:
    """The archive's header document."""

    concurrent_collections: int = 1
    version: str = FORMAT_VERSION
    server_version: str = ""
    tool_version: str = ""


@dataclass
class CollectionMeta:
    """One collection of the prelude; `metadata` is the parsed metadata JSON, in mongodump's key order."""

    db: str
    collection: str
    metadata: dict[str, Any] = field(default_factory=dict)
    size: int = 0
    type: str = "collection"

    @classmethod
    def build(cls, db: str, collection: str, *, options: dict[str, Any] | None = None,
              indexes: Sequence[dict[str, Any]] = (), uuid: str | None = None,
              type: str = "collection") -> CollectionMeta:
        """Return the metadata mongodump would write for a collection.

        mongodump's Go struct orders the keys options (omitted when empty), indexes, uuid (omitted when
        unknown), collectionName, type; byte-equal archives depend on keeping that order.
        """
        metadata: dict[str, Any] = {}
        if options:
            metadata["options"] = dict(options)
        metadata["indexes"] = [dict(index) for index in indexes]
        if uuid:
            metadata["uuid"] = uuid
        metadata["collectionName"] = collection
        metadata["type"] = type
        return cls(db, collection, metadata, 0, type)

    @property
    def namespace(self) -> str:
        return f"{self.db}.{self.collection}"

    @property
    def options(self) -> dict[str, Any]:
        options = self.metadata.get("options") or {}
        return dict(options) if isinstance(options, dict) else {}

    @property
    def indexes(self) -> list[dict[str, Any]]:
        indexes = self.metadata.get("indexes") or []
        return [dict(i) for i in indexes if isinstance(i, dict)]

    @property
    def uuid(self) -> str | None:
        value = self.metadata.get("uuid")
        return value if isinstance(value, str) else None

    def metadata_json(self) -> str:
        """Return the metadata string as stored in the archive."""
        return render_metadata(self.metadata)


@dataclass(frozen=True)
class SegmentStart:
    """A namespace segment begins; the documents that follow belong to it until the next event type."""

    db: str
    collection: str
    offset: int

    @property
    def namespace(self) -> str:
        return f"{self.db}.{self.collection}"


@dataclass(frozen=True)
class Document:
    """One document's raw BSON bytes, exactly as stored."""

    db: str
    collection: str
    raw: bytes
    offset: int

    @property
    def namespace(self) -> str:
        return f"{self.db}.{self.collection}"


@dataclass(frozen=True)
class NamespaceEnd:
    """A namespace's EOF block: `crc` is what the archive stores, `computed_crc` what its data gives."""

    db: str
    collection: str
    documents: int
    bytes: int
    crc: int  # signed int64, as stored
    computed_crc: int  # signed int64
    offset: int

    @property
    def namespace(self) -> str:
        return f"{self.db}.{self.collection}"

    @property
    def crc_ok(self) -> bool:
        return self.crc == self.computed_crc


ArchiveEvent = ArchiveHeader | CollectionMeta | SegmentStart | Document | NamespaceEnd


# --------------------------------------------------------------------------------------------- reader


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
            except (OSError, EOFError, zlib.error) as exc:
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
    (length,) = _INT32.unpack(head)
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


@dataclass
class _NamespaceState:
    crc: int = 0  # unsigned running CRC
    documents: int = 0
    bytes: int = 0
    ended: bool = False


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

    namespaces: dict[tuple[str, str], _NamespaceState] = {}
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
        namespaces[(db, coll)] = _NamespaceState()
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


# ------------------------------------------------------------------------------------------- verifier


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


# --------------------------------------------------------------------------------------- gzip helpers


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


def gunzip_stream(stream: Readable) -> Readable:
    """Return a stream of the decompressed bytes of a gzip stream, decompressing as it is read.

    Read errors of corrupt or truncated input surface as OSError/EOFError, which `iter_archive` turns into
    ArchiveError.
    """
    # GzipFile only seeks when asked to rewind, which the reader never does; typeshed still wants seek().
    return gzip.GzipFile(fileobj=cast("Any", stream), mode="rb")


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


# --------------------------------------------------------------------------------------------- writer


class GzipStreamWriter:
    """Gzip-compresses everything written and hands the output to `sink` in chunks of about chunk_size.

    `bytes_in`/`bytes_out` count uncompressed and compressed bytes. Call close() to finish the stream.
    """

    def __init__(self, sink: Writable, level: int = 6, chunk_size: int = 1024 * 1024) -> None:
        self._sink = sink
        # wbits=31: a gzip container (16) around a 32 KiB-window deflate stream (15).
        self._compressor = zlib.compressobj(level, zlib.DEFLATED, 31)
        self._chunk_size = chunk_size
        self._buf = bytearray()
        self.bytes_in = 0
        self.bytes_out = 0
        self._closed = False

    def write(self, data: bytes) -> int:
        """Compress data; returns len(data)."""
        self.bytes_in += len(data)
        self._buf += self._compressor.compress(data)
        if len(self._buf) >= self._chunk_size:
            self._flush()
        return len(data)

    def _flush(self) -> None:
        if self._buf:
            chunk = bytes(self._buf)
            self._buf.clear()
            self.bytes_out += len(chunk)
            self._sink.write(chunk)

    def close(self) -> None:
        """Finish the gzip stream and write what is left to the sink."""
        if self._closed:
            return
        self._closed = True
        self._buf += self._compressor.flush(zlib.Z_FINISH)
        self._flush()


class ArchiveWriter:
    """Writes a mongodump archive to `out` (anything with write(bytes)).

    Call write_prelude once, then write_documents/end_namespace per namespace (segments of different
    namespaces may interleave), then close(). Misuse (data before the prelude, a namespace not in the
    prelude or already ended, close with namespaces left open) raises RuntimeError: it is a bug.
    """

    def __init__(self, out: Writable, *, segment_limit: int = SEGMENT_LIMIT) -> None:
        self._out = out
        self._segment_limit = segment_limit
        self._states: dict[tuple[str, str], _NamespaceState] | None = None
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
            self._states[key] = _NamespaceState()
            self._write(bson.encode({
                "db": meta.db,
                "collection": meta.collection,
                "metadata": meta.metadata_json(),
                "size": meta.size,
                "type": meta.type,
            }))
        self._write(TERMINATOR)

    def _state(self, db: str, collection: str) -> _NamespaceState:
        if self._states is None:
            raise RuntimeError("write_prelude must come first")
        state = self._states.get((db, collection))
        if state is None:
            raise RuntimeError(f"namespace {db}.{collection} is not in the prelude")
        if state.ended:
            raise RuntimeError(f"namespace {db}.{collection} is already ended")
        return state

    def _namespace_header(self, db: str, collection: str, eof: bool, crc: int) -> bytes:
        return bson.encode({"db": db, "collection": collection, "EOF": eof, "CRC": Int64(crc)})

    def write_documents(self, db: str, collection: str, raw_docs: Iterable[bytes]) -> int:
        """Write the raw BSON documents as one or more segments of db.collection; returns how many.

        A new segment starts whenever the current one would grow past the segment limit. No segment is
        written when raw_docs is empty. Raises ArchiveError for a byte string that is not one document.
        """
        state = self._state(db, collection)
        header = self._namespace_header(db, collection, False, 0)
        in_segment = False
        segment_bytes = 0
        count = 0
        for raw in raw_docs:
            if len(raw) < 5 or _INT32.unpack_from(raw)[0] != len(raw):
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

    def end_namespace(self, db: str, collection: str) -> int:
        """Write db.collection's EOF block; returns its CRC (signed int64, as stored)."""
        state = self._state(db, collection)
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


DECOMPRESS_ERRORS = (OSError, EOFError, zlib.error)  # how gzip/zlib report corrupt input


def describe_archive_problem(exc: BaseException) -> str:
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
