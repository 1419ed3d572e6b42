"""Restoring archives with pymongo into a real wire-protocol server (SecantusDB)."""

from __future__ import annotations

import hashlib
import io
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument
from pymongo import MongoClient

from backup_exporter.archive import TERMINATOR
from backup_exporter.core.errors import ArchiveError, Interrupted, SourceUnavailable, UsageError
from backup_exporter.engines.native import NativeEngine
from backup_exporter.mongo.namespaces import NamespaceMap
from backup_exporter.restore.native import RestoreArchiveError, restore_archive
from tests import servers
from tests.test_archive import index_view, manifest_view
from tests.test_native_engine import (
    BytesSink,
    CancelAfter,
    Source,
    drop_source,
    load_source,
    server_digests,
)

RAW = CodecOptions(document_class=RawBSONDocument)
GOLDEN_DBS = ("shop", "crm", "analytics")


def server_view(client: MongoClient[dict[str, Any]], db: str, coll: str) -> dict[str, Any]:
    """What the server holds for one collection, in the manifest's terms."""
    docs = client[db].get_collection(coll, codec_options=RAW).find({})
    digest = hashlib.sha256(b"".join(sorted(hashlib.sha256(d.raw).digest() for d in docs))).hexdigest()
    return {"documents": client[db][coll].count_documents({}),
            "indexes": index_view(dict(i) for i in client[db][coll].list_indexes()),
            "raw_bson_digest": digest}


def collection_options(client: MongoClient[dict[str, Any]], db: str, coll: str) -> dict[str, Any]:
    (info,) = client[db].list_collections(filter={"name": coll})
    return dict(info.get("options") or {})


@pytest.fixture
def suffix(mongo_client: MongoClient[dict[str, Any]]) -> Iterator[str]:
    """A unique suffix for target databases; every database ending in it is dropped afterwards."""
    value = uuid.uuid4().hex[:10]
    yield value
    for name in mongo_client.list_database_names():
        if name.endswith(value):
            mongo_client.drop_database(name)


def renames(suffix: str) -> tuple[list[str], list[str]]:
    return [f"{db}.*" for db in GOLDEN_DBS], [f"{db}_{suffix}.*" for db in GOLDEN_DBS]


def test_golden_archive_restores_under_renamed_databases_reproducing_the_manifest(
        golden_archive_gz: Path, golden_manifest: Path, mongo_client: MongoClient[dict[str, Any]],
        suffix: str) -> None:
    ns_from, ns_to = renames(suffix)
    with golden_archive_gz.open("rb") as f:
        summary = restore_archive(f, mongo_client, ns_from=ns_from, ns_to=ns_to)

    expected = manifest_view(golden_manifest)
    assert {ns: r.documents for ns, r in summary.namespaces.items()} == \
        {ns: v["documents"] for ns, v in expected.items()}
    assert summary.failed == 0 and all(r.crc_ok for r in summary.namespaces.values())
    for ns, view in expected.items():
        db, coll = ns.split(".", 1)
        assert summary.namespaces[ns].target == f"{db}_{suffix}.{coll}"
        assert server_view(mongo_client, f"{db}_{suffix}", coll) == view, ns
    assert collection_options(mongo_client, f"crm_{suffix}", "contacts") == {
        "validator": {"$jsonSchema": {"bsonType": "object", "required": ["name"]}}}


@pytest.fixture(scope="module")
def source(mongo_client: MongoClient[dict[str, Any]]) -> Iterator[Source]:
    loaded = load_source(mongo_client)
    yield loaded
    drop_source(mongo_client, loaded)


