"""The native engine against a real wire-protocol server (SecantusDB)."""

from __future__ import annotations

import datetime
import gzip
import hashlib
import io
import os
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from bson import Binary, Code, Decimal128, Int64, MaxKey, MinKey, ObjectId, Regex, Timestamp
from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument
from pymongo import ASCENDING, DESCENDING, MongoClient

from backup_exporter import __version__
from backup_exporter.archive import CollectionMeta, Document, NamespaceEnd, iter_archive, verify_archive
from backup_exporter.core.errors import (
    AuthenticationFailed,
    ConfigError,
    DumpFailed,
    ExitCode,
    Interrupted,
    SourceUnavailable,
)
from backup_exporter.engines.mongodump import MongodumpEngine
from backup_exporter.engines.native import NativeEngine
from backup_exporter.mongo.errors import scrub
from backup_exporter.mongo.uri import render_hosts
from tests import servers

RAW = CodecOptions(document_class=RawBSONDocument)


def sample_document(i: int) -> dict[str, Any]:
    """A document with most BSON types, varied by i."""
    return {
        "_id": ObjectId(),
        "n": i,
        "big": Int64(2**40 + i),
        "price": Decimal128(f"{i}.{i:02d}"),
        "ratio": i / 7,
        "at": datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC) + datetime.timedelta(minutes=i),
        "blob": Binary(bytes(range(i % 256)) or b"\x00", 0),
        "uuid": Binary(uuid.UUID(int=i + 1).bytes, 4),
        "re": Regex(f"^name{i}.*$", "im"),
        "ts": Timestamp(1_700_000_000 + i, i % 5 + 1),
        "lo": MinKey(),
        "hi": MaxKey(),
        "code": Code("function() { return 1; }"),
        "nested": {"a": [1, [2, {"b": [None, True, False]}], {"c": {"d": "deep"}}], "e": {}},
        "text": f"Grüße, 世界, مرحبا, emoji 🙂 #{i}",
        "empty_string": "",
        "empty_array": [],
        "empty_doc": {},
        "nothing": None,
    }


@dataclass
class Source:
    """Three uuid-suffixed databases on the session server, described for the assertions."""

    suffix: str
    dbs: list[str]
    counts: dict[str, int] = field(default_factory=dict)  # namespace -> documents

    @property
    def include(self) -> list[str]:
        return [f"*_{self.suffix}.*"]


def load_source(client: MongoClient[dict[str, Any]]) -> Source:
    """Create three databases with indexes, a validator, a capped and an empty collection, and a view."""
    suffix = uuid.uuid4().hex[:10]
    shop, crm, analytics = (f"{name}_{suffix}" for name in ("shop", "crm", "analytics"))
    source = Source(suffix, [shop, crm, analytics])

    users = client[shop].users
    users.insert_many([{**sample_document(i), "email": f"u{i}@example.com", "age": 20 + i % 50,
                        "created": datetime.datetime(2023, 1, 1) + datetime.timedelta(days=i)}
                       for i in range(120)])
    users.create_index("email", unique=True)
    users.create_index([("age", ASCENDING), ("created", DESCENDING)], name="age_created")

    sessions = client[shop].sessions
    sessions.insert_many([{"user": i, "at": datetime.datetime(2124, 5, 1) + datetime.timedelta(hours=i)}
                          for i in range(40)])
    sessions.create_index("at", expireAfterSeconds=3600)

    orders = client[shop].orders
    orders.insert_many([{**sample_document(i), "user": i % 10, "status": ("paid", "open")[i % 2]}
                        for i in range(80)])
    orders.create_index("user", name="paid_by_user", partialFilterExpression={"status": "paid"})

    client[shop].create_collection("log", capped=True, size=65536, max=1000)
    client[shop].log.insert_many([{"line": f"event {i}", "at": datetime.datetime(2024, 1, 1)}
                                  for i in range(30)])
    client[shop].create_collection("empty")
    client[shop].command("create", "paid_orders", viewOn="orders", pipeline=[{"$match": {"status": "paid"}}])

    validator = {"$jsonSchema": {"bsonType": "object", "required": ["name"]}}
    client[crm].create_collection("contacts", validator=validator)
    client[crm].contacts.insert_many([{"name": f"Contact {i}", "tags": ["a", "b"][: i % 3]}
                                      for i in range(60)])

    client[analytics].events.insert_many([sample_document(i) for i in range(150)])

    for db in source.dbs:
        for name in client[db].list_collection_names(filter={"type": "collection"}):
            source.counts[f"{db}.{name}"] = client[db][name].count_documents({})
    return source


