"""list / verify / prune / restore against real storage (Azurite and a local directory) and a real
wire-protocol server (SecantusDB), with archives made by the real NativeEngine."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import random
import threading
import tracemalloc
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from azure.storage.blob import BlobServiceClient
from bson import encode
from pymongo import MongoClient

from backup_exporter.archive import (
    ArchiveHeader,
    ArchiveWriter,
    CollectionMeta,
    Document,
    GzipStreamWriter,
    iter_archive,
)
from backup_exporter.core import naming
from backup_exporter.core.argv import mongorestore_argv
from backup_exporter.core.argv import tool_config as mongorestore_config
from backup_exporter.core.errors import ArchiveError, BackupError, ExitCode, Interrupted, StorageError, UsageError
from backup_exporter.core.retention import Candidate, RetentionPolicy, decide
from backup_exporter.engines.native import NativeEngine
from backup_exporter.mongo.namespaces import target_namespace
from backup_exporter.operations.listing import list_backups
from backup_exporter.operations.prune import prune
from backup_exporter.operations.restore import restore, restore_latest_check
from backup_exporter.operations.verify import verify_backup
from backup_exporter.repository import backups
from backup_exporter.restore.native import RestoreFailed
from backup_exporter.storage.azure import AzureStorage
from backup_exporter.storage.base import ObjectInfo, Storage
from backup_exporter.storage.local import LocalStorage
from backup_exporter.storage.memory import MemoryStorage
from tests import dataset, servers

PREFIX = "prod"
PLAN = "orders"
NOW = datetime(2026, 11, 27, 13, 0, 0, tzinfo=UTC)


# ------------------------------------------------------------------------------------------ helpers


@dataclass
class Dump:
    """A real archive of the source databases, as the NativeEngine produced it."""

    prefix: str  # the source databases are <prefix>_shop, <prefix>_crm, <prefix>_analytics
    data: bytes  # gzip archive
    counts: dict[str, int]  # namespace -> documents in the source


class BytesSink:
    def __init__(self) -> None:
        self.buffer = io.BytesIO()

    def write(self, data: bytes) -> None:
        self.buffer.write(data)


def metadata_for(data: bytes, **extra: str) -> dict[str, str]:
    return {"sha256": hashlib.sha256(data).hexdigest(), "size": str(len(data)), "engine": "native",
            "plan": PLAN, **extra}


def store(storage: Storage, name: str, data: bytes, metadata: dict[str, str] | None = None) -> str:
    """Upload data as a committed backup in several writes, like the runner does."""
    upload = storage.start_upload(name)
    for start in range(0, len(data), 100_000):
        upload.write(data[start:start + 100_000])
    upload.commit(metadata_for(data) if metadata is None else metadata)
    return name


def name_at(moment: datetime, prefix: str = PREFIX, plan: str = PLAN) -> str:
    return naming.backup_name(prefix, plan, moment)


def flip_byte(data: bytes, offset: int) -> bytes:
    return data[:offset] + bytes([data[offset] ^ 0x01]) + data[offset + 1:]


@pytest.fixture(scope="module")
def dump(mongo_client: MongoClient[dict[str, Any]], mongo_uri: str) -> Iterator[Dump]:
    prefix = f"lc{uuid.uuid4().hex[:8]}"
    counts = dataset.load(mongo_client, prefix, per_collection=40)
    sink = BytesSink()
    info = NativeEngine(mongo_uri, include=[f"{prefix}_*.*"]).dump(sink, threading.Event())
    assert info.namespaces == counts
    yield Dump(prefix, sink.buffer.getvalue(), counts)
    dataset.drop(mongo_client, prefix)


@pytest.fixture
def target(mongo_client: MongoClient[dict[str, Any]]) -> Iterator[str]:
    """A unique prefix for target databases; they are dropped afterwards."""
    prefix = f"rt{uuid.uuid4().hex[:8]}"
    yield prefix
    dataset.drop(mongo_client, prefix)


def renamed(dump: Dump, target: str) -> dict[str, list[str]]:
    return {"ns_from": [f"{dump.prefix}_*"], "ns_to": [f"{target}_*"]}


def retarget(ns: str, dump: Dump, target: str) -> str:
    return target + ns[len(dump.prefix):]


@pytest.fixture(params=["local", "azure"])
def storage_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def storage(storage_kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Storage]:
    """The same tests run against a local directory and a fresh Azurite container (and, for tests of
    retention logic rather than storage, in memory)."""
    if storage_kind == "local":
        yield LocalStorage(tmp_path)
        return
    if storage_kind == "memory":
        yield MemoryStorage()
        return
    container = request.getfixturevalue("container")
    connection_string = request.getfixturevalue("azure_connection_string")
    azure = AzureStorage(container, connection_string=connection_string, block_size=64 * 1024)
    yield azure
    azure.close()


def overwrite_stored_bytes(storage: Storage, name: str, data: bytes, tmp_path: Path,
                           connection_string: str | None) -> None:
    """Replace the stored object's bytes behind the storage's back, keeping its metadata (bit rot)."""
    if isinstance(storage, LocalStorage):
        (tmp_path / name).write_bytes(data)
        return
    assert isinstance(storage, AzureStorage) and connection_string
    with BlobServiceClient.from_connection_string(connection_string) as service:
        blob = service.get_blob_client(storage.container_name, name)
        metadata = blob.get_blob_properties().metadata
        blob.upload_blob(data, overwrite=True, metadata=metadata)


# --------------------------------------------------------------------------------- verify and restore


def test_a_stored_backup_verifies_with_its_per_namespace_document_counts(
        storage: Storage, dump: Dump) -> None:
    name = store(storage, name_at(NOW), dump.data)
    report = verify_backup(storage, name)
    assert report.namespaces == dump.counts
    assert report.documents == sum(dump.counts.values())
    assert report.sha256 == hashlib.sha256(dump.data).hexdigest()
    assert report.size == len(dump.data)
    assert report.sha256_checked
    assert report.engine == "native"
    assert report.tool_version.startswith("backup_exporter-native")


def test_a_backup_restored_natively_into_other_databases_has_every_document_index_and_option(
        storage: Storage, dump: Dump, target: str, mongo_client: MongoClient[dict[str, Any]],
        mongo_uri: str) -> None:
    name = store(storage, name_at(NOW), dump.data)
    report = restore(storage, name, target_uri=mongo_uri, check=True, **renamed(dump, target))

    assert report.engine == "native"
    assert report.check_ok is True and report.check_mismatches == []
    assert {ns.source: ns.archive_documents for ns in report.namespaces} == dump.counts
    assert {ns.target: ns.target_documents for ns in report.namespaces} == \
        {retarget(ns, dump, target): n for ns, n in dump.counts.items()}
    assert report.sha256 == hashlib.sha256(dump.data).hexdigest()
    for source_ns in dump.counts:
        target_ns = retarget(source_ns, dump, target)
        assert dataset.digest(mongo_client, target_ns) == dataset.digest(mongo_client, source_ns), source_ns
        assert collection_view(mongo_client, target_ns) == collection_view(mongo_client, source_ns), source_ns


def collection_view(client: MongoClient[dict[str, Any]], ns: str) -> dict[str, Any]:
    """Indexes and options of a collection, without what names the namespace itself."""
    db, coll = ns.split(".", 1)
    indexes = sorted(({k: v for k, v in dict(i).items() if k != "ns"} for i in client[db][coll].list_indexes()),
                     key=lambda i: str(i["name"]))
    (info,) = client[db].list_collections(filter={"name": coll})
    return {"indexes": indexes, "options": dict(info.get("options") or {})}


def test_a_restore_with_ns_include_restores_only_the_matching_namespaces(
        dump: Dump, target: str, tmp_path: Path, mongo_client: MongoClient[dict[str, Any]],
        mongo_uri: str) -> None:
    storage = LocalStorage(tmp_path)
    name = store(storage, name_at(NOW), dump.data)
    report = restore(storage, name, target_uri=mongo_uri, ns_include=[f"{dump.prefix}_shop.*"], check=True,
                     **renamed(dump, target))
    shop = {ns: n for ns, n in dump.counts.items() if ns.startswith(f"{dump.prefix}_shop.")}
    assert {ns.source: ns.archive_documents for ns in report.namespaces} == shop
    assert sorted(report.skipped) == sorted(set(dump.counts) - set(shop))
    assert report.check_ok is True
    assert dataset.namespace_counts(mongo_client, target) == {retarget(ns, dump, target): n for ns, n in shop.items()}


def test_a_dry_run_restore_reads_the_whole_backup_and_writes_nothing(
        dump: Dump, target: str, tmp_path: Path, mongo_client: MongoClient[dict[str, Any]],
        mongo_uri: str) -> None:
    storage = LocalStorage(tmp_path)
    name = store(storage, name_at(NOW), dump.data)
    report = restore(storage, name, target_uri=mongo_uri, dry_run=True, check=True, **renamed(dump, target))
    assert report.dry_run and report.check_ok is None
    assert {ns.source: ns.archive_documents for ns in report.namespaces} == dump.counts
    assert report.size == len(dump.data)
    assert dataset.namespace_counts(mongo_client, target) == {}


def test_a_restore_drill_reports_a_collection_whose_count_differs_from_the_archive(
        dump: Dump, target: str, tmp_path: Path, mongo_client: MongoClient[dict[str, Any]],
        mongo_uri: str) -> None:
    storage = LocalStorage(tmp_path)
    name = store(storage, name_at(NOW), dump.data)
    # A document already in the target (no --drop) makes the restored collection hold one more.
    mongo_client[f"{target}_crm"].contacts.insert_one({"n": -1, "leftover": True})
    report = restore(storage, name, target_uri=mongo_uri, check=True, **renamed(dump, target))
    assert report.check_ok is False
    expected = dump.counts[f"{dump.prefix}_crm.contacts"]
    assert report.check_mismatches == [
        f"{target}_crm.contacts: {expected + 1} documents, the archive's {dump.prefix}_crm.contacts has "
        f"{expected}"]


def test_a_restore_with_drop_replaces_what_the_target_held(
        dump: Dump, target: str, tmp_path: Path, mongo_client: MongoClient[dict[str, Any]],
        mongo_uri: str) -> None:
    storage = LocalStorage(tmp_path)
    name = store(storage, name_at(NOW), dump.data)
    mongo_client[f"{target}_crm"].contacts.insert_one({"n": -1, "leftover": True})
    report = restore(storage, name, target_uri=mongo_uri, check=True, drop=True, **renamed(dump, target))
    assert report.check_ok is True
    assert mongo_client[f"{target}_crm"].contacts.count_documents({"leftover": True}) == 0


@pytest.mark.parametrize("where", [0.1, 0.5, 0.9, -1])
def test_a_single_flipped_byte_in_the_stored_blob_fails_verify(
        storage: Storage, dump: Dump, where: float, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    name = store(storage, name_at(NOW), dump.data)
    offset = len(dump.data) - 1 if where == -1 else int(len(dump.data) * where)
    overwrite_stored_bytes(storage, name, flip_byte(dump.data, offset), tmp_path, _connection(request))
    with pytest.raises(ArchiveError) as caught:
        verify_backup(storage, name)
    assert caught.value.exit_code == ExitCode.DATA
    message = str(caught.value)
    assert message.startswith(f"backup {name} failed verification: sha256 mismatch: metadata says "
                              f"{hashlib.sha256(dump.data).hexdigest()}")
    # The archive's own checks find it too (gzip stream, CRC or structure), after the checksum.
    assert message.count(";") >= 1


def _connection(request: pytest.FixtureRequest) -> str | None:
    if request.getfixturevalue("storage_kind") == "azure":
        return str(request.getfixturevalue("azure_connection_string"))
    return None


@pytest.mark.parametrize("where", [0.5, -1])
def test_a_single_flipped_byte_in_the_stored_blob_fails_restore(
        storage: Storage, dump: Dump, target: str, where: float, tmp_path: Path, mongo_uri: str,
        request: pytest.FixtureRequest) -> None:
    name = store(storage, name_at(NOW), dump.data)
    offset = len(dump.data) - 1 if where == -1 else int(len(dump.data) * where)
    overwrite_stored_bytes(storage, name, flip_byte(dump.data, offset), tmp_path, _connection(request))
    with pytest.raises(ArchiveError, match=f"backup {name}"):
        restore(storage, name, target_uri=mongo_uri, **renamed(dump, target))


def test_a_document_changed_inside_the_archive_fails_verify_naming_its_namespace_crc(
        dump: Dump, tmp_path: Path) -> None:
    raw = gzip.decompress(dump.data)
    needle = b"user7@example.org"
    position = raw.index(needle)
    owner = next(e.namespace for e in iter_archive(io.BytesIO(raw))
                 if isinstance(e, Document) and e.offset <= position < e.offset + len(e.raw))
    tampered = gzip.compress(raw[:position] + b"user7@exbmple.org" + raw[position + len(needle):])
    storage = LocalStorage(tmp_path)
    # The metadata matches the tampered bytes: only the archive's own CRC can tell.
    name = store(storage, name_at(NOW), tampered)
    with pytest.raises(ArchiveError, match=f"CRC mismatch for namespace {owner}") as caught:
        verify_backup(storage, name)
    assert "sha256" not in str(caught.value)


def test_a_truncated_backup_fails_verify_saying_it_is_truncated(dump: Dump, tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    name = store(storage, name_at(NOW), dump.data[: len(dump.data) // 2])
    with pytest.raises(ArchiveError, match="truncated"):
        verify_backup(storage, name)


def test_a_backup_whose_size_differs_from_its_metadata_fails_verify(dump: Dump, tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    name = store(storage, name_at(NOW), dump.data, {**metadata_for(dump.data), "size": str(len(dump.data) + 1)})
    with pytest.raises(ArchiveError, match=f"size mismatch: metadata says {len(dump.data) + 1} bytes, "
                                           f"read {len(dump.data)}"):
        verify_backup(storage, name)


def test_a_backup_without_a_checksum_in_its_metadata_verifies_its_structure_only(
        dump: Dump, tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    name = store(storage, name_at(NOW), dump.data, {"engine": "native"})
    report = verify_backup(storage, name)
    assert not report.sha256_checked
    assert report.namespaces == dump.counts


def test_a_restore_whose_checksum_mismatches_raises_after_the_data_went_in(
        dump: Dump, target: str, tmp_path: Path, mongo_client: MongoClient[dict[str, Any]],
        mongo_uri: str) -> None:
    storage = LocalStorage(tmp_path)
    name = store(storage, name_at(NOW), dump.data, {**metadata_for(dump.data), "sha256": "0" * 64})
    with pytest.raises(ArchiveError, match=r"restored but does not match its metadata.*sha256 mismatch"):
        restore(storage, name, target_uri=mongo_uri, **renamed(dump, target))
    assert dataset.namespace_counts(mongo_client, target) == \
        {retarget(ns, dump, target): n for ns, n in dump.counts.items()}


def test_verifying_or_restoring_a_missing_backup_raises_storage_error(tmp_path: Path, mongo_uri: str) -> None:
    storage = LocalStorage(tmp_path)
    with pytest.raises(StorageError):
        verify_backup(storage, name_at(NOW))
    with pytest.raises(StorageError):
        restore(storage, name_at(NOW), target_uri=mongo_uri)


def test_restore_refuses_unpaired_ns_from_and_ns_to(dump: Dump, tmp_path: Path, mongo_uri: str) -> None:
    storage = LocalStorage(tmp_path)
    name = store(storage, name_at(NOW), dump.data)
    with pytest.raises(UsageError, match="pair up"):
        restore(storage, name, target_uri=mongo_uri, ns_from=["a.*"], ns_to=[])


def test_a_missing_mongorestore_binary_fails_clearly_before_anything_is_written(
        dump: Dump, target: str, tmp_path: Path, mongo_client: MongoClient[dict[str, Any]],
        mongo_uri: str) -> None:
    storage = LocalStorage(tmp_path)
    name = store(storage, name_at(NOW), dump.data)
    with pytest.raises(RestoreFailed, match="cannot start mongorestore") as caught:
        restore(storage, name, target_uri=mongo_uri, mongorestore=str(tmp_path / "no-such-mongorestore"),
                **renamed(dump, target))
    assert caught.value.exit_code == ExitCode.CONFIG
    assert dataset.namespace_counts(mongo_client, target) == {}


def test_verify_streams_a_large_backup_in_bounded_memory(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    name = name_at(NOW)
    upload = storage.start_upload(name)
    digest = hashlib.sha256()
    size = 0

    class Tee:
        def write(self, data: bytes) -> None:
            nonlocal size
            digest.update(data)
            size += len(data)
            upload.write(data)

    # ~32 MiB of incompressible documents, written as a stream (never held whole by the test either).
    rng = random.Random(3)
    gz = GzipStreamWriter(Tee(), level=1)
    writer = ArchiveWriter(gz)
    writer.write_prelude(ArchiveHeader(tool_version="test"), [CollectionMeta.build("big", "blobs")])
    documents = 256
    writer.write_documents("big", "blobs", (encode({"i": i, "pad": rng.randbytes(128 * 1024)})
                                            for i in range(documents)))
    writer.end_namespace("big", "blobs")
    writer.close()
    gz.close()
    upload.commit({"sha256": digest.hexdigest(), "size": str(size)})
    assert size > 32 << 20

    tracemalloc.start()
    try:
        report = verify_backup(storage, name)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert report.namespaces == {"big.blobs": documents}
    assert peak < 8 << 20, f"peak {peak} bytes while verifying {size} bytes"


# ------------------------------------------------------------------------------------ list and prune


def generated_times(count: int, seed: int = 11) -> list[datetime]:
    """`count` distinct whole-second times over the year before NOW, irregularly spaced."""
    rng = random.Random(seed)
    times: set[datetime] = set()
    while len(times) < count:
        times.add(NOW - timedelta(seconds=rng.randint(60, 365 * 86400)))
    return sorted(times)


# Retention decisions are logic, not storage: they run in memory (every backend lists alike, as
# test_storage_contract.py shows; Azure and local prunes are tested below and in test_lifecycle_cli.py).
LOGIC_ONLY = ["memory"]
MANUAL = "prod/orders/manual-copy.archive.gz"  # an archive in the plan's folder that we did not name
FOREIGN = [
    "prod/orders-eu/2026-11-01T00-00-00Z.archive.gz",  # another plan whose name starts the same
    "staging/orders/2026-11-01T00-00-00Z.archive.gz",  # another prefix
    "orders/2026-11-01T00-00-00Z.archive.gz",  # the same plan without a prefix
    "prod/orders/nested/2026-11-01T00-00-00Z.archive.gz",  # deeper than the plan's folder
    MANUAL,
    "prod/orders/2026-11-01T00-00-00Z.archive.gz.bak",  # not an archive
]


def fill(storage: Storage, times: Sequence[datetime]) -> list[str]:
    """Store a tiny placeholder backup per time plus the foreign objects; return the plan's names."""
    names = []
    for i, moment in enumerate(times):
        data = f"placeholder {i}".encode()
        names.append(store(storage, name_at(moment), data, metadata_for(data, engine="mongodump")))
    for foreign in FOREIGN:
        store(storage, foreign, b"foreign")
    return names