def test_dump_then_restore_into_other_databases_keeps_every_document_index_and_option(
        source: Source, mongo_uri: str, mongo_client: MongoClient[dict[str, Any]], suffix: str) -> None:
    sink = BytesSink()
    info = NativeEngine(mongo_uri, include=source.include).dump(sink, threading.Event())
    ns_from = [f"{db}.*" for db in source.dbs]
    ns_to = [f"{db}_{suffix}.*" for db in source.dbs]
    summary = restore_archive(io.BytesIO(sink.buffer.getvalue()), mongo_uri, ns_from=ns_from, ns_to=ns_to)

    assert {ns: r.documents for ns, r in summary.namespaces.items() if not r.view} == info.namespaces \
        == source.counts
    shop = source.dbs[0]
    views = list(mongo_client[f"{shop}_{suffix}"].list_collections(filter={"name": "paid_orders"}))
    assert [(v["type"], v["options"]) for v in views] == [
        ("view", {"viewOn": "orders", "pipeline": [{"$match": {"status": "paid"}}]})]
    for ns in source.counts:
        db, coll = ns.split(".", 1)
        copy = f"{db}_{suffix}"
        assert server_digests(mongo_client, f"{copy}.{coll}") == server_digests(mongo_client, ns), ns
        assert index_view(dict(i) for i in mongo_client[copy][coll].list_indexes()) == \
            index_view(dict(i) for i in mongo_client[db][coll].list_indexes()), ns
        assert collection_options(mongo_client, copy, coll) == collection_options(mongo_client, db, coll), ns


def test_corrupted_archive_raises_archive_error_after_reporting_what_went_in(
        golden_archive: Path, mongo_client: MongoClient[dict[str, Any]], suffix: str) -> None:
    data = bytearray(golden_archive.read_bytes())
    prelude_end = data.index(TERMINATOR) + 4
    first_doc = prelude_end + int.from_bytes(data[prelude_end:prelude_end + 4], "little")
    data[first_doc + 20] ^= 0x01  # inside the first document of shop.users
    with pytest.raises(RestoreArchiveError, match=r"CRC mismatch for namespace shop\.users") as caught:
        restore_archive(io.BytesIO(bytes(data)), mongo_client, ns_include=["shop.users"],
                        ns_from=["shop.*"], ns_to=[f"shop_{suffix}.*"])
    # The flipped byte may also make that one document unacceptable to the server; the rest went in.
    users = caught.value.summary.namespaces["shop.users"]
    assert users.documents + users.failed == 2000 and users.documents >= 1999
    assert f"restored so far: shop_{suffix}.users={users.documents}" in str(caught.value)
    assert users.crc_ok is False
    assert isinstance(caught.value, ArchiveError)


def test_truncated_archive_raises_archive_error(golden_archive: Path,
                                                mongo_client: MongoClient[dict[str, Any]], suffix: str) -> None:
    data = golden_archive.read_bytes()
    with pytest.raises(ArchiveError, match="truncated"):
        restore_archive(io.BytesIO(data[:300_000]), mongo_client, ns_from=renames(suffix)[0],
                        ns_to=renames(suffix)[1])


def test_ns_include_restores_only_matching_namespaces(golden_archive: Path,
                                                      mongo_client: MongoClient[dict[str, Any]],
                                                      suffix: str) -> None:
    with golden_archive.open("rb") as f:
        summary = restore_archive(f, mongo_client, ns_include=["shop.s*"], ns_from=["shop.*"],
                                  ns_to=[f"shop_{suffix}.*"])
    assert {ns: r.documents for ns, r in summary.namespaces.items()} == {"shop.sessions": 500}
    assert sorted(summary.skipped) == ["analytics.events", "crm.contacts", "shop.orders", "shop.users"]
    assert mongo_client[f"shop_{suffix}"].list_collection_names() == ["sessions"]


def test_dry_run_counts_everything_and_writes_nothing(golden_archive_gz: Path, mongo_uri: str,
                                                      mongo_client: MongoClient[dict[str, Any]],
                                                      suffix: str) -> None:
    ns_from, ns_to = renames(suffix)
    with golden_archive_gz.open("rb") as f:
        summary = restore_archive(f, mongo_uri, ns_from=ns_from, ns_to=ns_to, dry_run=True)
    assert summary.dry_run and summary.documents == 10800
    assert all(r.crc_ok for r in summary.namespaces.values())
    assert not [n for n in mongo_client.list_database_names() if n.endswith(suffix)]


