"""What a run asks of its storage: the plan's access tier at commit (Azurite), and what it does when its
lock is taken away mid-dump (in memory, where that can be staged on demand). The dump tool is the real
fake-mongodump executable; storage behaviour itself is tested in test_storage_contract.py."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from azure.storage.blob import BlobServiceClient

from backup_exporter import config as config_module
from backup_exporter.core.errors import ExitCode
from backup_exporter.core.plan_state import PlanStates
from backup_exporter.operations.run import RunOutcome, run_backup
from backup_exporter.repository import records
from backup_exporter.repository.backups import archives
from backup_exporter.serve.metrics import metrics_registry
from backup_exporter.storage.azure import AzureStorage
from backup_exporter.storage.memory import MemoryStorage
from tests.cli_helpers import FAKE_MONGODUMP

LOCK = "main/_lock"


def test_a_run_whose_plan_lock_is_taken_away_during_the_dump_commits_nothing_and_records_a_failure(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = config_module.from_mapping({
        "storage": {"type": "local", "path": str(tmp_path)},
        "plans": {"main": {"mongodb_uri": "mongodb://127.0.0.1:1/", "engine": "mongodump",
                           "mongodump_path": FAKE_MONGODUMP}}}, {}, "test")
    # Read by the real fake-mongodump child: the golden archive, spread over 3 seconds.
    monkeypatch.setenv("FAKE_MONGODUMP_MODE", "sleepy")
    monkeypatch.setenv("FAKE_MONGODUMP_SECONDS", "3")
    storage = MemoryStorage()
    metrics = PlanStates(["main"])
    registry = metrics_registry(metrics)
    outcomes: list[RunOutcome] = []
    run = threading.Thread(target=lambda: outcomes.append(run_backup(cfg.plans["main"], storage, state=metrics)))
    run.start()
    deadline = time.monotonic() + 10
    while storage.lock_holder(LOCK) is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert storage.lock_holder(LOCK) is not None, "the run never took its lock"
    storage.break_lock(LOCK)  # before or after the upload started: either way nothing may be committed
    run.join(30)
    (outcome,) = outcomes
    assert (outcome.result, outcome.exit_code) == ("failure", ExitCode.STORAGE)
    assert "lock of main was lost" in outcome.message and "not committed" in outcome.message
    assert archives(storage, "main") == []
    recorded = records.load(storage, "main/_status.json", "main")
    assert recorded.last_success is None
    assert recorded.last_attempt is not None and recorded.last_attempt.exit_code == ExitCode.STORAGE
    assert registry.get_sample_value("backup_runs_total", {"plan": "main", "result": "failure"}) == 1
    with storage.lock(LOCK, "next run"):  # the plan is free for the next run
        assert storage.lock_holder(LOCK) == "next run"


def test_a_run_commits_its_backup_in_the_plans_access_tier(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, container: str, azure_connection_string: str) -> None:
    cfg = config_module.from_mapping({
        "storage": {"container": container, "connection_string": azure_connection_string},
        "plans": {"main": {"mongodb_uri": "mongodb://127.0.0.1:1/", "engine": "mongodump",
                           "mongodump_path": FAKE_MONGODUMP}}}, {}, "test")
    plan = cfg.plans["main"].model_copy(update={"access_tier": "Cold"})
    monkeypatch.setenv("FAKE_MONGODUMP_MODE", "ok")
    storage = AzureStorage(container, connection_string=azure_connection_string)
    try:
        outcome = run_backup(plan, storage)
    finally:
        storage.close()
    assert outcome.exit_code == 0, outcome.message
    with BlobServiceClient.from_connection_string(azure_connection_string) as service:
        props = service.get_blob_client(container, outcome.name or "").get_blob_properties()
    assert props.blob_tier == "Cold" and not props.blob_tier_inferred
    assert props.blob_tier_change_time is None  # set by the commit, never re-tiered afterwards
    assert props.metadata["plan"] == "main" and props.metadata["size"] == str(outcome.size)
