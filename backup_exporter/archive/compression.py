"""Gzip for archives with ISA-L (PyPI `isal`): a compressor thread behind a bounded queue, and a reader.

Writing uses `isal.igzip_threaded`, which compresses 1 MiB blocks in its own thread (ISA-L releases the
GIL, so the dump keeps reading while the previous block is compressed) and joins them into ONE standard
gzip member, the `--archive --gzip` format mongorestore reads. Reading uses `isal.igzip`, which inflates
about twice as fast as the standard library.
"""

from __future__ import annotations

import io
import zlib
from typing import Any, cast

from isal import igzip, igzip_threaded, isal_zlib

from backup_exporter.archive.format import Readable, Writable
from backup_exporter.core.errors import ArchiveError

COMPRESSION_LEVELS = range(0, 4)  # ISA-L's levels: 0 fastest (Huffman only) .. 3 smallest
DEFAULT_COMPRESSION_LEVEL = 1
BLOCK_SIZE = 1024 * 1024  # uncompressed bytes per block handed to the compressor thread

# How gzip/zlib/ISA-L report corrupt or truncated input: OSError (BadGzipFile), EOFError (cut short),
# zlib.error and isal_zlib.error (bad deflate data).
# (isal's stubs declare its error class as an instance, hence the cast.)
ISAL_ERROR = cast("type[Exception]", isal_zlib.error)
DECOMPRESS_ERRORS = (OSError, EOFError, zlib.error, ISAL_ERROR)


class _ChunkedSink:
    """Collects the compressor's output and hands it to `sink` in chunks of at least `chunk_size` bytes
    (the last one may be smaller). Written to by one thread at a time: the compressor thread while the
    stream runs, the caller's thread when it is closed."""

    def __init__(self, sink: Writable, chunk_size: int) -> None:
        self._sink = sink
        self._chunk_size = chunk_size
        self._buf = bytearray()
        self.bytes_out = 0

    def write(self, data: bytes) -> int:
        self._buf += data
        if len(self._buf) >= self._chunk_size:
            self.emit()
        return len(data)

    def flush(self) -> None:
        """Nothing: igzip_threaded flushes before writing the trailer; chunks are cut by size only."""

    def emit(self) -> None:
        if self._buf:
            chunk = bytes(self._buf)
            self._buf.clear()
            self.bytes_out += len(chunk)
            self._sink.write(chunk)


class GzipStreamWriter:
    """Gzip-compresses everything written, with ISA-L in a compressor thread, and hands the output to
    `sink` in chunks of about chunk_size (`sink.write` runs in that thread while the stream is open).

    `bytes_in`/`bytes_out` count uncompressed and compressed bytes. Call close() to finish the stream, or
    abort() to stop the thread without finishing it (the output so far is garbage). A failure of
    `sink.write` or of the compressor is raised by a later write() or by close().
    """

    def __init__(self, sink: Writable, level: int = DEFAULT_COMPRESSION_LEVEL,
                 chunk_size: int = 1024 * 1024) -> None:
        if level not in COMPRESSION_LEVELS:
            raise ValueError(f"compression level {level} is outside ISA-L's 0-3")
        self._out = _ChunkedSink(sink, chunk_size)
        self._file = cast("io.BufferedWriter", igzip_threaded.open(  # type: ignore[no-untyped-call]
            self._out, "wb", compresslevel=level, threads=1, block_size=BLOCK_SIZE))
        self.level = level
        self.bytes_in = 0
        self._closed = False

    @property
    def bytes_out(self) -> int:
        return self._out.bytes_out

    def write(self, data: bytes) -> int:
        """Queue data for compression; returns len(data). Blocks while the compressor is a block behind."""
        self.bytes_in += len(data)
        self._file.write(data)
        return len(data)

    def close(self) -> None:
        """Finish the gzip stream and write what is left to the sink (in the calling thread)."""
        if self._closed:
            return
        self._closed = True
        self._file.close()
        self._out.emit()

    def abort(self) -> None:
        """Stop the compressor thread and drop what is queued; the stream stays unfinished."""
        if self._closed:
            return
        self._closed = True
        raw = cast("Any", self._file.raw)
        raw.stop()  # ends the thread without writing a trailer
        raw._closed = True  # nothing more may be flushed into the sink
        try:
            self._file.close()
        except (ValueError, OSError):
            pass


class _ReadIntoAdapter(io.RawIOBase):
    """Gives a stream that only has read() the readinto() that ISA-L's gzip reader calls."""

    def __init__(self, stream: Readable) -> None:
        super().__init__()
        self._stream = stream

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._stream.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)


def gunzip_stream(stream: Readable) -> Readable:
    """Return a stream of the decompressed bytes of a gzip stream (ISA-L), decompressing as it is read.

    Read errors of corrupt or truncated input surface as one of DECOMPRESS_ERRORS, which `iter_archive`
    turns into ArchiveError.
    """
    return cast("Readable", igzip.GzipFile(fileobj=_ReadIntoAdapter(stream), mode="rb"))  # type: ignore[no-untyped-call]


def describe_archive_problem(exc: BaseException) -> str:
    """Return what is wrong with the archive, one line, saying "truncated" when the gzip stream ends early."""
    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, EOFError):
        cause = cause.__cause__
    if isinstance(exc, ArchiveError):
        text = exc.message
    else:
        kind = ("zlib.error" if isinstance(exc, zlib.error)
                else "deflate error" if isinstance(exc, ISAL_ERROR) else type(exc).__name__)
        text = f"gzip stream is corrupt: {kind}: {exc}"
    # gzip says "Compressed file ended before the end-of-stream marker": a blob cut short.
    return f"truncated: {text}" if cause is not None and "truncated" not in text else text


