"""Around the backups: the scheduled restore drill, storage totals, and `backupctl status`."""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from pymongo import MongoClient

from backup_exporter import config as config_module
from backup_exporter.core import status
from backup_exporter.core.errors import StorageError
from backup_exporter.core.plan_state import PlanStates
from backup_exporter.operations import housekeeping
from backup_exporter.operations.run import run_backup
from backup_exporter.repository import records
from backup_exporter.serve.metrics import metrics_registry
from backup_exporter.storage.azure import AzureStorage
from backup_exporter.storage.local import LocalStorage
from backup_exporter.storage.memory import MemoryStorage
from tests import dataset, servers
from tests.cli_helpers import FAKE_MONGODUMP, backupctl, base_env


@pytest.fixture(scope="module")
def scratch(server_logs: Path) -> Iterator[str]:
    server = servers.start_secantus(server_logs)
    yield f"mongodb://{server.address}/?directConnection=true"
    server.stop()


def test_the_restore_drill_restores_the_newest_backup_and_records_its_verdict(
        mongo_client: MongoClient, mongo_uri: str, scratch: str,  # type: ignore[type-arg]
        azure_connection_string: str, container: str) -> None:
    prefix = f"hk{uuid.uuid4().hex[:6]}"
    counts = dataset.load(mongo_client, prefix, per_collection=20)
    try:
        cfg = config_module.from_mapping({
            "storage": {"container": container, "connection_string": azure_connection_string},
            "plans": {"main": {"mongodb_uri": mongo_uri, "engine": "native", "include": [f"{prefix}_*"],
                               "restore_check": {"schedule": "0 5 * * 0", "uri": scratch}}}}, {}, "test")
        plan = cfg.plans["main"]
        storage = AzureStorage(container, connection_string=azure_connection_string)
        metrics = PlanStates(["main"])
        registry = metrics_registry(metrics)
        assert run_backup(plan, storage, state=metrics).exit_code == 0
        assert housekeeping.run_restore_check(plan, storage, metrics) is True
        assert registry.get_sample_value("backup_last_restore_check_success", {"plan": "main"}) == 1
        assert (registry.get_sample_value("backup_last_restore_check_timestamp_seconds", {"plan": "main"}) or 0) > 0
        recorded = records.load(storage, "main/_status.json", "main")
        assert recorded.restore_check["success"] is True
        assert recorded.last_success is not None  # the drill never touches the backup record
        target: MongoClient = MongoClient(scratch)  # type: ignore[type-arg]
        try:
            for ns, count in counts.items():
                db, coll = ns.split(".", 1)
                assert target[db][coll].count_documents({}) == count
        finally:
            target.close()
        housekeeping.refresh_stored(cfg, storage, metrics)
        assert registry.get_sample_value("backup_stored_backups", {"plan": "main"}) == 1
        storage.close()
    finally:
        dataset.drop(mongo_client, prefix)


def test_a_restore_drill_without_any_backup_fails_and_says_so(scratch: str, tmp_path: Path) -> None:
    cfg = config_module.from_mapping({
        "storage": {"type": "local", "path": str(tmp_path)},
        "plans": {"main": {"mongodb_uri": "mongodb://127.0.0.1:1/", "restore_check": {"uri": scratch}}}}, {}, "t")
    storage = MemoryStorage()  # the drill's logic, not storage, is under test
    metrics = PlanStates(["main"])
    registry = metrics_registry(metrics)
    assert housekeeping.run_restore_check(cfg.plans["main"], storage, metrics) is False
    assert registry.get_sample_value("backup_last_restore_check_success", {"plan": "main"}) == 0
    assert "has no backup" in records.load(storage, "main/_status.json", "main").restore_check["message"]
    storage.close()