def drop_source(client: MongoClient[dict[str, Any]], source: Source) -> None:
    for db in source.dbs:
        client.drop_database(db)


def server_digests(client: MongoClient[dict[str, Any]], ns: str) -> list[str]:
    """Sorted sha256 of each document's raw bytes as the server returns them."""
    db, coll = ns.split(".", 1)
    docs = client[db].get_collection(coll, codec_options=RAW).find({})
    return sorted(hashlib.sha256(doc.raw).hexdigest() for doc in docs)


@dataclass
class Dump:
    gz: bytes
    chunks: int
    metas: dict[str, CollectionMeta]
    digests: dict[str, list[str]]
    ends: dict[str, NamespaceEnd]


class BytesSink:
    def __init__(self) -> None:
        self.buffer = io.BytesIO()
        self.writes = 0

    def write(self, data: bytes) -> None:
        self.writes += 1
        self.buffer.write(data)


def read_dump(gz: bytes, chunks: int = 0) -> Dump:
    dump = Dump(gz, chunks, {}, {}, {})
    for event in iter_archive(io.BytesIO(gzip.decompress(gz))):
        if isinstance(event, CollectionMeta):
            dump.metas[event.namespace] = event
            dump.digests[event.namespace] = []
        elif isinstance(event, Document):
            dump.digests[event.namespace].append(hashlib.sha256(event.raw).hexdigest())
        elif isinstance(event, NamespaceEnd):
            dump.ends[event.namespace] = event
    for digests in dump.digests.values():
        digests.sort()
    return dump


def run_dump(engine: NativeEngine) -> tuple[Dump, Any]:
    sink = BytesSink()
    info = engine.dump(sink, threading.Event())
    return read_dump(sink.buffer.getvalue(), sink.writes), info


@pytest.fixture(scope="module")
def source(mongo_client: MongoClient[dict[str, Any]]) -> Iterator[Source]:
    loaded = load_source(mongo_client)
    yield loaded
    drop_source(mongo_client, loaded)


@pytest.fixture(scope="module")
def full_dump(source: Source, mongo_uri: str) -> tuple[Dump, Any]:
    return run_dump(NativeEngine(mongo_uri, include=source.include))


# ------------------------------------------------------------------------------------------ content


def test_dump_holds_every_namespace_with_the_source_documents_byte_for_byte(
        source: Source, full_dump: tuple[Dump, Any], mongo_client: MongoClient[dict[str, Any]]) -> None:
    dump, info = full_dump
    assert set(dump.metas) == set(source.counts) | {f"{source.dbs[0]}.paid_orders"}  # the view
    assert info.namespaces == source.counts
    for ns, count in source.counts.items():
        assert dump.ends[ns].crc_ok
        assert dump.ends[ns].documents == count
        assert dump.digests[ns] == server_digests(mongo_client, ns), ns


def test_dump_info_and_header_name_the_tool_the_server_and_the_hosts(
        full_dump: tuple[Dump, Any], mongo_server: servers.Server) -> None:
    dump, info = full_dump
    summary = verify_archive(io.BytesIO(dump.gz))
    assert summary.ok
    assert info.engine == "native"
    assert info.tool_version == summary.header.tool_version == f"backup_exporter-native {__version__}"
    assert info.server_version == summary.header.server_version != "unknown"
    assert summary.header.concurrent_collections == 4  # the default number of readers
    assert info.source_host == mongo_server.address


def test_dump_records_indexes_and_options_in_the_metadata(source: Source,
                                                          full_dump: tuple[Dump, Any]) -> None:
    metas = full_dump[0].metas
    shop, crm, _ = source.dbs

    def index(ns: str, name: str) -> dict[str, Any]:
        (found,) = [i for i in metas[ns].indexes if i["name"] == name]
        return found

    assert index(f"{shop}.users", "email_1")["unique"] is True
    assert list(index(f"{shop}.users", "age_created")["key"].items()) == [("age", 1), ("created", -1)]
    assert index(f"{shop}.sessions", "at_1")["expireAfterSeconds"] == 3600
    assert index(f"{shop}.orders", "paid_by_user")["partialFilterExpression"] == {"status": "paid"}
    assert all(index(ns, "_id_")["key"] == {"_id": 1} for ns in source.counts)
    assert metas[f"{crm}.contacts"].options == {
        "validator": {"$jsonSchema": {"bsonType": "object", "required": ["name"]}}}
    capped = metas[f"{shop}.log"].options
    assert capped["capped"] is True and capped["size"] >= 65536 and capped["max"] == 1000
    users_json = metas[f"{shop}.users"].metadata_json()
    assert users_json.startswith('{"indexes":[{"v":{"$numberInt":"2"},"key":{"_id":{"$numberInt":"1"}}')
    assert users_json.endswith('"collectionName":"users","type":"collection"}')
    assert len(metas[f"{shop}.users"].uuid or "") == 32


