"""Counting a mongodump archive's documents as its uncompressed bytes stream past, in pieces of any size.

Only lengths are read (no document is decoded except the small namespace headers), so counting keeps up
with a dump; the archive's validity is checked elsewhere (the run's sink, `verify`). A malformed stream
stops the counting silently: the counts then stay where they were.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import bson

from backup_exporter.archive import MAGIC, MAX_DOCUMENT_SIZE

_INT32 = struct.Struct("<i")
_TERMINATOR = -1  # 0xffffffff read as a signed int32

_MAGIC, _PRELUDE, _SEGMENT_START, _DATA, _BROKEN = range(5)


@dataclass
class NamespaceCount:
    """Documents and BSON bytes of one namespace's segments so far; `done` once its end marker passed."""

    namespace: str
    documents: int = 0
    data_bytes: int = 0
    done: bool = False


class ArchiveCounter:
    """Counts documents, their bytes and finished namespaces of an uncompressed archive fed with `feed`,
    in total and per namespace (each segment's header names its namespace: a multiplexed dump interleaves
    segments of several collections)."""

    def __init__(self) -> None:
        self.documents = 0  # documents begun so far
        self.data_bytes = 0  # their BSON bytes (what the server's stats call the data size)
        self.namespaces = 0  # collections listed in the prelude (known once the prelude has passed)
        self.namespaces_done = 0  # collections whose end-of-namespace marker has passed
        # 'db.collection' -> its counts, in the order their first segment began. Entries are only added and
        # changed in place, so a reader in another thread may copy it with dict() at any time.
        self.by_namespace: dict[str, NamespaceCount] = {}
        self._current: NamespaceCount | None = None
        self._state = _MAGIC
        self._pending = b""  # an incomplete length, or an incomplete namespace header
        self._skip = 0  # bytes of the current document still to come
        self._prelude_documents = 0

    def feed(self, data: bytes) -> None:
        """Count what `data` (the next piece of the uncompressed archive) holds."""
        if self._state == _BROKEN or not data:
            return
        if self._skip >= len(data):
            self._skip -= len(data)
            return
        buf = self._pending + data[self._skip:] if self._pending else data[self._skip:]
        self._skip = 0
        self._pending = b""
        pos = 0
        if self._state == _MAGIC:
            if len(buf) < 4:
                self._pending = buf
                return
            if buf[:4] != MAGIC:
                self._state = _BROKEN
                return
            pos, self._state = 4, _PRELUDE
        end = len(buf)
        while True:
            if end - pos < 4:
                self._pending = buf[pos:]
                return
            (length,) = _INT32.unpack_from(buf, pos)
            if length == _TERMINATOR:
                if self._state == _PRELUDE:
                    self.namespaces = max(0, self._prelude_documents - 1)  # the first is the archive header
                self._state = _SEGMENT_START
                pos += 4
                continue
            if length < 5 or length > MAX_DOCUMENT_SIZE:
                self._state = _BROKEN
                return
            if self._state == _SEGMENT_START:
                if end - pos < length:
                    self._pending = buf[pos:]
                    return
                if not self._namespace_header(buf[pos:pos + length]):
                    return
                pos += length
                continue
            if self._state == _DATA:
                self.documents += 1
                self.data_bytes += length
                if self._current is not None:
                    self._current.documents += 1
                    self._current.data_bytes += length
            else:
                self._prelude_documents += 1
            if pos + length > end:
                self._skip = pos + length - end
                return
            pos += length

    def _namespace_header(self, raw: bytes) -> bool:
        """Read a segment's header {db, collection, EOF, CRC}; return False (and stop) when it is not one."""
        try:
            header = bson.decode(raw)
        except Exception:  # any malformed BSON: counting stops, the archive check reports it
            self._state = _BROKEN
            return False
        namespace = f"{header.get('db', '')}.{header.get('collection', '')}"
        current = self.by_namespace.get(namespace)
        if current is None:
            current = self.by_namespace[namespace] = NamespaceCount(namespace)
        if header.get("EOF"):
            self.namespaces_done += 1
            current.done = True
        self._current = current
        self._state = _DATA
        return True

    def active(self) -> list[NamespaceCount]:
        """Return the namespaces begun and not yet finished, in the order they began (copies)."""
        return [NamespaceCount(c.namespace, c.documents, c.data_bytes, c.done)
                for c in list(self.by_namespace.values()) if not c.done]