def stored_names(storage: Storage) -> set[str]:
    """Every archive-like object in the storage, whatever its folder (listing each folder we used)."""
    folders = {"prod/orders", "prod/orders-eu", "staging/orders", "orders", "prod/orders/nested"}
    return {b.name for folder in folders for b in backups.archives(storage, folder)}


@pytest.fixture
def history(storage: Storage) -> list[str]:
    return fill(storage, generated_times(200))


POLICIES = [
    RetentionPolicy(keep_last=5),
    RetentionPolicy(keep_daily=7, keep_weekly=4, keep_monthly=6),
    RetentionPolicy(keep_within=timedelta(days=30), keep_monthly=3),
]


@pytest.mark.parametrize("storage_kind", LOGIC_ONLY)
@pytest.mark.parametrize("policy", POLICIES, ids=lambda p: p.describe())
def test_prune_deletes_exactly_what_decide_says_and_nothing_outside_the_plan(
        storage: Storage, history: list[str], policy: RetentionPolicy) -> None:
    before = stored_names(storage)
    decisions = decide([Candidate(n, naming.time_of(n) or NOW) for n in history], policy, NOW)
    expected_deleted = {d.name for d in decisions if not d.keep}
    assert 100 < len(expected_deleted) < 200

    dry = prune(storage, PREFIX, PLAN, policy, NOW, dry_run=True)
    assert {b.name for b in dry.deleted} == expected_deleted
    assert stored_names(storage) == before

    report = prune(storage, PREFIX, PLAN, policy, NOW, dry_run=False)
    assert {b.name for b in report.deleted} == expected_deleted
    assert {b.name for b in report.kept} == set(history) - expected_deleted
    assert stored_names(storage) == before - expected_deleted
    for foreign in FOREIGN:
        if foreign.endswith(".archive.gz"):
            assert foreign in stored_names(storage)
    assert all(b.reasons == ["outside every rule"] for b in report.deleted)
    assert all(b.reasons and b.reasons != ["outside every rule"] for b in report.kept)


