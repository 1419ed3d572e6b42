"""The storage contract, run against every backend: local directory, real Azurite, and memory.

Each test gets `storage` (a fresh, empty store of one backend) and `visible_objects` (every object a user
of that backend would see, looked at outside our API, lock objects excepted: they persist by design).
"""

from __future__ import annotations

import gc
import hashlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from azure.storage.blob import BlobLeaseClient, BlobServiceClient

from backup_exporter.core.errors import ExitCode, LockHeld, StorageError
from backup_exporter.core.naming import ARCHIVE_SUFFIX
from backup_exporter.repository.backups import archives
from backup_exporter.storage.azure import AzureStorage
from backup_exporter.storage.base import ObjectInfo, Storage
from backup_exporter.storage.local import LocalStorage
from backup_exporter.storage.memory import MemoryStorage

PREFIX = "prod/orders"
LOCK = f"{PREFIX}/_lock"
STATUS = f"{PREFIX}/_status.json"
BACKENDS = ["local", "azure", "memory"]


def archive(stamp: str, prefix: str = PREFIX) -> str:
    return f"{prefix}/{stamp}{ARCHIVE_SUFFIX}"


def payload(size: int, seed: int = 0) -> bytes:
    """Deterministic, incompressible-looking bytes."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{seed}-{counter}".encode()).digest()
        counter += 1
    return bytes(out[:size])


def commit(storage: Storage, name: str, data: bytes, metadata: dict[str, str] | None = None,
           piece: int = 10_000, access_tier: str | None = None) -> None:
    upload = storage.start_upload(name)
    for start in range(0, len(data), piece):
        upload.write(data[start : start + piece])
    upload.commit(metadata if metadata is not None else {"size": str(len(data))}, access_tier=access_tier)


def read_all(storage: Storage, name: str) -> bytes:
    return b"".join(storage.read(name))


def names(objects: list[ObjectInfo]) -> list[str]:
    return [o.name for o in objects]


@dataclass
class Backend:
    storage: Storage
    visible_objects: Callable[[], list[str]]
    break_lock: Callable[[str], None] | None  # takes a held lock away from its holder; None: cannot happen


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    kind = request.param
    if kind == "local":
        root = tmp_path / "backups"
        root.mkdir()

        def files() -> list[str]:
            # Every file, hidden ones included, except the lock files that persist by design.
            return sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                          if p.is_file() and p.name != "_lock")

        local = LocalStorage(root)
        yield Backend(local, files, None)  # a flock is only ever released by its holder (or its death)
        local.close()
    elif kind == "azure":
        container: str = request.getfixturevalue("container")
        connection_string: str = request.getfixturevalue("azure_connection_string")
        # Small blocks so uploads span several blocks and a partial last one; quick renewals so a broken
        # lease is noticed within a second.
        azure = AzureStorage(container, connection_string=connection_string, block_size=64 * 1024,
                             lease_seconds=15, renew_seconds=0.3)
        service = BlobServiceClient.from_connection_string(connection_string)

        def blobs() -> list[str]:
            return sorted(b.name for b in service.get_container_client(container).list_blobs()
                          if not b.name.endswith("/_lock"))

        def break_lease(name: str) -> None:
            BlobLeaseClient(service.get_blob_client(container, name)).break_lease(lease_break_period=0)

        yield Backend(azure, blobs, break_lease)
        azure.close()
        service.close()
    else:
        memory = MemoryStorage()
        yield Backend(memory, lambda: [n for n in names(memory.list_objects("")) if not n.endswith("/_lock")],
                      memory.break_lock)


@pytest.fixture
def storage(backend: Backend) -> Storage:
    return backend.storage


# -- streamed uploads -----------------------------------------------------------------------------------


def test_a_committed_upload_lists_with_size_and_metadata_and_reads_back_identically(storage: Storage) -> None:
    data = payload(300_001)
    meta = {"sha256": hashlib.sha256(data).hexdigest(), "size": str(len(data)), "engine": "native",
            "plan": "orders"}
    upload = storage.start_upload(archive("2026-11-27T13-00-00Z"))
    for start in range(0, len(data), 7_000):
        upload.write(data[start : start + 7_000])
    upload.commit(meta)
    assert upload.bytes_uploaded == len(data)

    (info,) = storage.list_objects(PREFIX)
    assert info.name == archive("2026-11-27T13-00-00Z")
    assert info.size == len(data)
    assert info.metadata == meta
    assert info.last_modified.tzinfo is not None
    assert storage.stat(info.name) == info
    assert read_all(storage, info.name) == data
    assert all(len(c) <= 50_000 for c in storage.read(info.name, chunk_size=50_000))
    assert b"".join(storage.read(info.name, chunk_size=50_000)) == data


def test_an_empty_upload_can_still_be_committed(storage: Storage) -> None:
    upload = storage.start_upload(archive("2026-11-27T13-00-00Z"))
    upload.commit({"size": "0"})
    (info,) = storage.list_objects(PREFIX)
    assert info.size == 0
    assert read_all(storage, info.name) == b""


def test_an_aborted_upload_leaves_nothing_behind(backend: Backend) -> None:
    storage = backend.storage
    upload = storage.start_upload(archive("2026-11-27T13-00-00Z"))
    upload.write(payload(200_000))
    upload.abort()
    upload.abort()  # idempotent, never raises
    assert storage.list_objects(PREFIX) == []
    assert backend.visible_objects() == []
    with pytest.raises(StorageError):
        upload.write(b"more")


def test_an_upload_never_committed_shows_nothing(backend: Backend) -> None:
    storage = backend.storage
    upload = storage.start_upload(archive("2026-11-27T13-00-00Z"))
    upload.write(payload(200_000))
    assert storage.list_objects(PREFIX) == []  # nothing visible while it is being written
    with pytest.raises(StorageError):
        storage.stat(archive("2026-11-27T13-00-00Z"))
    del upload  # the process "dies" without commit or abort
    gc.collect()
    assert storage.list_objects(PREFIX) == []
    assert [name for name in backend.visible_objects() if name.endswith(ARCHIVE_SUFFIX)] == []


def test_a_committed_upload_refuses_further_writes(storage: Storage) -> None:
    upload = storage.start_upload(archive("2026-11-27T13-00-00Z"))
    upload.write(b"abc")
    upload.commit({})
    with pytest.raises(StorageError):
        upload.write(b"def")
    with pytest.raises(StorageError):
        upload.commit({})
    upload.abort()  # after commit: a no-op that keeps the backup
    assert [o.size for o in storage.list_objects(PREFIX)] == [3]


def test_a_commit_never_replaces_an_existing_backup_of_the_same_name(storage: Storage) -> None:
    # Two runs of a plan started within the same second get the same name: the second must fail, not
    # silently replace the first backup (or its metadata).
    name = archive("2026-11-27T13-00-00Z")
    first = payload(100_000, seed=1)
    first_meta = {"sha256": hashlib.sha256(first).hexdigest(), "size": str(len(first))}
    commit(storage, name, first, first_meta)
    second = payload(120_000, seed=2)
    upload = storage.start_upload(name)
    upload.write(second)
    with pytest.raises(StorageError, match="already exists") as excinfo:
        upload.commit({"sha256": hashlib.sha256(second).hexdigest(), "size": str(len(second))})
    assert excinfo.value.exit_code == ExitCode.STORAGE
    upload.abort()
    (info,) = storage.list_objects(PREFIX)
    assert info.metadata == first_meta
    assert info.size == len(first)
    assert read_all(storage, name) == first


def test_every_backend_accepts_an_access_tier_at_commit(storage: Storage) -> None:
    commit(storage, archive("2026-11-27T13-00-00Z"), b"cool", {"size": "4"}, access_tier="Cool")
    assert read_all(storage, archive("2026-11-27T13-00-00Z")) == b"cool"
    assert storage.stat(archive("2026-11-27T13-00-00Z")).metadata == {"size": "4"}


def test_a_lost_lock_fails_the_commit_and_nothing_becomes_visible(backend: Backend) -> None:
    if backend.break_lock is None:
        pytest.skip("a local flock cannot be taken from a living holder")
    storage = backend.storage
    name = archive("2026-11-27T13-00-00Z")
    with storage.lock(LOCK, "slow run"):
        upload = storage.start_upload(name)
        upload.write(payload(100_000))
        backend.break_lock(LOCK)
        deadline = time.monotonic() + 10
        with pytest.raises(StorageError, match="not committed") as excinfo:
            while time.monotonic() < deadline:  # Azure notices at its next renewal
                upload.write(payload(70_000))
                time.sleep(0.05)
            upload.commit({"size": "1"})
        assert excinfo.value.exit_code == ExitCode.STORAGE
        upload.abort()
    assert archives(storage, PREFIX) == []
    assert backend.visible_objects() == []


# -- listing ----------------------------------------------------------------------------------------------


def test_listing_returns_every_object_under_the_folder_at_any_depth_sorted_by_name(storage: Storage) -> None:
    commit(storage, archive("2026-11-27T13-00-00Z"), b"mine", {"size": "4"})
    commit(storage, f"{PREFIX}/notes.txt", b"foreign", {})
    commit(storage, archive("2026-11-27T13-00-00Z", f"{PREFIX}/deeper"), b"deeper", {})
    commit(storage, archive("2026-11-27T13-00-00Z", f"{PREFIX}-other"), b"sibling plan", {})
    commit(storage, archive("2026-11-27T13-00-00Z", "prod"), b"above", {})
    storage.put(STATUS, b"{}")
    expected = [archive("2026-11-27T13-00-00Z"), archive("2026-11-27T13-00-00Z", f"{PREFIX}/deeper"),
                f"{PREFIX}/_status.json", f"{PREFIX}/notes.txt"]
    assert names(storage.list_objects(PREFIX)) == sorted(expected)
    assert names(storage.list_objects(f"{PREFIX}/")) == sorted(expected)
    assert names(storage.list_objects(f"/{PREFIX}/")) == sorted(expected)
    status = next(o for o in storage.list_objects(PREFIX) if o.name == STATUS)
    assert status.size == 2 and status.metadata == {}
    assert len(storage.list_objects("")) == 6
    assert storage.list_objects("nothing/here") == []


def test_the_repository_takes_only_archives_directly_in_the_folder_oldest_first(storage: Storage) -> None:
    commit(storage, archive("2026-11-27T14-00-00Z"), b"first")
    time.sleep(1.1)  # Azure's last-modified time has one-second resolution
    commit(storage, archive("2026-11-27T13-00-00Z"), b"second")
    commit(storage, f"{PREFIX}/notes.txt", b"foreign")
    commit(storage, archive("2026-11-27T13-00-00Z", f"{PREFIX}/deeper"), b"deeper")
    commit(storage, archive("2026-11-27T13-00-00Z", f"{PREFIX}-other"), b"sibling plan")
    storage.put(STATUS, b"{}")
    with storage.lock(LOCK, "tester"):
        found = names(archives(storage, PREFIX))
    assert found == [archive("2026-11-27T14-00-00Z"), archive("2026-11-27T13-00-00Z")]
    assert archives(storage, "nothing/here") == []


# -- reading, small objects, deleting -------------------------------------------------------------------


def test_reading_a_missing_object_raises_storage_error(storage: Storage) -> None:
    with pytest.raises(StorageError) as excinfo:
        storage.read(archive("2000-01-01T00-00-00Z"))
    assert excinfo.value.exit_code == ExitCode.STORAGE
    with pytest.raises(StorageError):
        storage.stat(archive("2000-01-01T00-00-00Z"))


def test_a_small_object_round_trips_and_is_replaced(storage: Storage) -> None:
    assert storage.get(STATUS) is None
    storage.put(STATUS, json.dumps({"result": "success"}).encode())
    assert json.loads(storage.get(STATUS) or b"") == {"result": "success"}
    storage.put(STATUS, b'{"result": "failure"}')
    assert storage.get(STATUS) == b'{"result": "failure"}'
    assert storage.stat(STATUS).size == len(b'{"result": "failure"}')


def test_deleting_three_hundred_objects_removes_them_all_in_batches(storage: Storage) -> None:
    doomed = [archive(f"2026-01-01T00-{i // 60:02d}-{i % 60:02d}Z") for i in range(300)]
    for name in doomed:
        commit(storage, name, b"x")
    commit(storage, archive("2027-01-01T00-00-00Z"), b"keep")
    storage.put(STATUS, b"{}")
    assert len(storage.list_objects(PREFIX)) == 302
    storage.delete([*doomed, STATUS, archive("1999-01-01T00-00-00Z")])  # a missing one is fine
    assert names(storage.list_objects(PREFIX)) == [archive("2027-01-01T00-00-00Z")]
    assert storage.get(STATUS) is None
    storage.delete([])


# -- locks ------------------------------------------------------------------------------------------------


def test_a_held_lock_refuses_a_second_holder_naming_the_first_and_is_free_after_exit(storage: Storage) -> None:
    assert storage.lock_holder(LOCK) is None
    with storage.lock(LOCK, "backupctl pid 42 on host-a"):
        assert storage.lock_holder(LOCK) == "backupctl pid 42 on host-a"
        with pytest.raises(LockHeld) as excinfo, storage.lock(LOCK, "backupctl pid 43 on host-b"):
            pass
        # Azure adds when a dead holder's lease frees itself at the latest.
        assert str(excinfo.value).startswith("plan 'prod/orders' is locked by backupctl pid 42 on host-a")
        assert excinfo.value.holder == "backupctl pid 42 on host-a"
        assert excinfo.value.exit_code == ExitCode.LOCKED
    assert storage.lock_holder(LOCK) is None
    with storage.lock(LOCK, "backupctl pid 43 on host-b"):
        assert storage.lock_holder(LOCK) == "backupctl pid 43 on host-b"
    assert storage.lock_holder(LOCK) is None


def test_locks_of_different_plans_do_not_interfere(storage: Storage) -> None:
    with storage.lock(LOCK, "one"), storage.lock("prod/users/_lock", "two"):
        assert storage.lock_holder(LOCK) == "one"
        assert storage.lock_holder("prod/users/_lock") == "two"


def test_a_lock_is_released_when_the_with_block_raises(storage: Storage) -> None:
    with pytest.raises(RuntimeError), storage.lock(LOCK, "crasher"):
        raise RuntimeError("boom")
    assert storage.lock_holder(LOCK) is None


def test_an_upload_under_a_held_lock_commits(storage: Storage) -> None:
    with storage.lock(LOCK, "run"):
        commit(storage, archive("2026-11-27T13-00-00Z"), payload(150_000))
    assert [o.size for o in archives(storage, PREFIX)] == [150_000]


def test_server_time_is_storages_own_clock_or_none_where_it_keeps_this_hosts(storage: Storage) -> None:
    told = storage.server_time()
    if isinstance(storage, AzureStorage):
        assert told is not None and told.tzinfo is not None
        assert abs((told - datetime.now(UTC)).total_seconds()) < 120  # Azurite runs on this host's clock
    else:
        assert told is None