def test_views_are_dumped_as_metadata_and_empty_collections_get_an_eof_block(
        source: Source, full_dump: tuple[Dump, Any]) -> None:
    dump = full_dump[0]
    shop = source.dbs[0]
    view = dump.metas[f"{shop}.paid_orders"]
    assert view.type == "view" and view.indexes == []
    assert view.options == {"viewOn": "orders", "pipeline": [{"$match": {"status": "paid"}}]}
    assert dump.ends[f"{shop}.paid_orders"].documents == 0
    assert dump.ends[f"{shop}.empty"].documents == 0 and dump.ends[f"{shop}.empty"].crc == 0


def test_include_and_exclude_filters_select_namespaces_with_exclude_winning(
        source: Source, mongo_uri: str) -> None:
    shop, crm, analytics = source.dbs
    engine = NativeEngine(mongo_uri, include=[f"{shop}.*", f"{crm}.*"],
                          exclude=[f"{shop}.u*", f"{shop}.empty"])
    dump, info = run_dump(engine)
    expected = {ns for ns in source.counts
                if ns.startswith((f"{shop}.", f"{crm}.")) and ns not in (f"{shop}.users", f"{shop}.empty")}
    assert set(info.namespaces) == expected
    assert set(dump.metas) == expected | {f"{shop}.paid_orders"}  # the view, which holds no documents
    assert not any(ns.startswith(analytics) for ns in dump.metas)


def test_dump_without_filters_skips_what_mongodump_skips(source: Source, mongo_uri: str) -> None:
    dump, _ = run_dump(NativeEngine(mongo_uri))
    assert set(source.counts) <= set(dump.metas)
    assert not any(ns.split(".")[0] in ("local", "config") for ns in dump.metas)
    # mongodump keeps admin (users, roles) and system.js; other system.* collections belong to the server.
    assert not any(ns.split(".", 1)[1].startswith("system.") and not ns.startswith("admin.")
                   and not ns.endswith(".system.js") for ns in dump.metas)
    assert "admin.system.keys" not in dump.metas


def test_large_collection_reaches_the_sink_in_megabyte_chunks(mongo_client: MongoClient[dict[str, Any]],
                                                              mongo_uri: str) -> None:
    db = f"bulk_{uuid.uuid4().hex[:10]}"
    try:
        # Random payloads do not compress, so ~3 MiB of documents give several 1 MiB chunks.
        mongo_client[db].blobs.insert_many([{"i": i, "payload": Binary(os.urandom(32 * 1024))}
                                            for i in range(100)])
        sink = BytesSink()
        info = NativeEngine(mongo_uri, include=[f"{db}.*"], compression_level=1).dump(sink, threading.Event())
        assert info.namespaces == {f"{db}.blobs": 100}
        assert sink.writes >= 3
        dump = read_dump(sink.buffer.getvalue())
        assert dump.digests[f"{db}.blobs"] == server_digests(mongo_client, f"{db}.blobs")
    finally:
        mongo_client.drop_database(db)


# ------------------------------------------------------------------------------------------ failures


def test_unreachable_server_raises_source_unavailable_quickly_without_the_password() -> None:
    port = servers.free_port()
    engine = NativeEngine(f"mongodb://user:s3cret@127.0.0.1:{port}/", connect_timeout_s=0.5)
    started = time.monotonic()
    with pytest.raises(SourceUnavailable) as caught:
        engine.dump(BytesSink(), threading.Event())
    assert time.monotonic() - started < 10
    message = str(caught.value)
    assert message.startswith(f"MongoDB at 127.0.0.1:{port} is unreachable")
    assert "s3cret" not in message and "\n" not in message
    assert caught.value.exit_code == ExitCode.UNAVAILABLE