def test_status_shows_last_success_age_exit_code_next_run_and_the_lock_holder(
        tmp_path: Path, azure_connection_string: str, container: str) -> None:
    env = base_env(MONGODB_URI="mongodb://127.0.0.1:1/", AZURE_STORAGE_CONNECTION_STRING=azure_connection_string,
                   AZURE_STORAGE_CONTAINER=container, BACKUP_ENGINE="mongodump", BACKUP_MONGODUMP_PATH=FAKE_MONGODUMP,
                   FAKE_MONGODUMP_MODE="ok", BACKUP_SCHEDULE="30 2 * * *")
    before = backupctl(["status", "--json"], env)
    assert before.returncode == 0, before.stderr
    (row,) = json.loads(before.stdout)
    assert row["last_success"] is None and row["last_exit_code"] is None and row["locked_by"] is None
    assert backupctl(["run-now"], env).returncode == 0
    storage = AzureStorage(container, connection_string=azure_connection_string)
    with storage.lock("default/_lock", "ops laptop (manual restore test)"):
        during = backupctl(["status", "--json"], env)
        text = backupctl(["status"], env)
    storage.close()
    (row,) = json.loads(during.stdout)
    assert row["last_exit_code"] == 0 and row["last_success"].endswith("Z")
    assert 0 <= row["last_success_age_seconds"] < 120
    assert row["next_run"].endswith("T02:30:00Z")
    assert row["locked_by"] == "ops laptop (manual restore test)"
    assert "ops laptop" in text.stdout and "default" in text.stdout


def test_a_restore_verdict_recorded_while_a_run_records_keeps_both(tmp_path: Path) -> None:
    """A drill (no plan lock) and a run (under it) record into separate objects: neither can drop the
    other's update, whichever process each runs in."""
    storage = LocalStorage(tmp_path)
    key = "main/_status.json"
    success = status.Attempt(started=1000.0, finished=1010.0, exit_code=0, result=status.SUCCESS, name="b", size=5)
    run_is_recording = threading.Event()

    def record_run(current: status.PlanStatus) -> status.PlanStatus:
        run_is_recording.set()
        time.sleep(0.5)  # the drill's verdict arrives between this run's read and its write
        return current.recorded(success)

    run = threading.Thread(target=records.update, args=(storage, key, "main", record_run))
    run.start()
    assert run_is_recording.wait(5)
    records.save_restore_check(LocalStorage(tmp_path), key, {"time": 2000.0, "success": True, "message": "ok"})
    run.join(5)
    final = records.load(storage, key, "main")
    assert final.last_success == success
    assert final.restore_check["success"] is True
    # A later run rewrites its record without touching the verdict.
    records.update(storage, key, "main", lambda current: current.recorded(success))
    assert records.load(storage, key, "main").restore_check["time"] == 2000.0


def test_an_unreadable_status_record_names_the_object_and_the_storage() -> None:
    storage = MemoryStorage()
    storage.put("main/_status.json", b"[1, 2]")
    with pytest.raises(StorageError, match=r"status record of plan 'main' is unreadable: expected a JSON object, "
                                           r"got list \(main/_status\.json in memory://test\)"):
        records.load(storage, "main/_status.json", "main")


def test_a_restore_drill_stopped_by_shutdown_records_nothing(scratch: str, azure_connection_string: str,
                                                               container: str) -> None:
    cfg = config_module.from_mapping({
        "storage": {"container": container, "connection_string": azure_connection_string},
        "plans": {"main": {"mongodb_uri": "mongodb://127.0.0.1:1/", "engine": "mongodump",
                           "mongodump_path": FAKE_MONGODUMP, "restore_check": {"uri": scratch}}}}, {}, "t")
    plan = cfg.plans["main"]
    storage = AzureStorage(container, connection_string=azure_connection_string)
    os.environ["FAKE_MONGODUMP_MODE"] = "ok"
    try:
        assert run_backup(plan, storage).exit_code == 0
    finally:
        del os.environ["FAKE_MONGODUMP_MODE"]
    stopping = threading.Event()
    stopping.set()
    metrics = PlanStates(["main"])
    registry = metrics_registry(metrics)
    assert housekeeping.run_restore_check(plan, storage, metrics, stopping) is False
    assert records.load(storage, "main/_status.json", "main").restore_check == {}
    assert registry.get_sample_value("backup_last_restore_check_timestamp_seconds", {"plan": "main"}) == 0
    storage.close()
