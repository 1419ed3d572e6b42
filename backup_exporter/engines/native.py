"""The native dump engine: reads MongoDB with pymongo and writes a gzip-compressed mongodump archive.

Documents travel as the server's raw BSON bytes (RawBSONDocument), never decoded and re-encoded, so the
archive holds exactly what the server stored and restores byte-for-byte.
"""

from __future__ import annotations

import fnmatch
import signal
import threading
import urllib.parse
from collections.abc import Iterator, Sequence
from typing import Any, cast

from bson.binary import Binary
from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument
from pymongo import MongoClient
from pymongo.errors import (
    ConfigurationError,
    ConnectionFailure,
    OperationFailure,
    PyMongoError,
)
from pymongo.uri_parser import parse_uri

from backup_exporter import __version__
from backup_exporter.archive import ArchiveHeader, ArchiveWriter, CollectionMeta, GzipStreamWriter
from backup_exporter.engines.base import DumpInfo, Sink
from backup_exporter.errors import (
    AuthenticationFailed,
    BackupError,
    ConfigError,
    DumpFailed,
    ExitCode,
    Interrupted,
    SourceUnavailable,
)

SYSTEM_DATABASES = frozenset({"admin", "local", "config"})
AUTH_ERROR_CODES = frozenset({13, 18})  # Unauthorized, AuthenticationFailed
CHUNK_SIZE = 1024 * 1024
_MAX_MESSAGE = 400


# ------------------------------------------------------------------------ URI and message helpers


def _uri_parts(uri: str) -> tuple[list[str], list[str]]:
    """Return (host:port list, secrets to hide) of a MongoDB URI without any network I/O.

    pymongo's parse_uri normalises plain URIs; mongodb+srv URIs are split by hand because parse_uri would
    resolve their DNS records.
    """
    secrets: list[str] = [uri]
    rest = uri.split("://", 1)[1] if "://" in uri else uri
    netloc = rest.split("/", 1)[0].split("?", 1)[0]
    userinfo, _, hostpart = netloc.rpartition("@")
    if ":" in userinfo:
        password = userinfo.split(":", 1)[1]
        if password:
            secrets += [password, urllib.parse.unquote(password)]
    hosts = [h for h in hostpart.split(",") if h]
    if uri.startswith("mongodb://"):
        try:
            parsed = parse_uri(uri, validate=False)
            hosts = [f"{host}:{port}" for host, port in parsed["nodelist"]]
            if parsed.get("password"):
                secrets.append(str(parsed["password"]))
        except Exception:  # noqa: S110 - a bad URI keeps the hand-split hosts; the client will report it
            pass
    return hosts or ["unknown"], secrets


def render_hosts(uri: str) -> str:
    """Return the URI's hosts as comma-joined host:port, never credentials."""
    return ",".join(_uri_parts(uri)[0])


def scrub(text: str, uri: str) -> str:
    """Return text with the URI and its password replaced by '***', on one line, shortened."""
    for secret in sorted(set(_uri_parts(uri)[1]), key=len, reverse=True):
        if secret:
            text = text.replace(secret, "***")
    text = " ".join(text.split())
    return text if len(text) <= _MAX_MESSAGE else text[:_MAX_MESSAGE - 3] + "..."


def describe_error(exc: BaseException, uri: str) -> str:
    """Return a one-line, secret-free description of a pymongo error."""
    text = str(exc)
    # A server-selection timeout appends the whole topology description; the part before it says why.
    text = text.split(", Timeout:", 1)[0]
    if isinstance(exc, OperationFailure):
        text = text.split(", full error:", 1)[0]
        if exc.code is not None:
            text = f"{text} (code {exc.code})"
    return scrub(text, uri)


def map_pymongo_error(exc: PyMongoError, uri: str, *, what: str, started: bool, hosts: str | None = None,
                      failure: type[BackupError] = DumpFailed) -> BackupError:
    """Return the project exception for a pymongo error.

    Unreachable server -> SourceUnavailable before any data moved, DumpFailed(UNAVAILABLE) after;
    authentication/authorisation failures -> AuthenticationFailed; a bad URI -> ConfigError; anything
    else -> DumpFailed (DATA). `failure` replaces DumpFailed (the restorer passes RestoreFailed); `hosts`
    replaces the hosts rendered from the URI.
    """
    hosts = hosts or render_hosts(uri)
    detail = describe_error(exc, uri)
    if isinstance(exc, ConnectionFailure):
        if started:
            return failure(f"lost connection to MongoDB at {hosts} while {what}: {detail}", ExitCode.UNAVAILABLE)
        return SourceUnavailable(f"MongoDB at {hosts} is unreachable: {detail}")
    if isinstance(exc, OperationFailure) and exc.code in AUTH_ERROR_CODES:
        return AuthenticationFailed(f"MongoDB at {hosts} refused the credentials while {what}: {detail}")
    if isinstance(exc, ConfigurationError):
        return ConfigError([f"invalid MongoDB URI or client option: {detail}"])
    return failure(f"MongoDB at {hosts} failed while {what}: {detail}")


def make_client(uri: str, timeout_s: float, appname: str) -> MongoClient[dict[str, Any]]:
    """Return a client that has not connected yet, with timeouts of timeout_s.

    Raises ConfigError (secret-free) when the URI or an option in it is invalid.
    """
    timeout_ms = max(1, int(timeout_s * 1000))
    try:
        return MongoClient(uri, serverSelectionTimeoutMS=timeout_ms, connectTimeoutMS=timeout_ms,
                           appname=appname, connect=False)
    except (PyMongoError, ValueError, TypeError) as exc:
        # pymongo reports some URI mistakes (a bad port) as plain ValueError.
        raise ConfigError([f"invalid MongoDB URI or client option: {describe_error(exc, uri)}"]) from None


