"""The native dump engine: reads MongoDB with pymongo and writes a gzip-compressed mongodump archive.

Documents travel as the server's raw BSON bytes (RawBSONDocument), never decoded and re-encoded, so the
archive holds exactly what the server stored and restores byte-for-byte.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any

import yaml
from pymongo import MongoClient
from pymongo.errors import (
    PyMongoError,
)

from backup_exporter import __version__
from backup_exporter.archive import (
    DEFAULT_COMPRESSION_LEVEL,
    ArchiveHeader,
    ArchiveWriter,
    CollectionMeta,
    GzipStreamWriter,
)
from backup_exporter.core.cancel import interrupted
from backup_exporter.core.errors import (
    BackupError,
    ExitCode,
)
from backup_exporter.engines.base import DUMP_INFO_MARKER, DumpInfo, Sink
from backup_exporter.engines.catalog import list_catalog
from backup_exporter.engines.parallel_copy import ParallelCopy
from backup_exporter.mongo.client import make_client
from backup_exporter.mongo.errors import map_pymongo_error
from backup_exporter.mongo.uri import render_hosts

AUTH_ERROR_CODES = frozenset({13, 18})  # Unauthorized, AuthenticationFailed
CHUNK_SIZE = 1024 * 1024
_MAX_MESSAGE = 400


# ---------------------------------------------------------------------------------------- engine


class NativeEngine:
    """Dumps every non-system collection of a MongoDB deployment with pymongo."""

    name = "native"

    def __init__(self, uri: str, include: Sequence[str] = (), exclude: Sequence[str] = (),
                 compression_level: int = DEFAULT_COMPRESSION_LEVEL, parallel_collections: int = 4,
                 batch_size: int = 1000, connect_timeout_s: float = 10.0) -> None:
        self.uri = uri
        self.include = tuple(include)
        self.exclude = tuple(exclude)
        self.compression_level = compression_level
        self.parallel_collections = max(1, parallel_collections)
        self.batch_size = max(1, batch_size)
        self.connect_timeout_s = connect_timeout_s
        self.tool_version = f"backup_exporter-native {__version__}"


    def dump(self, sink: Sink, cancel: threading.Event) -> DumpInfo:
        """Write a complete `--archive --gzip` stream of the selected collections to sink.

        Returns DumpInfo with per-namespace document counts. Raises SourceUnavailable (unreachable before
        data moved), DumpFailed (UNAVAILABLE when the connection drops mid-dump, DATA otherwise),
        AuthenticationFailed, ConfigError (bad URI), or Interrupted when `cancel` is set.
        """
        if cancel.is_set():
            raise interrupted(cancel)
        what = "connecting"
        started = False
        client = make_client(self.uri, self.connect_timeout_s, "backup_exporter")
        try:
            what = "reading buildInfo"
            build_info = client.admin.command("buildInfo")
            server_version = str(build_info.get("version", "unknown"))
            what = "listing databases and collections"
            collections = self._collections(client, cancel)

            gz = GzipStreamWriter(sink, self.compression_level, CHUNK_SIZE)
            try:
                writer = ArchiveWriter(gz)
                header = ArchiveHeader(concurrent_collections=self.parallel_collections,
                                       server_version=server_version, tool_version=self.tool_version)
                writer.write_prelude(header, collections)
                started = True
                what = "reading collections"
                counts = ParallelCopy(client, self.uri, writer, cancel, readers=self.parallel_collections,
                                      batch_size=self.batch_size).run(collections)
                writer.close()
                gz.close()
            except BaseException:
                gz.abort()
                raise
        except PyMongoError as exc:
            raise map_pymongo_error(exc, self.uri, what=what, started=started) from None
        finally:
            client.close()
        return DumpInfo(engine=self.name, tool_version=self.tool_version, server_version=server_version,
                        source_host=render_hosts(self.uri), namespaces=counts)

    def _collections(self, client: MongoClient[dict[str, Any]],
                     cancel: threading.Event) -> list[CollectionMeta]:
        """Return the metadata of every selected namespace, views included (engines/catalog.py)."""
        return list_catalog(client, self.include, self.exclude, cancel)


# ------------------------------------------------------------------------------------ child process


def main(argv: Sequence[str] | None = None) -> int:
    """Run the native engine as a child process: the archive to stdout, one-line errors to stderr.

    Same contract as mongodump: the URI comes from the YAML file named by --config (a pipe), the exit code
    is 0 or the failure's documented code, and SIGTERM stops the dump (exit 143). The last stderr line of a
    success reports what was dumped, after DUMP_INFO_MARKER.
    """
    parser = argparse.ArgumentParser(prog="backup_exporter.engines.native")
    parser.add_argument("--config", required=True)
    parser.add_argument("--include", action="append", default=[])
    parser.add_argument("--exclude", action="append", default=[])
    parser.add_argument("--connect-timeout", type=float, default=10.0)
    parser.add_argument("--compression-level", type=int, default=DEFAULT_COMPRESSION_LEVEL,
                        choices=range(0, 4))
    parser.add_argument("--parallel-collections", type=int, default=4)
    args = parser.parse_args(argv)
    cancel = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        cancel.signum = signum  # type: ignore[attr-defined]
        cancel.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        with open(args.config, encoding="utf-8") as f:
            uri = str((yaml.safe_load(f) or {}).get("uri", ""))
        engine = NativeEngine(uri, include=args.include, exclude=args.exclude,
                              compression_level=args.compression_level,
                              parallel_collections=args.parallel_collections,
                              connect_timeout_s=args.connect_timeout)
        out = sys.stdout.buffer

        class StdoutSink:
            def write(self, data: bytes) -> None:
                out.write(data)

        info = engine.dump(StdoutSink(), cancel)
        out.flush()
    except BackupError as exc:
        print(exc.message, file=sys.stderr)
        return exc.exit_code
    except (OSError, yaml.YAMLError) as exc:
        print(f"native dump: {type(exc).__name__}: {exc}", file=sys.stderr)
        return int(ExitCode.DATA if isinstance(exc, BrokenPipeError) else ExitCode.SOFTWARE)
    report = {"tool_version": info.tool_version, "server_version": info.server_version,
              "namespaces": info.namespaces}
    print(DUMP_INFO_MARKER + json.dumps(report), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