@pytest.mark.parametrize("storage_kind", LOGIC_ONLY)
def test_prune_with_keep_last_zero_keeps_only_the_newest_backup(storage: Storage, history: list[str]) -> None:
    report = prune(storage, PREFIX, PLAN, RetentionPolicy(keep_last=0), NOW)
    newest = max(history, key=lambda n: naming.time_of(n) or NOW)
    assert [b.name for b in report.kept] == [newest]
    assert report.kept[0].reasons == ["newest backup is always kept"]
    assert {b.name for b in backups.archives(storage, f"{PREFIX}/{PLAN}")} == {newest, MANUAL}
    # Foreign archives in the same folder survive: they are not ours to judge.
    assert storage.stat(MANUAL).size == len(b"foreign")


@pytest.mark.parametrize("storage_kind", LOGIC_ONLY)
def test_prune_with_an_empty_policy_deletes_nothing(storage: Storage, history: list[str]) -> None:
    before = stored_names(storage)
    report = prune(storage, PREFIX, PLAN, RetentionPolicy(), NOW)
    assert report.deleted == [] and len(report.kept) == len(history)
    assert stored_names(storage) == before


@pytest.mark.parametrize("storage_kind", LOGIC_ONLY)
def test_list_backups_is_newest_first_with_size_checksum_engine_and_verdict(storage: Storage) -> None:
    times = generated_times(12)
    fill(storage, times)
    listed = list_backups(storage, PREFIX, PLAN, RetentionPolicy(keep_last=2), NOW)
    assert [b.time for b in listed] == sorted(times, reverse=True)
    assert [b.keep for b in listed] == [True, True] + [False] * 10
    assert listed[0].reasons == ["keep_last 1/2"]
    index = times.index(listed[0].time)
    data = f"placeholder {index}".encode()
    assert (listed[0].size, listed[0].sha256, listed[0].engine) == \
        (len(data), hashlib.sha256(data).hexdigest(), "mongodump")