def ns_selected(ns: str, include: Sequence[str], exclude: Sequence[str]) -> bool:
    """Return whether "db.collection" passes the glob filters (no include = everything; exclude wins)."""
    if include and not any(fnmatch.fnmatchcase(ns, pattern) for pattern in include):
        return False
    return not any(fnmatch.fnmatchcase(ns, pattern) for pattern in exclude)


def _uuid_hex(info: Any) -> str | None:
    value = info.get("uuid") if isinstance(info, dict) else None
    if isinstance(value, Binary):
        return bytes(value).hex()
    hex_value = getattr(value, "hex", None)  # uuid.UUID when a uuidRepresentation is configured
    return hex_value if isinstance(hex_value, str) else None


def interrupted(cancel: threading.Event) -> Interrupted:
    """Return the Interrupted error for a set cancel event (its `signum` attribute when present)."""
    # A runner may record which signal set the event; SIGTERM is what a stopping pod receives.
    return Interrupted(int(getattr(cancel, "signum", signal.SIGTERM)))


# ---------------------------------------------------------------------------------------- engine


class NativeEngine:
    """Dumps every non-system collection of a MongoDB deployment with pymongo."""

    name = "native"

    def __init__(self, uri: str, include: Sequence[str] = (), exclude: Sequence[str] = (),
                 gzip_level: int = 6, batch_size: int = 1000, connect_timeout_s: float = 10.0) -> None:
        self.uri = uri
        self.include = tuple(include)
        self.exclude = tuple(exclude)
        self.gzip_level = gzip_level
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

            gz = GzipStreamWriter(sink, self.gzip_level, CHUNK_SIZE)
            writer = ArchiveWriter(gz)
            header = ArchiveHeader(concurrent_collections=1, server_version=server_version,
                                   tool_version=self.tool_version)
            writer.write_prelude(header, collections)
            started = True
            counts: dict[str, int] = {}
            raw_codec: CodecOptions[RawBSONDocument] = CodecOptions(document_class=RawBSONDocument)
            for meta in collections:
                if cancel.is_set():
                    raise interrupted(cancel)
                what = f"reading {meta.namespace}"
                coll = client[meta.db].get_collection(meta.collection, codec_options=raw_codec)
                with coll.find({}, batch_size=self.batch_size) as cursor:
                    docs = cast("Iterator[RawBSONDocument]", cursor)
                    writer.write_documents(meta.db, meta.collection, self._raw(docs, cancel))
                writer.end_namespace(meta.db, meta.collection)
                counts[meta.namespace] = writer.documents(meta.db, meta.collection)
            writer.close()
            gz.close()
        except PyMongoError as exc:
            raise map_pymongo_error(exc, self.uri, what=what, started=started) from None
        finally:
            client.close()
        return DumpInfo(engine=self.name, tool_version=self.tool_version, server_version=server_version,
                        source_host=render_hosts(self.uri), namespaces=counts)

    def _raw(self, cursor: Iterator[RawBSONDocument], cancel: threading.Event) -> Iterator[bytes]:
        """Yield each document's raw bytes, checking `cancel` once per batch."""
        n = 0
        for doc in cursor:
            n += 1
            if n % self.batch_size == 0 and cancel.is_set():
                raise interrupted(cancel)
            raw = doc.raw
            yield raw if isinstance(raw, bytes) else bytes(raw)

    def _collections(self, client: MongoClient[dict[str, Any]],
                     cancel: threading.Event) -> list[CollectionMeta]:
        """Return the metadata of every selected collection, sorted by namespace."""
        metas: list[CollectionMeta] = []
        for db_name in sorted(client.list_database_names()):
            if db_name in SYSTEM_DATABASES:
                continue
            if cancel.is_set():
                raise interrupted(cancel)
            db = client[db_name]
            infos = sorted(db.list_collections(), key=lambda i: str(i.get("name", "")))
            for info in infos:
                name = str(info.get("name", ""))
                # Views have no data of their own and system.* collections belong to the server;
                # mongodump skips both by default, and so do we.
                if info.get("type", "collection") != "collection" or name.startswith("system."):
                    continue
                if not ns_selected(f"{db_name}.{name}", self.include, self.exclude):
                    continue
                indexes = [{k: v for k, v in dict(index).items() if k != "ns"}
                           for index in db[name].list_indexes()]
                options = dict(info.get("options") or {})
                metas.append(CollectionMeta.build(db_name, name, options=options, indexes=indexes,
                                                  uuid=_uuid_hex(info.get("info"))))
        return metas


# ------------------------------------------------------------------------------------ child process


def main(argv: Sequence[str] | None = None) -> int:
    """Run the native engine as a child process: the archive to stdout, one-line errors to stderr.

    Same contract as mongodump: the URI comes from the YAML file named by --config (a pipe), the exit code
    is 0 or the failure's documented code, and SIGTERM stops the dump (exit 143). The last stderr line of a
    success reports what was dumped, after DUMP_INFO_MARKER.
    """
    import argparse
    import json
    import sys

    import yaml

    from backup_exporter.engines.process import DUMP_INFO_MARKER

    parser = argparse.ArgumentParser(prog="backup_exporter.engines.native")
    parser.add_argument("--config", required=True)
    parser.add_argument("--include", action="append", default=[])
    parser.add_argument("--exclude", action="append", default=[])
    parser.add_argument("--connect-timeout", type=float, default=10.0)
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
