"""Parity with real mongodump 100.8.0: the same SecantusDB dumped by mongodump (its default `--archive`
output) and by the native engine, both read with the project's archive reader and compared namespace by
namespace; then each archive restored with real mongorestore into an empty server and compared with the
source. The differences that remain are deliberate and listed in the README ("Native archives and
mongodump's").
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument
from pymongo import ASCENDING, DESCENDING, GEO2D, GEOSPHERE, MongoClient

from backup_exporter.archive import (
    ArchiveHeader,
    CollectionMeta,
    Document,
    NamespaceEnd,
    iter_archive,
    open_archive_stream,
)
from backup_exporter.engines.native import NativeEngine
from tests import servers
from tests.mongo_tools import MongoTools

RAW: CodecOptions[RawBSONDocument] = CodecOptions(document_class=RawBSONDocument)
MANY_COLLECTIONS = 210
NEAR_16_MIB = 16 * 1024 * 1024 - 4096
TIMESERIES = "parity_b.measurements"

# Index kinds SecantusDB refuses ("text indexes are not supported", "hashed indexes are not supported"):
# they are not part of the comparison, and the README says so.
INDEXES: list[tuple[list[tuple[str, Any]], dict[str, Any]]] = [
    ([("a", ASCENDING)], {"unique": True}),
    ([("a", ASCENDING), ("b", DESCENDING)], {"name": "a_b"}),
    ([("b", ASCENDING)], {"sparse": True}),
    ([("b", DESCENDING)], {"partialFilterExpression": {"a": {"$gt": 5}}}),
    ([("at", ASCENDING)], {"expireAfterSeconds": 3600}),
    ([("loc", GEOSPHERE)], {}),
    ([("flat", GEO2D)], {}),
    ([("w.$**", ASCENDING)], {}),
    ([("t", ASCENDING)], {"collation": {"locale": "fr", "strength": 2}, "name": "t_fr"}),
    ([("h", ASCENDING)], {"hidden": True}),
]


def load_parity_source(client: MongoClient[dict[str, Any]]) -> None:
    """Fill an empty server with every shape of collection mongodump has to keep."""
    a, b, many = client["parity_a"], client["parity_b"], client["parity_many"]
    a.plain.insert_many([{"n": i, "s": "x" * i, "at": dt.datetime(2026, 1, 1) + dt.timedelta(hours=i)}
                         for i in range(60)])
    a.create_collection("capped", capped=True, size=65536, max=100)
    a.capped.insert_many([{"n": i} for i in range(40)])
    a.create_collection("collated", collation={"locale": "fr", "strength": 2})
    a.collated.insert_many([{"name": name} for name in ("élan", "Elan", "zèbre")])
    a.create_collection("validated", validator={"n": {"$gte": 0}}, validationLevel="moderate",
                        validationAction="warn")
    a.validated.insert_one({"n": 1})
    a.create_collection("schema", validator={"$jsonSchema": {"bsonType": "object", "required": ["n"]}})
    a.schema.insert_one({"n": 2})
    a.create_collection("empty")
    a["dotted.name.x"].insert_one({"n": 3})
    a["nön_äscii_日本"].insert_one({"n": 4, "text": "ça va, 日本"})
    a.create_collection("paid", viewOn="plain", pipeline=[{"$match": {"n": {"$gt": 5}}}])
    a.create_collection("collated_view", viewOn="collated", pipeline=[], collation={"locale": "fr"})
    a["system.js"].insert_one({"_id": "double", "value": "function (x) { return 2 * x; }"})
    a.big.insert_one({"_id": 1, "blob": b"\x00" * NEAR_16_MIB})
    a.indexed.insert_many([{"a": i, "b": -i, "t": f"mot{i}", "h": i, "w": {"x": i}, "flat": [i % 90, i % 45],
                            "at": dt.datetime(2026, 1, 1), "loc": {"type": "Point", "coordinates": [i, i / 2]}}
                           for i in range(30)])
    for keys, options in INDEXES:
        a.indexed.create_index(keys, **options)
    b.events.insert_many([{"i": i, "tags": ["x", {"deep": [i, None, True]}]} for i in range(100)])
    b.create_collection("measurements", timeseries={"timeField": "t", "metaField": "m"})
    b.measurements.insert_many([{"t": dt.datetime(2026, 2, 1), "m": i % 3, "v": i} for i in range(10)])
    client.admin.app_settings.insert_one({"feature": "on"})
    for i in range(MANY_COLLECTIONS):
        many[f"c{i:03d}"].insert_one({"i": i})


# ------------------------------------------------------------------------------------ reading archives


@dataclass
class ArchiveContent:
    header: ArchiveHeader
    metas: dict[str, CollectionMeta] = field(default_factory=dict)
    digests: dict[str, list[str]] = field(default_factory=dict)  # in archive order
    ends: dict[str, NamespaceEnd] = field(default_factory=dict)


def read_archive(data: bytes) -> ArchiveContent:
    header: ArchiveHeader | None = None
    content: ArchiveContent | None = None
    for event in iter_archive(open_archive_stream(io.BytesIO(data))):
        if isinstance(event, ArchiveHeader):
            header = event
            content = ArchiveContent(header)
            continue
        assert content is not None
        if isinstance(event, CollectionMeta):
            content.metas[event.namespace] = event
            content.digests[event.namespace] = []
        elif isinstance(event, Document):
            content.digests[event.namespace].append(hashlib.sha256(event.raw).hexdigest())
        elif isinstance(event, NamespaceEnd):
            content.ends[event.namespace] = event
    assert header is not None and content is not None
    return content


def _unordered(value: Any) -> Any:
    """Return `value` with every sub-document a plain dict: mongorestore re-emits index options (collation,
    partial filters) in Go map order, which changes from run to run; only an index's key order matters."""
    if isinstance(value, dict):
        return {k: _unordered(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unordered(v) for v in value]
    return value


def server_state(client: MongoClient[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Every user namespace of a server: type, options, indexes (without the legacy ns), documents."""
    state = {}
    for db_name in client.list_database_names():
        if db_name in ("local", "config"):
            continue
        db = client[db_name]
        for info in db.list_collections():
            name = info["name"]
            if name.startswith("system.") and name != "system.js":
                continue
            is_view = info.get("type") == "view"
            indexes = [] if is_view else sorted(
                ({k: (v if k == "key" else _unordered(v)) for k, v in dict(i).items() if k != "ns"}
                 for i in db[name].list_indexes()),
                key=lambda i: str(i["name"]))
            docs = [] if is_view else sorted(
                hashlib.sha256(d.raw).hexdigest() for d in db.get_collection(name, codec_options=RAW).find())
            state[f"{db_name}.{name}"] = {"type": info.get("type", "collection"),
                                          "options": dict(info.get("options") or {}),
                                          "indexes": indexes, "documents": docs}
    return state


# ------------------------------------------------------------------------------------------ fixtures


@dataclass
class Dumps:
    source: MongoClient[dict[str, Any]]
    state: dict[str, dict[str, Any]]
    mongodump: bytes
    native: bytes


@pytest.fixture(scope="module")
def dumps(mongo_tools: MongoTools, server_logs: Path) -> Iterator[Dumps]:
    # A server of its own: mongodump cannot filter by pattern, and every namespace it holds is compared.
    server = servers.start_secantus(server_logs)
    uri = f"mongodb://{server.address}/?directConnection=true"
    client: MongoClient[dict[str, Any]] = MongoClient(uri, serverSelectionTimeoutMS=5000)
    try:
        load_parity_source(client)
        dumped = subprocess.run([mongo_tools.mongodump, f"--uri={uri}", "--archive"], capture_output=True,
                                timeout=120, check=False)
        assert dumped.returncode == 0, dumped.stderr.decode(errors="replace")[-2000:]
        sink = io.BytesIO()
        NativeEngine(uri, compression_level=1).dump(sink, threading.Event())
        yield Dumps(client, server_state(client), dumped.stdout, sink.getvalue())
    finally:
        client.close()
        server.stop()


@pytest.fixture(scope="module")
def empty_target(server_logs: Path) -> Iterator[tuple[str, MongoClient[dict[str, Any]]]]:
    server = servers.start_secantus(server_logs)
    uri = f"mongodb://{server.address}/?directConnection=true"
    client: MongoClient[dict[str, Any]] = MongoClient(uri, serverSelectionTimeoutMS=5000)
    yield uri, client
    client.close()
    server.stop()


# --------------------------------------------------------------------------------------------- tests


def test_both_archives_hold_the_same_namespaces_including_views_admin_and_system_js(dumps: Dumps) -> None:
    ours, theirs = read_archive(dumps.native), read_archive(dumps.mongodump)
    assert set(ours.metas) == set(theirs.metas)
    assert set(theirs.metas) == set(dumps.state)  # mongodump keeps every user namespace of the source
    assert {"parity_a.paid", "parity_a.collated_view", "parity_a.system.js", "admin.app_settings",
            "parity_a.nön_äscii_日本", "parity_a.dotted.name.x", "parity_a.empty"} <= set(ours.metas)
    assert sum(ns.startswith("parity_many.") for ns in ours.metas) == MANY_COLLECTIONS


def test_every_metadata_document_matches_mongodump_but_for_option_key_order(dumps: Dumps) -> None:
    ours, theirs = read_archive(dumps.native), read_archive(dumps.mongodump)
    for ns, meta in theirs.metas.items():
        mine = ours.metas[ns]
        # Whole metadata documents compare equal as values: options, indexes (an ordered list, each
        # index's keys in order), uuid, collectionName, type. Only the key order inside "options" may
        # differ: mongodump keeps them in a Go map, whose order changes from run to run.
        assert mine.metadata == meta.metadata, ns
        assert list(mine.metadata) == list(meta.metadata), ns
        assert [list(i) for i in mine.indexes] == [list(i) for i in meta.indexes], ns
        assert (mine.type, mine.size, mine.uuid) == (meta.type, meta.size, meta.uuid), ns
        if meta.type != "view":
            assert mine.uuid and len(mine.uuid) == 32, ns
    assert ours.metas["parity_a.paid"].type == "view"
    assert ours.metas["parity_a.capped"].options == {"capped": True, "size": 65536, "max": 100}
    assert {i["name"] for i in ours.metas["parity_a.indexed"].indexes} == {
        "_id_", "a_1", "a_b", "b_1", "b_-1", "at_1", "loc_2dsphere", "flat_2d", "w.$**_1", "t_fr", "h_1"}


def test_every_namespace_holds_the_same_documents_byte_for_byte(dumps: Dumps) -> None:
    ours, theirs = read_archive(dumps.native), read_archive(dumps.mongodump)
    for ns in theirs.metas:
        assert ours.digests[ns] == theirs.digests[ns], ns
        assert ours.ends[ns].documents == theirs.ends[ns].documents, ns
        assert ours.ends[ns].crc == theirs.ends[ns].crc and ours.ends[ns].crc_ok, ns
    assert ours.ends["parity_a.big"].bytes > NEAR_16_MIB


def test_the_headers_differ_only_in_the_deliberate_fields(dumps: Dumps) -> None:
    ours, theirs = read_archive(dumps.native).header, read_archive(dumps.mongodump).header
    assert (ours.version, ours.server_version) == (theirs.version, theirs.server_version)
    assert theirs.tool_version == "100.8.0" and ours.tool_version.startswith("backup_exporter-native ")
    # mongodump announces its -j (4 by default); the native engine its parallel_collections (4 by default).
    assert (theirs.concurrent_collections, ours.concurrent_collections) == (4, 4)


@pytest.mark.parametrize("which", ["mongodump", "native"])
def test_real_mongorestore_restores_each_archive_into_an_empty_server_as_the_source(
        which: str, dumps: Dumps, mongo_tools: MongoTools,
        empty_target: tuple[str, MongoClient[dict[str, Any]]]) -> None:
    uri, target = empty_target
    for db_name in target.list_database_names():
        if db_name not in ("admin", "local", "config"):
            target.drop_database(db_name)
    target.admin.drop_collection("app_settings")
    data = dumps.mongodump if which == "mongodump" else dumps.native
    argv = [mongo_tools.mongorestore, f"--uri={uri}", "--archive"]
    if which == "native":
        argv.append("--gzip")
    restored = subprocess.run(argv, input=data, capture_output=True, timeout=120, check=False)
    assert restored.returncode == 0, restored.stderr.decode(errors="replace")[-2000:]
    state = server_state(target)
    assert set(state) == set(dumps.state)
    for ns, expected in dumps.state.items():
        if ns == TIMESERIES:
            # SecantusDB lists a time-series collection as a plain one and serves its measurements;
            # mongorestore writes what it finds into system.buckets.<name>, expecting buckets. Real
            # MongoDB dumps buckets, so only the collection itself is compared here (README).
            expected = {**expected, "documents": []}
        assert state[ns] == expected, ns