def test_restoring_twice_counts_duplicates_unless_drop_replaces_the_collections(
        golden_archive: Path, mongo_client: MongoClient[dict[str, Any]], suffix: str) -> None:
    def restore(drop: bool) -> Any:
        with golden_archive.open("rb") as f:
            return restore_archive(f, mongo_client, ns_include=["crm.*"], ns_from=["crm.*"],
                                   ns_to=[f"crm_{suffix}.*"], drop=drop)

    assert restore(drop=False).namespaces["crm.contacts"].documents == 1000
    again = restore(drop=False).namespaces["crm.contacts"]
    assert (again.documents, again.failed) == (0, 1000)
    assert again.errors and again.errors[0].startswith("code 11000")
    replaced = restore(drop=True).namespaces["crm.contacts"]
    assert (replaced.documents, replaced.failed) == (1000, 0)
    assert mongo_client[f"crm_{suffix}"].contacts.count_documents({}) == 1000


def test_mismatched_ns_from_and_ns_to_is_a_usage_error(golden_archive: Path) -> None:
    with pytest.raises(UsageError, match="pair up"):
        restore_archive(io.BytesIO(golden_archive.read_bytes()), "mongodb://127.0.0.1:1/",
                        ns_from=["a.*", "b.*"], ns_to=["c.*"])


def test_unreachable_target_raises_source_unavailable_without_the_password(golden_archive: Path) -> None:
    port = servers.free_port()
    with pytest.raises(SourceUnavailable) as caught:
        restore_archive(io.BytesIO(golden_archive.read_bytes()), f"mongodb://u:s3cret@127.0.0.1:{port}/",
                        connect_timeout_s=0.5)
    assert f"127.0.0.1:{port}" in str(caught.value) and "s3cret" not in str(caught.value)


def test_cancel_set_interrupts_the_restore(golden_archive: Path, mongo_client: MongoClient[dict[str, Any]],
                                           suffix: str) -> None:
    cancel = threading.Event()
    cancel.set()
    ns_from, ns_to = renames(suffix)
    with pytest.raises(Interrupted):
        restore_archive(io.BytesIO(golden_archive.read_bytes()), mongo_client, ns_from=ns_from,
                        ns_to=ns_to, cancel=cancel)


def test_cancel_set_mid_archive_interrupts_a_dry_run_between_batches(golden_archive: Path) -> None:
    cancel = CancelAfter(calls=3)
    with pytest.raises(Interrupted):
        restore_archive(io.BytesIO(golden_archive.read_bytes()), "mongodb://unused/", dry_run=True,
                        batch_size=100, cancel=cancel)
    assert cancel.calls <= 0


def test_native_renames_understand_both_mongorestore_pattern_forms() -> None:
    stars = NamespaceMap.build(ns_from=["shop.*"], ns_to=["shop_copy.*"])
    assert stars.target("shop.users") == ("shop_copy", "users")
    variables = NamespaceMap.build(ns_from=["$db$.$coll$"], ns_to=["$db$_restored.$coll$"])
    assert variables.target("crm.contacts") == ("crm_restored", "contacts")
    assert stars.target("crm.contacts") == ("crm", "contacts")  # no rule matches: unchanged


def test_a_variable_used_twice_where_it_matches_is_a_usage_error_not_a_crash() -> None:
    with pytest.raises(UsageError, match=r"variable \$x\$ is used more than once"):
        NamespaceMap.build(ns_from=["$x$.$x$"], ns_to=["$x$.copy"])
    twice_in_target = NamespaceMap.build(ns_from=["$db$.$coll$"], ns_to=["$db$.$coll$_$db$"])
    assert twice_in_target.target("shop.users") == ("shop", "users_shop")
