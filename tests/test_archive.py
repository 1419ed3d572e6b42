"""The mongodump archive format: reading real mongodump output, writing it back byte-for-byte."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import struct
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import bson
import pytest
from bson.int64 import Int64

from backup_exporter.archive import (
    MAGIC,
    TERMINATOR,
    ArchiveHeader,
    ArchiveWriter,
    CollectionMeta,
    Document,
    GzipStreamWriter,
    NamespaceEnd,
    SegmentStart,
    crc64,
    iter_archive,
    open_archive_stream,
    to_signed64,
    verify_archive,
)
from backup_exporter.core.errors import ArchiveError

INDEX_FIELDS = ("key", "name", "unique", "expireAfterSeconds", "partialFilterExpression")


# ------------------------------------------------------------------------------ shared helpers


def raw_bson_digest(raws: Iterable[bytes]) -> str:
    """The manifest's digest: sha256 of the sorted binary sha256 digests of each document."""
    return hashlib.sha256(b"".join(sorted(hashlib.sha256(r).digest() for r in raws))).hexdigest()


def index_view(indexes: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Index definitions reduced to what the manifest compares; key order kept, list sorted by name."""
    view = []
    for index in indexes:
        entry: dict[str, Any] = {}
        for name in INDEX_FIELDS:
            if name in index:
                value = index[name]
                if name == "key":
                    value = [(k, int(v)) if isinstance(v, int | float) else (k, v) for k, v in value.items()]
                elif name == "expireAfterSeconds":
                    value = int(value)
                elif name == "partialFilterExpression":
                    value = json.loads(json.dumps(value))
                entry[name] = value
        view.append(entry)
    return sorted(view, key=lambda e: str(e["name"]))


def manifest_view(manifest_path: Path) -> dict[str, dict[str, Any]]:
    manifest = json.loads(manifest_path.read_text())
    return {ns: {"documents": c["documents"], "indexes": index_view(c["indexes"]),
                 "raw_bson_digest": c["raw_bson_digest"]}
            for ns, c in manifest["collections"].items()}


def archive_view(data: bytes) -> dict[str, dict[str, Any]]:
    """What an archive holds, in the manifest's terms, read with iter_archive."""
    metas: dict[str, CollectionMeta] = {}
    digests: dict[str, list[bytes]] = {}
    ends: dict[str, NamespaceEnd] = {}
    for event in iter_archive(open_archive_stream(io.BytesIO(data))):
        if isinstance(event, CollectionMeta):
            metas[event.namespace] = event
            digests[event.namespace] = []
        elif isinstance(event, Document):
            digests[event.namespace].append(hashlib.sha256(event.raw).digest())
        elif isinstance(event, NamespaceEnd):
            ends[event.namespace] = event
    assert all(end.crc_ok for end in ends.values())
    return {ns: {"documents": ends[ns].documents, "indexes": index_view(meta.indexes),
                 "raw_bson_digest": hashlib.sha256(b"".join(sorted(digests[ns]))).hexdigest()}
            for ns, meta in metas.items()}


def first_document_offset(data: bytes) -> int:
    """Offset of the first document of the first segment (after the prelude and a segment header)."""
    prelude_end = data.index(TERMINATOR) + 4
    (header_len,) = struct.unpack_from("<i", data, prelude_end)
    return prelude_end + header_len


def small_archive(collections: dict[tuple[str, str], list[dict[str, Any]]]) -> bytes:
    out = io.BytesIO()
    writer = ArchiveWriter(out)
    writer.write_prelude(ArchiveHeader(1, "0.1", "8.0.0", "test"),
                         [CollectionMeta.build(db, c, indexes=[{"v": 2, "key": {"_id": 1}, "name": "_id_"}])
                          for db, c in collections])
    for (db, c), docs in collections.items():
        writer.write_documents(db, c, [bson.encode(d) for d in docs])
        writer.end_namespace(db, c)
    writer.close()
    return out.getvalue()


# --------------------------------------------------------------------------------- golden reads


@pytest.mark.parametrize("which", ["plain", "gzip"])
def test_golden_archive_reproduces_the_manifest(which: str, golden_archive: Path, golden_archive_gz: Path,
                                                golden_manifest: Path) -> None:
    path = golden_archive if which == "plain" else golden_archive_gz
    assert archive_view(path.read_bytes()) == manifest_view(golden_manifest)


@pytest.mark.parametrize("which", ["plain", "gzip"])
def test_verify_archive_reports_every_namespace_with_a_good_crc(which: str, golden_archive: Path,
                                                                golden_archive_gz: Path) -> None:
    path = golden_archive if which == "plain" else golden_archive_gz
    with path.open("rb") as f:
        summary = verify_archive(f)
    assert summary.ok
    assert summary.header == ArchiveHeader(4, "0.1", "8.2.11", "built-without-version-string")
    assert {ns: s.documents for ns, s in summary.namespaces.items()} == {
        "analytics.events": 4300, "crm.contacts": 1000, "shop.orders": 3000, "shop.sessions": 500,
        "shop.users": 2000}
    assert summary.documents == 10800
    assert all(s.crc_ok and s.crc != 0 for s in summary.namespaces.values())
    contacts = summary.namespaces["crm.contacts"].metadata
    assert contacts["options"] == {"validator": {"$jsonSchema": {"bsonType": "object", "required": ["name"]}}}
    assert contacts["collectionName"] == "contacts" and len(contacts["uuid"]) == 32


def test_crc64_matches_the_xz_check_value() -> None:
    assert crc64(b"123456789") == 0x995DC9BBDF1939FA
    assert crc64(b"6789", crc64(b"12345")) == 0x995DC9BBDF1939FA


def test_reader_copes_with_a_stream_that_returns_one_byte_at_a_time() -> None:
    data = small_archive({("a", "b"): [{"_id": i, "s": "x" * i} for i in range(50)]})

    class Trickle(io.BytesIO):
        def read(self, n: int | None = -1, /) -> bytes:
            return super().read(1)

    assert verify_archive(Trickle(data)).namespaces["a.b"].documents == 50


# ------------------------------------------------------------------------------- broken archives


def test_flipped_byte_fails_the_namespace_crc(golden_archive: Path) -> None:
    data = bytearray(golden_archive.read_bytes())
    offset = first_document_offset(bytes(data)) + 20  # inside the first document's body
    data[offset] ^= 0x01
    with pytest.raises(ArchiveError, match=r"CRC mismatch for namespace shop\.users"):
        verify_archive(io.BytesIO(bytes(data)))


def test_non_strict_reading_reports_the_bad_namespace_only(golden_archive: Path) -> None:
    data = bytearray(golden_archive.read_bytes())
    data[first_document_offset(bytes(data)) + 20] ^= 0x01
    summary = verify_archive(io.BytesIO(bytes(data)), strict_crc=False)
    assert not summary.ok
    assert [ns for ns, s in summary.namespaces.items() if not s.crc_ok] == ["shop.users"]


@pytest.mark.parametrize("cut", [3, 60, 600, 2100, 500_000, -10, -4])
def test_truncated_archive_is_rejected_with_its_offset(golden_archive: Path, cut: int) -> None:
    data = golden_archive.read_bytes()
    truncated = data[:cut] if cut > 0 else data[:len(data) + cut]
    with pytest.raises(ArchiveError, match=r"offset \d+|truncated"):
        verify_archive(io.BytesIO(truncated))


def test_truncated_gzip_archive_is_rejected(golden_archive_gz: Path) -> None:
    data = golden_archive_gz.read_bytes()
    with pytest.raises(ArchiveError):
        verify_archive(io.BytesIO(data[: len(data) // 2]))


def test_archive_cut_after_a_segment_names_the_namespace_without_eof() -> None:
    data = small_archive({("a", "b"): [{"_id": 1}]})
    # Drop the EOF block and its terminator: the namespace was never ended.
    eof_block = bson.encode({"db": "a", "collection": "b", "EOF": True, "CRC": Int64(0)})
    cut = data.rindex(TERMINATOR, 0, len(data) - 4) + 4
    assert len(data) - cut == len(eof_block) + 4
    with pytest.raises(ArchiveError, match=r"without an EOF block for a\.b"):
        verify_archive(io.BytesIO(data[:cut]))


def test_bad_magic_is_rejected() -> None:
    with pytest.raises(ArchiveError, match="bad magic number 00000000 at offset 0"):
        verify_archive(io.BytesIO(b"\x00\x00\x00\x00" + b"\x05\x00\x00\x00\x00"))


def test_gzip_bytes_fed_to_the_plain_reader_get_a_hint(golden_archive_gz: Path) -> None:
    with golden_archive_gz.open("rb") as f, pytest.raises(ArchiveError, match="gzip-compressed"):
        list(iter_archive(f))


def test_data_for_a_namespace_not_in_the_prelude_is_rejected() -> None:
    data = small_archive({("a", "b"): []})
    stray = bson.encode({"db": "x", "collection": "y", "EOF": False, "CRC": Int64(0)}) + \
        bson.encode({"_id": 1}) + TERMINATOR
    with pytest.raises(ArchiveError, match=r"namespace x\.y at offset \d+, which is not in the prelude"):
        verify_archive(io.BytesIO(data + stray))


def test_eof_block_without_terminator_is_rejected() -> None:
    data = small_archive({("a", "b"): [{"_id": 1}], ("a", "c"): [{"_id": 2}]})
    # Remove the terminator after a.b's EOF block, which the next segment header then follows.
    crc = to_signed64(crc64(bson.encode({"_id": 1})))
    eof_b = bson.encode({"db": "a", "collection": "b", "EOF": True, "CRC": Int64(crc)})
    at = data.index(eof_b) + len(eof_b)
    assert data[at:at + 4] == TERMINATOR
    with pytest.raises(ArchiveError, match=r"missing terminator at offset \d+ after the EOF block of a\.b"):
        verify_archive(io.BytesIO(data[:at] + data[at + 4:]))


def test_impossible_document_length_is_rejected() -> None:
    data = bytearray(small_archive({("a", "b"): [{"_id": 1}]}))
    offset = first_document_offset(bytes(data))
    data[offset:offset + 4] = struct.pack("<i", 1 << 30)
    with pytest.raises(ArchiveError, match=f"invalid document length {1 << 30} at offset {offset}"):
        verify_archive(io.BytesIO(bytes(data)))


# -------------------------------------------------------------------------------------- writer


def rewrite(data: bytes) -> bytes:
    """Read an archive and write it again with ArchiveWriter, segment by segment."""
    out = io.BytesIO()
    writer = ArchiveWriter(out)
    header: ArchiveHeader | None = None
    metas: list[CollectionMeta] = []
    segment: tuple[str, str] | None = None
    docs: list[bytes] = []

    def flush() -> None:
        if segment is not None:
            writer.write_documents(segment[0], segment[1], docs)
            docs.clear()

    for event in iter_archive(io.BytesIO(data)):
        if isinstance(event, ArchiveHeader):
            header = event
        elif isinstance(event, CollectionMeta):
            metas.append(event)
        else:
            if header is not None:
                writer.write_prelude(header, metas)
                header = None
            if isinstance(event, SegmentStart):
                flush()
                segment = (event.db, event.collection)
            elif isinstance(event, Document):
                docs.append(event.raw)
            elif isinstance(event, NamespaceEnd):
                flush()
                segment = None
                assert writer.end_namespace(event.db, event.collection) == event.crc
    writer.close()
    return out.getvalue()


def test_rewriting_the_golden_archive_reproduces_it_byte_for_byte(golden_archive: Path) -> None:
    # Same header, same prelude (metadata JSON re-rendered from its parsed form), same segment order:
    # mongodump wrote one segment per namespace here, each well under the writer's 16 MiB segment limit.
    data = golden_archive.read_bytes()
    assert rewrite(data) == data


def test_rewriting_the_gzip_golden_archive_reproduces_its_content_byte_for_byte(
        golden_archive_gz: Path) -> None:
    # A separate mongodump run: its four concurrent dumpers wrote the namespaces in another order than the
    # plain archive's, so it is compared with itself, not with the plain file.
    plain = gzip.decompress(golden_archive_gz.read_bytes())
    assert rewrite(plain) == plain


def test_collection_metadata_is_rendered_like_mongodump() -> None:
    index = {"v": 2, "key": {"_id": 1}, "name": "_id_"}
    plain = CollectionMeta.build("analytics", "events", indexes=[index],
                                 uuid="d5b506e7fa974257b5d74f1353b5a7ba")
    assert plain.metadata_json() == (
        '{"indexes":[{"v":{"$numberInt":"2"},"key":{"_id":{"$numberInt":"1"}},"name":"_id_"}],'
        '"uuid":"d5b506e7fa974257b5d74f1353b5a7ba","collectionName":"events","type":"collection"}')
    capped = CollectionMeta.build("d", "c", options={"capped": True, "size": Int64(4096)}, indexes=[index])
    assert capped.metadata_json().startswith(
        '{"options":{"capped":true,"size":{"$numberLong":"4096"}},"indexes":[')
    assert '"uuid"' not in capped.metadata_json()


def test_writer_starts_a_new_segment_past_the_limit() -> None:
    docs = [bson.encode({"_id": i, "pad": "x" * 100}) for i in range(30)]
    out = io.BytesIO()
    writer = ArchiveWriter(out, segment_limit=1000)
    writer.write_prelude(ArchiveHeader(), [CollectionMeta.build("a", "b")])
    assert writer.write_documents("a", "b", docs) == 30
    writer.end_namespace("a", "b")
    writer.close()
    events = list(iter_archive(io.BytesIO(out.getvalue())))
    segments = [e for e in events if isinstance(e, SegmentStart)]
    per_segment = 1000 // len(docs[0])
    assert len(segments) == -(-30 // per_segment)
    assert [e.raw for e in events if isinstance(e, Document)] == docs
    (end,) = [e for e in events if isinstance(e, NamespaceEnd)]
    assert end.crc_ok and end.documents == 30


def test_empty_collection_gets_metadata_and_an_eof_block_but_no_segment() -> None:
    data = small_archive({("a", "empty"): []})
    events = list(iter_archive(io.BytesIO(data)))
    assert [type(e).__name__ for e in events] == ["ArchiveHeader", "CollectionMeta", "NamespaceEnd"]
    end = events[-1]
    assert isinstance(end, NamespaceEnd) and end.crc == 0 and end.documents == 0
    assert data.startswith(MAGIC) and data.endswith(
        bson.encode({"db": "a", "collection": "empty", "EOF": True, "CRC": Int64(0)}) + TERMINATOR)


def test_writer_refuses_bytes_that_are_not_one_document() -> None:
    writer = ArchiveWriter(io.BytesIO())
    writer.write_prelude(ArchiveHeader(), [CollectionMeta.build("a", "b")])
    with pytest.raises(ArchiveError, match="not a single BSON document"):
        writer.write_documents("a", "b", [bson.encode({"x": 1}) + b"\x00"])


def test_writer_refuses_to_close_with_a_namespace_left_open() -> None:
    writer = ArchiveWriter(io.BytesIO())
    writer.write_prelude(ArchiveHeader(), [CollectionMeta.build("a", "b")])
    with pytest.raises(RuntimeError, match=r"a\.b"):
        writer.close()


def test_gzip_stream_writer_hands_out_large_chunks_that_decompress_to_the_input() -> None:
    chunks: list[bytes] = []

    class Sink:
        def write(self, data: bytes) -> None:
            chunks.append(data)

    payload = b"".join(hashlib.sha256(str(i).encode()).digest() for i in range(100_000))  # 3.2 MB
    gz = GzipStreamWriter(Sink(), level=1, chunk_size=256 * 1024)
    for i in range(0, len(payload), 10_000):
        gz.write(payload[i:i + 10_000])
    gz.close()
    assert len(chunks) > 2
    assert all(len(c) >= 256 * 1024 for c in chunks[:-1])
    assert gzip.decompress(b"".join(chunks)) == payload
    assert gz.bytes_in == len(payload) and gz.bytes_out == sum(map(len, chunks))


def test_corrupt_gzip_stream_is_an_archive_error(golden_archive_gz: Path) -> None:
    data = bytearray(golden_archive_gz.read_bytes())
    data[5000:5100] = b"\x00" * 100
    with pytest.raises(ArchiveError):
        verify_archive(io.BytesIO(bytes(data)))
