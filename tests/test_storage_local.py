"""LocalStorage specifics: its on-disk layout, names it refuses, and locks across processes. The contract
every backend keeps is in test_storage_contract.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from backup_exporter.core.errors import LockHeld, StorageError
from backup_exporter.storage.local import LocalStorage
from tests.test_storage_contract import LOCK, PREFIX, STATUS, archive

REPO = Path(__file__).resolve().parent.parent


# -- local specifics ------------------------------------------------------------------------------------


@pytest.fixture
def local(tmp_path: Path) -> LocalStorage:
    (tmp_path / "backups").mkdir()
    return LocalStorage(tmp_path / "backups")


@pytest.mark.parametrize("name", ["../escape.archive.gz", "/etc/passwd", "a/../../b", "a//b", "", "a/./b",
                                  "prod/../../x", "prod/.hidden", "prod/x.archive.gz.meta.json"])
def test_names_escaping_the_root_are_refused(local: LocalStorage, name: str) -> None:
    with pytest.raises(StorageError):
        local.start_upload(name)
    with pytest.raises(StorageError):
        local.put(name, b"x")


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


def test_partial_files_and_metadata_files_are_never_objects(local: LocalStorage) -> None:
    directory = local.root / PREFIX
    directory.mkdir(parents=True)
    (directory / ".2026-11-27T14-00-00Z.archive.gz.partial-1-abcd").write_bytes(b"crashed")
    (directory / "2026-11-27T15-00-00Z.archive.gz.meta.json").write_text("{}")  # crash before rename
    assert local.list_objects(PREFIX) == []
    with pytest.raises(StorageError, match="invalid object name"):
        local.stat(f"{PREFIX}/2026-11-27T15-00-00Z.archive.gz.meta.json")


def test_a_file_copied_in_by_hand_is_an_object_without_metadata(local: LocalStorage) -> None:
    directory = local.root / PREFIX
    directory.mkdir(parents=True)
    (directory / "2026-11-27T13-00-00Z.archive.gz").write_bytes(b"copied in by hand")
    (info,) = local.list_objects(PREFIX)
    assert (info.name, info.size, info.metadata) == (archive("2026-11-27T13-00-00Z"), 17, {})


def test_an_unreadable_metadata_file_fails_the_listing_rather_than_dropping_the_object(
        local: LocalStorage) -> None:
    directory = local.root / PREFIX
    directory.mkdir(parents=True)
    (directory / "2026-11-27T13-00-00Z.archive.gz").write_bytes(b"x")
    (directory / "2026-11-27T13-00-00Z.archive.gz.meta.json").write_text("{not json")
    with pytest.raises(StorageError, match="is not valid JSON"):
        local.list_objects(PREFIX)


def test_status_writes_leave_no_temporary_files(local: LocalStorage) -> None:
    for i in range(3):
        local.put(STATUS, str(i).encode())
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
