"""The mongodump archive format's constants and checksums (spec: ``common/archive/spec.md`` in
mongodb/mongo-tools)::

    magic 0x8199e26d (little-endian bytes 6d e2 99 81)
    header document {concurrent_collections, version, server_version, tool_version}
    one collection-metadata document per collection {db, collection, metadata, size, type}
    terminator 0xffffffff
    then, in any order and interleaved:
      namespace segment: {db, collection, EOF: false, CRC: 0} raw BSON documents... 0xffffffff
      namespace EOF:     {db, collection, EOF: true,  CRC: crc64} 0xffffffff

The CRC of a namespace is CRC-64/XZ over the concatenated raw bytes of all its documents, stored as a
signed int64. Pure: no I/O.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, Protocol

import fastcrc
from bson import json_util
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
INT32 = struct.Struct("<i")


class Readable(Protocol):
    def read(self, n: int = -1, /) -> bytes: ...


class Writable(Protocol):
    def write(self, data: bytes, /) -> Any: ...


@dataclass
class NamespaceState:
    """Running totals of one namespace while an archive is read or written."""

    crc: int = 0  # unsigned running CRC
    documents: int = 0
    bytes: int = 0
    ended: bool = False


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


def count_documents(data: bytes, what: str) -> int:
    """Return how many BSON documents `data` holds back to back (a cursor's raw batch).

    Raises ArchiveError when a length is impossible or the last document is cut short: `what` names
    the namespace in the message.
    """
    view = memoryview(data)
    size = len(data)
    offset = count = 0
    unpack = INT32.unpack_from
    while offset < size:
        if size - offset < 5:
            raise ArchiveError(f"batch of {what} ends with {size - offset} stray bytes")
        (length,) = unpack(view, offset)
        if length < 5 or length > MAX_DOCUMENT_SIZE or offset + length > size or view[offset + length - 1] != 0:
            raise ArchiveError(f"document {count + 1} of a batch of {what} is not a single BSON document "
                               f"(length {length} at byte {offset} of {size})")
        offset += length
        count += 1
    return count
