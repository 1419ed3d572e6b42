"""LocalStorage, and the storage contract (StorageContract) that every backend's tests run.

StorageContract is not collected by itself; TestLocalStorageContract here and TestAzureStorageContract in
test_storage_azure.py run it, each providing the `storage` and `visible_objects` fixtures.
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from backup_exporter.core.errors import ExitCode, LockHeld, StorageError
from backup_exporter.storage.base import ARCHIVE_SUFFIX, Storage
from backup_exporter.storage.local import LocalStorage

REPO = Path(__file__).resolve().parent.parent
PREFIX = "prod/orders"
LOCK = f"{PREFIX}/_lock"
STATUS = f"{PREFIX}/_status.json"


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
           piece: int = 10_000) -> None:
    upload = storage.start_upload(name)
    for start in range(0, len(data), piece):
        upload.write(data[start : start + piece])
    upload.commit(metadata if metadata is not None else {"size": str(len(data))})


def read_all(storage: Storage, name: str) -> bytes:
    return b"".join(storage.read_backup(name))


class StorageContract:
    """Behaviour every backend keeps; subclasses provide the fixtures below."""

    @pytest.fixture
    def storage(self) -> Iterator[Storage]:
        raise NotImplementedError

    @pytest.fixture
    def visible_objects(self) -> Callable[[], list[str]]:
        """Return a function listing every object a user of the backend would see, outside our API."""
        raise NotImplementedError

    def test_a_committed_upload_lists_with_size_and_metadata_and_reads_back_identically(
            self, storage: Storage) -> None:
        data = payload(300_001)
        meta = {"sha256": hashlib.sha256(data).hexdigest(), "size": str(len(data)), "engine": "native",
                "plan": "orders"}
        upload = storage.start_upload(archive("2026-11-27T13-00-00Z"))
        for start in range(0, len(data), 7_000):
            upload.write(data[start : start + 7_000])
        upload.commit(meta)
        assert upload.bytes_uploaded == len(data)

        (info,) = storage.list_backups(PREFIX)
        assert info.name == archive("2026-11-27T13-00-00Z")
        assert info.size == len(data)
        assert info.metadata == meta
        assert info.last_modified.tzinfo is not None
        assert storage.backup_info(info.name) == info
        assert read_all(storage, info.name) == data
        assert all(len(c) <= 50_000 for c in storage.read_backup(info.name, chunk_size=50_000))
        assert b"".join(storage.read_backup(info.name, chunk_size=50_000)) == data

    def test_an_empty_upload_can_still_be_committed(self, storage: Storage) -> None:
        upload = storage.start_upload(archive("2026-11-27T13-00-00Z"))
        upload.commit({"size": "0"})
        (info,) = storage.list_backups(PREFIX)
        assert info.size == 0
        assert read_all(storage, info.name) == b""

    def test_an_aborted_upload_leaves_nothing_behind(
            self, storage: Storage, visible_objects: Callable[[], list[str]]) -> None:
        upload = storage.start_upload(archive("2026-11-27T13-00-00Z"))
        upload.write(payload(200_000))
        upload.abort()
        upload.abort()  # idempotent, never raises
        assert storage.list_backups(PREFIX) == []
        assert visible_objects() == []
        with pytest.raises(StorageError):
            upload.write(b"more")

    def test_an_upload_never_committed_shows_nothing(
            self, storage: Storage, visible_objects: Callable[[], list[str]]) -> None:
        upload = storage.start_upload(archive("2026-11-27T13-00-00Z"))
        upload.write(payload(200_000))
        del upload  # the process "dies" without commit or abort
        gc.collect()
        assert storage.list_backups(PREFIX) == []
        assert [name for name in visible_objects() if name.endswith(ARCHIVE_SUFFIX)] == []

    def test_a_committed_upload_refuses_further_writes(self, storage: Storage) -> None:
        upload = storage.start_upload(archive("2026-11-27T13-00-00Z"))
        upload.write(b"abc")
        upload.commit({})
        with pytest.raises(StorageError):
            upload.write(b"def")
        with pytest.raises(StorageError):
            upload.commit({})
        upload.abort()  # after commit: a no-op that keeps the backup
        assert [b.size for b in storage.list_backups(PREFIX)] == [3]

    def test_a_commit_never_replaces_an_existing_backup_of_the_same_name(self, storage: Storage) -> None:
        # Two runs of a plan started within the same second get the same name: the second must fail,
        # not silently replace the first backup (or its metadata).
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
        (info,) = storage.list_backups(PREFIX)
        assert info.metadata == first_meta
        assert info.size == len(first)
        assert read_all(storage, name) == first

    def test_listing_ignores_foreign_objects_deeper_paths_siblings_status_and_lock(
            self, storage: Storage) -> None:
        commit(storage, archive("2026-11-27T13-00-00Z"), b"mine")
        commit(storage, f"{PREFIX}/notes.txt", b"foreign")
        commit(storage, archive("2026-11-27T13-00-00Z", f"{PREFIX}/deeper"), b"deeper")
        commit(storage, archive("2026-11-27T13-00-00Z", f"{PREFIX}-other"), b"sibling plan")
        commit(storage, archive("2026-11-27T13-00-00Z", "prod"), b"above")
        storage.write_status(STATUS, b"{}")
        with storage.lock(LOCK, "tester"):
            names = [b.name for b in storage.list_backups(PREFIX)]
        assert names == [archive("2026-11-27T13-00-00Z")]
        assert storage.list_backups("nothing/here") == []

    def test_listing_is_oldest_first_by_time_not_by_name(self, storage: Storage) -> None:
        commit(storage, archive("2026-11-27T14-00-00Z"), b"first")
        time.sleep(1.1)  # Azure's last-modified time has one-second resolution
        commit(storage, archive("2026-11-27T13-00-00Z"), b"second")
        names = [b.name for b in storage.list_backups(f"{PREFIX}/")]
        assert names == [archive("2026-11-27T14-00-00Z"), archive("2026-11-27T13-00-00Z")]

    def test_reading_a_missing_backup_raises_storage_error(self, storage: Storage) -> None:
        with pytest.raises(StorageError) as excinfo:
            storage.read_backup(archive("2000-01-01T00-00-00Z"))
        assert excinfo.value.exit_code == ExitCode.STORAGE
        with pytest.raises(StorageError):
            storage.backup_info(archive("2000-01-01T00-00-00Z"))

    def test_status_round_trips_and_is_replaced(self, storage: Storage) -> None:
        assert storage.read_status(STATUS) is None
        storage.write_status(STATUS, json.dumps({"result": "success"}).encode())
        assert json.loads(storage.read_status(STATUS) or b"") == {"result": "success"}
        storage.write_status(STATUS, b'{"result": "failure"}')
        assert storage.read_status(STATUS) == b'{"result": "failure"}'

    def test_a_held_lock_refuses_a_second_holder_naming_the_first_and_is_free_after_exit(
            self, storage: Storage) -> None:
        assert storage.lock_holder(LOCK) is None
        with storage.lock(LOCK, "backupctl pid 42 on host-a"):
            assert storage.lock_holder(LOCK) == "backupctl pid 42 on host-a"
            with pytest.raises(LockHeld) as excinfo, storage.lock(LOCK, "backupctl pid 43 on host-b"):
                pass
            message = str(excinfo.value)
            assert message == "plan 'prod/orders' is locked by backupctl pid 42 on host-a"
            assert excinfo.value.exit_code == ExitCode.LOCKED
        assert storage.lock_holder(LOCK) is None
        with storage.lock(LOCK, "backupctl pid 43 on host-b"):
            assert storage.lock_holder(LOCK) == "backupctl pid 43 on host-b"
        assert storage.lock_holder(LOCK) is None

    def test_locks_of_different_plans_do_not_interfere(self, storage: Storage) -> None:
        with storage.lock(LOCK, "one"), storage.lock("prod/users/_lock", "two"):
            assert storage.lock_holder(LOCK) == "one"
            assert storage.lock_holder("prod/users/_lock") == "two"

    def test_a_lock_is_released_when_the_with_block_raises(self, storage: Storage) -> None:
        with pytest.raises(RuntimeError), storage.lock(LOCK, "crasher"):
            raise RuntimeError("boom")
        assert storage.lock_holder(LOCK) is None

    def test_deleting_three_hundred_backups_removes_them_all(self, storage: Storage) -> None:
        names = [archive(f"2026-01-01T00-{i // 60:02d}-{i % 60:02d}Z") for i in range(300)]
        for name in names:
            commit(storage, name, b"x")
        commit(storage, archive("2027-01-01T00-00-00Z"), b"keep")
        assert len(storage.list_backups(PREFIX)) == 301
        storage.delete_backups([*names, archive("1999-01-01T00-00-00Z")])  # a missing one is fine
        assert [b.name for b in storage.list_backups(PREFIX)] == [archive("2027-01-01T00-00-00Z")]
        storage.delete_backups([])


class TestLocalStorageContract(StorageContract):
    @pytest.fixture
    def storage(self, tmp_path: Path) -> Iterator[Storage]:
        store = LocalStorage(tmp_path / "backups")
        (tmp_path / "backups").mkdir()
        yield store
        store.close()

    @pytest.fixture
    def visible_objects(self, tmp_path: Path) -> Callable[[], list[str]]:
        root = tmp_path / "backups"

        def files() -> list[str]:
            # Every file, hidden ones included, except the lock files that persist by design.
            return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                          if p.is_file() and p.name != "_lock")

        return files


# -- local specifics ------------------------------------------------------------------------------------


@pytest.fixture
def local(tmp_path: Path) -> LocalStorage:
    (tmp_path / "backups").mkdir()
    return LocalStorage(tmp_path / "backups")


@pytest.mark.parametrize("name", ["../escape.archive.gz", "/etc/passwd", "a/../../b", "a//b", "", "a/./b",
                                  "prod/../../x"])
def test_names_escaping_the_root_are_refused(local: LocalStorage, name: str) -> None:
    with pytest.raises(StorageError):
        local.start_upload(name)
    with pytest.raises(StorageError):
        local.write_status(name, b"x")


def test_commit_renames_the_hidden_partial_file_and_writes_metadata_beside_it(local: LocalStorage) -> None:
    name = archive("2026-11-27T13-00-00Z")
    upload = local.start_upload(name)
    upload.write(b"data")
    directory = local.root / PREFIX
    (partial,) = os.listdir(directory)
    assert partial.startswith(".2026-11-27T13-00-00Z.archive.gz.partial-")
    upload.commit({"sha256": "abc"})
    assert sorted(os.listdir(directory)) == ["2026-11-27T13-00-00Z.archive.gz",
                                             "2026-11-27T13-00-00Z.archive.gz.meta.json"]
    meta = json.loads((directory / "2026-11-27T13-00-00Z.archive.gz.meta.json").read_text())
    assert meta["metadata"] == {"sha256": "abc"}


def test_archives_without_committed_metadata_and_partial_files_are_not_listed(local: LocalStorage) -> None:
    directory = local.root / PREFIX
    directory.mkdir(parents=True)
    (directory / "2026-11-27T13-00-00Z.archive.gz").write_bytes(b"copied in by hand")
    (directory / ".2026-11-27T14-00-00Z.archive.gz.partial-1-abcd").write_bytes(b"crashed")
    (directory / "2026-11-27T15-00-00Z.archive.gz.meta.json").write_text("{}")  # crash before rename
    assert local.list_backups(PREFIX) == []


def test_status_writes_leave_no_temporary_files(local: LocalStorage) -> None:
    for i in range(3):
        local.write_status(STATUS, str(i).encode())
    assert os.listdir(local.root / PREFIX) == ["_status.json"]


def test_ping_refuses_a_missing_root_without_creating_it(tmp_path: Path) -> None:
    store = LocalStorage(tmp_path / "not-mounted")
    with pytest.raises(StorageError, match="does not exist"):
        store.ping()
    assert not (tmp_path / "not-mounted").exists()
    LocalStorage(tmp_path).ping()
    assert LocalStorage(tmp_path).describe() == f"file://{tmp_path}"


HOLD_LOCK = """
import sys, time
from pathlib import Path
from backup_exporter.storage.local import LocalStorage
with LocalStorage(Path(sys.argv[1])).lock(sys.argv[2], "other process"):
    print("locked", flush=True)
    time.sleep(60)
"""


def test_a_lock_held_by_another_process_is_refused_and_freed_when_that_process_dies(
        local: LocalStorage) -> None:
    proc = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(local.root), LOCK],
                            stdout=subprocess.PIPE, cwd=REPO)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"locked\n"
        assert local.lock_holder(LOCK) == "other process"
        with pytest.raises(LockHeld, match="locked by other process"), local.lock(LOCK, "me"):
            pass
    finally:
        proc.kill()
        proc.wait(timeout=10)
    assert local.lock_holder(LOCK) is None
    with local.lock(LOCK, "me"):
        assert local.lock_holder(LOCK) == "me"