def test_list_backups_works_without_a_prefix(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    store(storage, name_at(NOW - timedelta(hours=1), prefix=""), b"a")
    store(storage, name_at(NOW - timedelta(hours=2)), b"b")  # under prod/: another place
    listed = list_backups(storage, "", PLAN, RetentionPolicy(), NOW)
    assert [b.name for b in listed] == ["orders/2026-11-27T12-00-00Z.archive.gz"]


class ListingFails:
    """A storage whose listing comes from an unreachable Azure endpoint while every other call (deletes
    included) goes to a working one, recording the deletions asked for."""

    def __init__(self, working: Storage, broken: Storage) -> None:
        self.working = working
        self.broken = broken
        self.deleted: list[str] = []

    def list_objects(self, prefix: str) -> list[ObjectInfo]:
        return self.broken.list_objects(prefix)

    def delete(self, names: Sequence[str]) -> None:
        self.deleted += names
        self.working.delete(names)

    def __getattr__(self, attribute: str) -> Any:
        return getattr(self.working, attribute)


def test_prune_deletes_nothing_when_the_listing_fails(container: str, azure_connection_string: str) -> None:
    working = AzureStorage(container, connection_string=azure_connection_string)
    unreachable = AzureStorage(container, connection_string=servers.azurite_connection_string(servers.free_port()))
    try:
        history = fill(working, generated_times(20))
        storage = ListingFails(working, unreachable)
        with pytest.raises(StorageError, match="unreachable"):
            prune(storage, PREFIX, PLAN, RetentionPolicy(keep_last=1), NOW)  # type: ignore[arg-type]
        assert storage.deleted == []
        assert {b.name for b in backups.archives(working, f"{PREFIX}/{PLAN}")} == {*history, MANUAL}
    finally:
        working.close()
        unreachable.close()


def test_prune_of_a_deleted_container_raises_storage_error(container: str, azure_connection_string: str) -> None:
    storage = AzureStorage(container, connection_string=azure_connection_string)
    fill(storage, generated_times(3))
    with BlobServiceClient.from_connection_string(azure_connection_string) as service:
        service.delete_container(container)
    try:
        with pytest.raises(StorageError, match="does not exist"):
            prune(storage, PREFIX, PLAN, RetentionPolicy(keep_last=1), NOW)
    finally:
        storage.close()
        with BlobServiceClient.from_connection_string(azure_connection_string) as service, \
                contextlib.suppress(Exception):
            service.create_container(container)  # the fixture deletes it again


# -------------------------------------------------------------------------------------- mongorestore


SECRET_URI = "mongodb://backup-user:s3cr3t%40pw@db-0.example.net:27017,db-1.example.net/?authSource=admin"


def test_mongorestore_argv_reads_a_gzip_archive_from_stdin_with_the_uri_in_a_config_pipe() -> None:
    argv = mongorestore_argv("/usr/bin/mongorestore", ns_include=["shop.*", "crm.contacts"],
                             ns_from=["shop.*", "crm.$coll$"], ns_to=["shop_copy.*", "crm_copy.$coll$"],
                             drop=True, dry_run=True)
    assert argv == ("/usr/bin/mongorestore", "--archive", "--gzip", "--config={config}",
                    "--nsInclude=shop.*", "--nsInclude=crm.contacts",
                    "--nsFrom=shop.*", "--nsTo=shop_copy.*", "--nsFrom=crm.$coll$", "--nsTo=crm_copy.$coll$",
                    "--drop", "--dryRun")


def test_mongorestore_argv_without_options_has_only_the_archive_flags() -> None:
    assert mongorestore_argv("mongorestore") == ("mongorestore", "--archive", "--gzip", "--config={config}")
    assert mongorestore_argv("mongorestore", config_fd_placeholder="{cfg}")[-1] == "--config={cfg}"


def test_no_uri_host_or_password_ever_appears_in_the_mongorestore_argv() -> None:
    argv = " ".join(mongorestore_argv("mongorestore", ns_include=["a.*"], drop=True))
    for secret in ("mongodb://", "backup-user", "s3cr3t", "db-0.example.net", "27017"):
        assert secret not in argv


def test_the_mongorestore_config_holds_the_uri_as_one_quoted_yaml_scalar() -> None:
    import yaml

    for uri in (SECRET_URI, 'mongodb://u:p"a\\ss#x@h/?a=b: c'):
        content = mongorestore_config(uri)
        assert content.startswith(b'uri: "') and content.endswith(b'"\n')
        assert yaml.safe_load(content) == {"uri": uri}


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"ns_from": ["a.*"], "ns_to": []}, "pair up"),
    ({"ns_include": ["weird{config}.*"]}, "contains '{config}'"),
])
def test_mongorestore_argv_refuses_options_it_cannot_express(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        mongorestore_argv("mongorestore", **kwargs)


@pytest.mark.parametrize(("ns", "ns_from", "ns_to", "expected"), [
    ("shop.users", ["shop.*"], ["copy.*"], "copy.users"),
    ("shop.users", ["*.users"], ["*.people"], "shop.people"),
    ("shop.users", ["$db$.$coll$"], ["$coll$.$db$"], "users.shop"),
    ("data.acme_orders", ["data.$prefix$_$customer$"], ["$customer$.$prefix$"], "orders.acme"),
    ("crm.contacts", ["shop.*"], ["copy.*"], "crm.contacts"),
    ("shop.users", ["crm.*", "shop.*"], ["x.*", "y.*"], "y.users"),
])
def test_target_namespace_follows_mongorestore_renames(ns: str, ns_from: list[str], ns_to: list[str],
                                                       expected: str) -> None:
    assert target_namespace(ns, ns_from, ns_to) == expected


def test_verify_and_restore_stop_with_interrupted_when_cancelled(
        dump: Dump, target: str, tmp_path: Path, mongo_client: MongoClient[dict[str, Any]],
        mongo_uri: str) -> None:
    storage = LocalStorage(tmp_path)
    name = store(storage, name_at(NOW), dump.data)
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Interrupted):
        verify_backup(storage, name, cancel=cancel)
    with pytest.raises(Interrupted):
        restore(storage, name, target_uri=mongo_uri, cancel=cancel, **renamed(dump, target))
    assert dataset.namespace_counts(mongo_client, target) == {}


