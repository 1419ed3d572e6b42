"""Archives made with every compression and parallelism setting restore with the real mongorestore.

Each setting runs a real backup (`run_backup`, local storage) of a small dataset on SecantusDB, `backupctl
verify` checks it, and the real `mongorestore --archive --gzip` (from $MONGO_TOOLS_BIN) restores it into an
empty SecantusDB: every document byte-equal and every index equal. The parallel native archive's structure
is checked event by event: segments of different namespaces interleave, every CRC matches its documents.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import itertools
import os
import subprocess
import threading
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from bson import encode
from pymongo import MongoClient

from backup_exporter import config
from backup_exporter.archive import (
    ArchiveHeader,
    ArchiveWriter,
    CollectionMeta,
    Document,
    NamespaceEnd,
    SegmentStart,
    crc64,
    iter_archive,
    to_signed64,
)
from backup_exporter.config import PlanConfig
from backup_exporter.core.errors import ArchiveError, ConfigError
from backup_exporter.core.schedule import parse_cron
from backup_exporter.engines.catalog import list_catalog
from backup_exporter.engines.native import NativeEngine
from backup_exporter.engines.parallel_copy import ParallelCopy, has_documents
from backup_exporter.operations.run import run_backup
from backup_exporter.operations.verify import verify_backup
from backup_exporter.storage.local import LocalStorage
from tests import dataset, servers


def tools_dir() -> Path | None:
    """Return $MONGO_TOOLS_BIN when it holds both real tools, else None."""
    value = os.environ.get("MONGO_TOOLS_BIN", "")
    path = Path(value) if value else None
    if path and (path / "mongodump").is_file() and (path / "mongorestore").is_file():
        return path
    return None


TOOLS = tools_dir()
needs_tools = pytest.mark.skipif(TOOLS is None, reason="real mongodump/mongorestore not found: set "
                                                       "MONGO_TOOLS_BIN to the directory holding both")


@dataclasses.dataclass
class Source:
    prefix: str
    counts: dict[str, int]


@pytest.fixture(scope="module")
def source(mongo_client: MongoClient[dict[str, Any]]) -> Iterator[Source]:
    prefix = f"cs{uuid.uuid4().hex[:8]}"
    counts = dataset.load(mongo_client, prefix, per_collection=40)
    yield Source(prefix, counts)
    dataset.drop(mongo_client, prefix)


@pytest.fixture(scope="module")
def target_server(server_logs: Path) -> Iterator[servers.Server]:
    server = servers.start_secantus(server_logs)
    yield server
    server.stop()


@pytest.fixture
def empty_target(target_server: servers.Server) -> Iterator[MongoClient[dict[str, Any]]]:
    """A client of the target server, holding no user database."""
    client: MongoClient[dict[str, Any]] = MongoClient(
        f"mongodb://{target_server.address}/?directConnection=true", serverSelectionTimeoutMS=5000)
    for name in client.list_database_names():
        if name not in ("admin", "local", "config"):
            client.drop_database(name)
    yield client
    client.close()


def index_specs(client: MongoClient[dict[str, Any]], ns: str) -> list[dict[str, Any]]:
    db, coll = ns.split(".", 1)
    specs = [{k: v for k, v in dict(i).items() if k not in ("v", "ns")} for i in client[db][coll].list_indexes()]
    return sorted(specs, key=lambda s: str(s["name"]))


def restore_with_real_mongorestore(blob: Path, target: MongoClient[dict[str, Any]]) -> None:
    assert TOOLS is not None
    host, port = target.address  # type: ignore[misc]
    with blob.open("rb") as stdin:
        result = subprocess.run([str(TOOLS / "mongorestore"), "--archive", "--gzip",
                                 f"--uri=mongodb://{host}:{port}/?directConnection=true"],
                                stdin=stdin, capture_output=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr.decode(errors="replace")[-2000:]


def plan_for(mongo_uri: str, source: Source, **settings: Any) -> PlanConfig:
    # mongodump 100.8 has no --nsInclude: its plans dump the whole (small, test-only) server.
    include = (f"{source.prefix}_*.*",) if settings["engine"] == "native" else ()
    return PlanConfig(name="settings", mongodb_uri=mongo_uri, schedule=parse_cron("0 3 * * *"),
                      include=include, **settings)


SETTINGS = [
    pytest.param({"engine": "native", "compression_level": 0, "parallel_collections": 1}, id="native-level0-1reader"),
    pytest.param({"engine": "native", "compression_level": 1, "parallel_collections": 4}, id="native-level1-4readers"),
    pytest.param({"engine": "native", "compression_level": 2, "parallel_collections": 4}, id="native-level2-4readers"),
    pytest.param({"engine": "native", "compression_level": 3, "parallel_collections": 1}, id="native-level3-1reader"),
    pytest.param({"engine": "mongodump", "compression_level": 1}, id="mongodump-backupctl-gzip"),
    pytest.param({"engine": "mongodump", "compression_level": 3}, id="mongodump-backupctl-gzip-level3"),
    pytest.param({"engine": "mongodump", "mongodump_compress": True}, id="mongodump-own-gzip"),
]


@needs_tools
@pytest.mark.parametrize("settings", SETTINGS)
def test_every_setting_makes_an_archive_that_verify_accepts_and_mongorestore_restores_equal(
        settings: dict[str, Any], source: Source, mongo_uri: str, mongo_client: MongoClient[dict[str, Any]],
        empty_target: MongoClient[dict[str, Any]], tmp_path: Path) -> None:
    if settings["engine"] == "mongodump":
        assert TOOLS is not None
        settings = {**settings, "mongodump_path": str(TOOLS / "mongodump")}
    storage = LocalStorage(tmp_path)
    outcome = run_backup(plan_for(mongo_uri, source, **settings), storage, trigger="test")
    assert outcome.exit_code == 0, outcome.message

    report = verify_backup(storage, outcome.name)
    assert report.sha256 == outcome.sha256
    assert {ns: n for ns, n in report.namespaces.items() if ns in source.counts} == source.counts

    blob = tmp_path / outcome.name
    inflate = zlib.decompressobj(wbits=31)
    inflate.decompress(blob.read_bytes())
    assert inflate.eof and inflate.unused_data == b""  # ONE gzip member, as `--archive --gzip` is

    restore_with_real_mongorestore(blob, empty_target)
    for ns in source.counts:
        assert dataset.digest(empty_target, ns) == dataset.digest(mongo_client, ns), ns
        assert index_specs(empty_target, ns) == index_specs(mongo_client, ns), ns


# ------------------------------------------------------------------------------- parallel structure


@dataclasses.dataclass
class Layout:
    header: ArchiveHeader
    order: list[tuple[str, str]]  # ("segment" | "eof", namespace) in archive order
    documents: dict[str, list[bytes]]
    ends: dict[str, NamespaceEnd]


def layout_of(gz: bytes) -> Layout:
    layout = Layout(ArchiveHeader(), [], {}, {})
    for event in iter_archive(io.BytesIO(zlib.decompress(gz, wbits=31))):  # strict: any CRC mismatch raises
        if isinstance(event, ArchiveHeader):
            layout.header = event
        elif isinstance(event, CollectionMeta):
            layout.documents[event.namespace] = []
        elif isinstance(event, SegmentStart):
            layout.order.append(("segment", event.namespace))
        elif isinstance(event, Document):
            layout.documents[event.namespace].append(event.raw)
        elif isinstance(event, NamespaceEnd):
            layout.order.append(("eof", event.namespace))
            layout.ends[event.namespace] = event
    return layout


class BytesSink:
    def __init__(self) -> None:
        self.buffer = io.BytesIO()

    def write(self, data: bytes) -> None:
        self.buffer.write(data)


@pytest.fixture(scope="module")
def sized_collections(mongo_client: MongoClient[dict[str, Any]]) -> Iterator[tuple[str, dict[str, int]]]:
    """One database with a big collection (last by name) and three small ones (documents of about 1 KiB).
    The small ones still take 15 batches of 20 each: with fewer, a reader could finish one before another
    reader's first answer came back, and the segments would not interleave on a loaded machine."""
    db = f"par{uuid.uuid4().hex[:8]}"
    sizes = {"zz_big": 1500, "small_a": 300, "small_b": 300, "small_c": 300}
    for name, n in sizes.items():
        mongo_client[db][name].insert_many([{"i": i, "pad": hashlib.sha256(str(i).encode()).hexdigest() * 16}
                                            for i in range(n)])
    yield db, {f"{db}.{name}": n for name, n in sizes.items()}
    mongo_client.drop_database(db)