def test_hosts_and_messages_never_carry_the_password() -> None:
    uri = "mongodb://admin:p%40ss@db1:27017,db2/?replicaSet=rs0"
    assert render_hosts(uri) == "db1:27017,db2:27017"
    assert render_hosts("mongodb+srv://u:pw@cluster.example.net/db") == "cluster.example.net"
    assert scrub(f"failed for {uri} with p@ss and p%40ss", uri) == "failed for *** with *** and ***"


def test_cancel_set_before_the_dump_interrupts_it(mongo_uri: str) -> None:
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Interrupted):
        NativeEngine(mongo_uri).dump(BytesSink(), cancel)


class CancelAfter(threading.Event):
    """An event that becomes set after it has been asked `calls` times (a signal arriving mid-dump)."""

    def __init__(self, calls: int) -> None:
        super().__init__()
        self.calls = calls

    def is_set(self) -> bool:
        self.calls -= 1
        if self.calls <= 0:
            self.set()
        return super().is_set()


def test_cancel_set_mid_collection_interrupts_between_batches(source: Source, mongo_uri: str) -> None:
    engine = NativeEngine(mongo_uri, include=[f"{source.dbs[2]}.*"], batch_size=10)
    cancel = CancelAfter(calls=5)
    with pytest.raises(Interrupted) as caught:
        engine.dump(BytesSink(), cancel)
    assert caught.value.exit_code == ExitCode.INTERRUPTED_SIGTERM
    assert cancel.calls <= 0


@pytest.fixture(scope="module")
def auth_server(server_logs: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[servers.Server]:
    """A server requiring SCRAM authentication, with user `backup` / `right-password`."""
    storage = str(tmp_path_factory.mktemp("secantus-auth"))
    setup = servers.start_secantus(server_logs, extra_args=["--storage-path", storage])
    try:
        client: MongoClient[dict[str, Any]] = MongoClient(
            f"mongodb://{setup.address}/?directConnection=true", serverSelectionTimeoutMS=5000)
        client.admin.command("createUser", "backup", pwd="right-password", roles=["root"])
        client.close()
    finally:
        setup.stop()
    server = servers.start_secantus(server_logs, extra_args=["--storage-path", storage, "--auth"])
    yield server
    server.stop()


def test_wrong_password_raises_authentication_failed_without_the_password(
        auth_server: servers.Server) -> None:
    uri = f"mongodb://backup:wr0ng-s3cret@{auth_server.address}/?directConnection=true"
    with pytest.raises(AuthenticationFailed) as caught:
        NativeEngine(uri, connect_timeout_s=5).dump(BytesSink(), threading.Event())
    assert "wr0ng-s3cret" not in str(caught.value)
    assert str(caught.value).startswith(f"MongoDB at {auth_server.address} refused the credentials")
    assert caught.value.exit_code == ExitCode.NOPERM


def test_right_password_dumps_from_an_authenticated_server(auth_server: servers.Server) -> None:
    uri = f"mongodb://backup:right-password@{auth_server.address}/?directConnection=true"
    client: MongoClient[dict[str, Any]] = MongoClient(uri, serverSelectionTimeoutMS=5000)
    try:
        client.authdb.things.insert_many([{"i": i} for i in range(5)])
        dump, info = run_dump(NativeEngine(uri, include=["authdb.*"]))
        assert info.namespaces == {"authdb.things": 5}
        assert dump.digests["authdb.things"] == server_digests(client, "authdb.things")
    finally:
        client.close()


def test_malformed_uri_is_a_configuration_error_without_the_password() -> None:
    with pytest.raises(ConfigError) as caught:
        NativeEngine("mongodb://user:s3cret@127.0.0.1:notaport/").dump(BytesSink(), threading.Event())
    assert caught.value.exit_code == ExitCode.CONFIG
    assert "s3cret" not in str(caught.value) and "invalid MongoDB URI" in str(caught.value)


def test_a_dump_tool_that_cannot_start_fails_with_127_and_leaks_no_descriptor(tmp_path: Path) -> None:
    # The daemon retries a missing binary on every slot: each failed start must give back the pipe
    # that was meant to carry the URI.
    engine = MongodumpEngine("mongodb://user:s3cret@127.0.0.1:1/", binary=str(tmp_path / "no-mongodump"))
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(20):
        with pytest.raises(DumpFailed) as caught:
            engine.dump(BytesSink(), threading.Event())
        assert caught.value.exit_code == 127
        assert str(caught.value).startswith(f"cannot run {tmp_path / 'no-mongodump'}: ")
        assert "s3cret" not in str(caught.value)
    assert len(os.listdir("/proc/self/fd")) - before < 5