# ------------------------------------------------------------------------------------- restore drill


@pytest.fixture(scope="module")
def scratch(server_logs: Path) -> Iterator[str]:
    """A second, empty server: a restore drill's scratch MongoDB (it restores under the same names)."""
    server = servers.start_secantus(server_logs)
    yield f"mongodb://{server.address}/?directConnection=true"
    server.stop()


def test_a_restore_drill_restores_the_newest_backup_into_the_scratch_server_and_repeats_cleanly(
        dump: Dump, tmp_path: Path, scratch: str) -> None:
    storage = LocalStorage(tmp_path)
    store(storage, name_at(NOW - timedelta(days=1)), b"an older backup that is not even an archive")
    newest = store(storage, name_at(NOW), dump.data)
    for _ in range(2):
        report = restore_latest_check(storage, PREFIX, PLAN, scratch)
        assert report.name == newest
        assert report.check_ok is True
        assert report.summary() == (f"restored {newest} with native: {len(dump.counts)} namespaces, "
                                    f"{sum(dump.counts.values())} documents; document counts match")
    with MongoClient(scratch) as client:
        assert dataset.namespace_counts(client, dump.prefix) == dump.counts


def test_a_restore_drill_of_a_plan_without_backups_fails_with_a_data_error(tmp_path: Path, scratch: str) -> None:
    with pytest.raises(BackupError, match="plan orders has no backup in prod/orders/") as caught:
        restore_latest_check(LocalStorage(tmp_path), PREFIX, PLAN, scratch)
    assert caught.value.exit_code == ExitCode.DATA


def test_a_restore_drill_of_a_corrupt_newest_backup_fails(dump: Dump, tmp_path: Path, scratch: str) -> None:
    storage = LocalStorage(tmp_path)
    name = store(storage, name_at(NOW), dump.data)
    (tmp_path / name).write_bytes(flip_byte(dump.data, len(dump.data) - 1))
    with pytest.raises(ArchiveError, match=f"backup {name} is corrupt"):
        restore_latest_check(storage, PREFIX, PLAN, scratch)