def test_four_readers_interleave_namespace_segments_like_mongodump_with_every_crc_right(
        sized_collections: tuple[str, dict[str, int]], mongo_uri: str) -> None:
    db, counts = sized_collections
    sink = BytesSink()
    info = NativeEngine(mongo_uri, include=[f"{db}.*"], parallel_collections=4, batch_size=20).dump(
        sink, threading.Event())
    assert info.namespaces == counts
    layout = layout_of(sink.buffer.getvalue())
    assert layout.header.concurrent_collections == 4

    # Every namespace ends with exactly one EOF block after all of its segments, and its stored CRC is
    # CRC-64 of its documents' bytes in archive order.
    for ns, n in counts.items():
        assert len(layout.documents[ns]) == n
        assert [kind for kind, name in layout.order if name == ns][-1] == "eof"
        assert sum(1 for kind, name in layout.order if (kind, name) == ("eof", ns)) == 1
        crc = 0
        for raw in layout.documents[ns]:
            crc = crc64(raw, crc)
        assert layout.ends[ns].crc == to_signed64(crc) == layout.ends[ns].computed_crc

    # Segments of different namespaces interleave: some namespace has a segment after another namespace's
    # segment that came after its own first one (mongodump -j writes the same shape).
    segments = [name for kind, name in layout.order if kind == "segment"]
    switches = sum(1 for a, b in itertools.pairwise(segments) if a != b)
    assert switches > len(counts) - 1, segments
    # Consecutive batches of one namespace share a segment: a header only where the namespace changes.
    assert all(not (a == b and a[0] == "segment") for a, b in itertools.pairwise(layout.order))

    # The big collection does not hold the small ones back: they are all finished before it is.
    # (Four collections, four readers: all start at once.)
    big_eof = layout.order.index(("eof", f"{db}.zz_big"))
    assert all(layout.order.index(("eof", ns)) < big_eof for ns in counts if not ns.endswith(".zz_big"))


