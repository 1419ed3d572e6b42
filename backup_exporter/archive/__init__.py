"""The mongodump archive format: constants and CRC (`format`), the events (`events`), the streaming reader
and verifier (`reader`), the writer with mongodump's multiplexing (`writer`), and ISA-L gzip
(`compression`). The names are re-exported here, where the rest of the code imports them from."""

from backup_exporter.archive.compression import (
    COMPRESSION_LEVELS,
    DECOMPRESS_ERRORS,
    DEFAULT_COMPRESSION_LEVEL,
    GzipStreamWriter,
    describe_archive_problem,
    gunzip_stream,
)
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
    MAGIC,
    MAX_DOCUMENT_SIZE,
    SEGMENT_LIMIT,
    TERMINATOR,
    Readable,
    Writable,
    count_documents,
    crc64,
    render_metadata,
    to_signed64,
    to_unsigned64,
)
from backup_exporter.archive.reader import (
    ArchiveSummary,
    NamespaceSummary,
    iter_archive,
    open_archive_stream,
    verify_archive,
)
from backup_exporter.archive.writer import ArchiveWriter

__all__ = [
    "COMPRESSION_LEVELS",
    "DECOMPRESS_ERRORS",
    "DEFAULT_COMPRESSION_LEVEL",
    "FORMAT_VERSION",
    "GZIP_MAGIC",
    "MAGIC",
    "MAX_DOCUMENT_SIZE",
    "SEGMENT_LIMIT",
    "TERMINATOR",
    "ArchiveEvent",
    "ArchiveHeader",
    "ArchiveSummary",
    "ArchiveWriter",
    "CollectionMeta",
    "Document",
    "GzipStreamWriter",
    "NamespaceEnd",
    "NamespaceSummary",
    "Readable",
    "SegmentStart",
    "Writable",
    "count_documents",
    "crc64",
    "describe_archive_problem",
    "gunzip_stream",
    "iter_archive",
    "open_archive_stream",
    "render_metadata",
    "to_signed64",
    "to_unsigned64",
    "verify_archive",
]