def test_one_reader_writes_each_namespace_in_one_segment_then_its_eof(
        sized_collections: tuple[str, dict[str, int]], mongo_uri: str) -> None:
    db, counts = sized_collections
    sink = BytesSink()
    NativeEngine(mongo_uri, include=[f"{db}.*"], parallel_collections=1, batch_size=20).dump(
        sink, threading.Event())
    layout = layout_of(sink.buffer.getvalue())
    assert layout.header.concurrent_collections == 1
    # Each namespace whole, in the prelude's order: segment, EOF.
    assert [name for kind, name in layout.order if kind == "eof"] == sorted(counts)
    assert len(layout.order) == 2 * len(counts)
    assert all(layout.order[i][1] == layout.order[i + 1][1] for i in range(0, len(layout.order), 2))


def test_with_more_collections_than_readers_the_largest_is_copied_first(
        sized_collections: tuple[str, dict[str, int]], mongo_uri: str) -> None:
    db, counts = sized_collections
    client: MongoClient[dict[str, Any]] = MongoClient(mongo_uri)
    try:
        metas = [m for m in list_catalog(client, [f"{db}.*"], [], threading.Event()) if has_documents(m)]

        def order(readers: int) -> list[str]:
            copy = ParallelCopy(client, mongo_uri, ArchiveWriter(io.BytesIO()), threading.Event(), readers=readers)
            return [m.namespace for m in copy.copy_order(metas)]

        # zz_big is last by name and the largest by the server's count: two readers take it first. (Which
        # segment reaches the archive first is up to the readers' timing, so the order is asked directly.)
        assert order(2)[0] == f"{db}.zz_big"
        assert sorted(order(2)) == sorted(counts)
        # A reader for every collection, or one reader: the catalog's order, no count asked.
        assert order(4) == order(1) == sorted(counts)
    finally:
        client.close()
    sink = BytesSink()
    NativeEngine(mongo_uri, include=[f"{db}.*"], parallel_collections=2, batch_size=20).dump(
        sink, threading.Event())
    layout = layout_of(sink.buffer.getvalue())
    assert layout.header.concurrent_collections == 2
    assert sorted(name for kind, name in layout.order if kind == "eof") == sorted(counts)


def test_a_malformed_batch_is_refused_before_it_reaches_the_archive() -> None:
    writer = ArchiveWriter(io.BytesIO())
    writer.write_prelude(ArchiveHeader(), [CollectionMeta.build("a", "b")])
    good = encode({"x": 1})
    assert writer.write_batch("a", "b", good + good) == 2
    with pytest.raises(ArchiveError, match=r"batch of a\.b"):
        writer.write_batch("a", "b", good + good[:-1])


# ------------------------------------------------------------------------------------------ settings


ENV = {"MONGODB_URI": "mongodb://db.internal/", "BACKUP_LOCAL_DIR": "/backups"}


def test_the_settings_default_to_isal_level_1_four_readers_and_backupctl_compressing() -> None:
    plan = config.from_environment(ENV).plan(None)
    assert (plan.compression_level, plan.parallel_collections, plan.mongodump_compress) == (1, 4, False)


def test_the_settings_come_from_the_environment() -> None:
    plan = config.from_environment({**ENV, "BACKUP_COMPRESSION_LEVEL": "3", "BACKUP_PARALLEL_COLLECTIONS": "16",
                                    "BACKUP_MONGODUMP_COMPRESS": "true"}).plan(None)
    assert (plan.compression_level, plan.parallel_collections, plan.mongodump_compress) == (3, 16, True)


@pytest.mark.parametrize(("var", "value", "words"), [
    ("BACKUP_COMPRESSION_LEVEL", "4", "BACKUP_COMPRESSION_LEVEL: must be between 0 and 3, got 4"),
    ("BACKUP_PARALLEL_COLLECTIONS", "0", "BACKUP_PARALLEL_COLLECTIONS: must be between 1 and 16, got 0"),
    ("BACKUP_MONGODUMP_COMPRESS", "maybe", "BACKUP_MONGODUMP_COMPRESS: 'maybe' is not true or false"),
])
def test_an_impossible_setting_is_one_config_error_naming_it(var: str, value: str, words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        config.from_environment({**ENV, var: value})
    assert words in str(caught.value)
