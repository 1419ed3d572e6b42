"""Retention that must not delete: on a container that refuses deletes (immutability / WORM, legal hold) it
fails loudly, never silently. Azurite has no immutability policies; a leased blob is refused the same way (a
per-blob failure inside the delete batch), so a lease stands in for the policy here. And by a clock that ran
ahead of storage's, it deletes nothing."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from azure.storage.blob import BlobLeaseClient, ContainerClient
from pymongo import MongoClient

from backup_exporter import config as config_module
from backup_exporter.core.clock import SYSTEM
from backup_exporter.core.errors import StorageError
from backup_exporter.core.plan_state import PlanStates
from backup_exporter.operations.housekeeping import after_success_hook, prune_plan
from backup_exporter.operations.prune import ClockAhead
from backup_exporter.operations.run import run_backup
from backup_exporter.repository import backups
from backup_exporter.serve.metrics import metrics_registry
from backup_exporter.storage.azure import AzureStorage
from backup_exporter.storage.base import Storage
from backup_exporter.storage.local import LocalStorage
from tests import dataset
from tests.cli_helpers import backupctl, base_env, native_azure_config
from tests.clocks import ManualClock

OLD = "prod/main/2026-01-01T00-00-00Z.archive.gz"
OLDER = "prod/main/2025-12-01T00-00-00Z.archive.gz"


@pytest.fixture
def client(azure_connection_string: str, container: str) -> Iterator[ContainerClient]:
    container_client = ContainerClient.from_connection_string(azure_connection_string, container)
    for name in (OLDER, OLD):
        container_client.upload_blob(name, b"x", metadata={"sha256": "0", "size": "1"})
    # OLD cannot be deleted, as under a time-based retention policy.
    BlobLeaseClient(container_client.get_blob_client(OLD)).acquire(lease_duration=-1)
    yield container_client
    container_client.close()


def test_prune_that_cannot_delete_exits_74_with_one_line_naming_the_blob_and_the_reason(
        tmp_path: Path, client: ContainerClient, container: str, azure_connection_string: str,
        mongo_uri: str) -> None:
    cfg = native_azure_config(tmp_path / "backup.yml", container, "unused",
                              "    retention: {keep_last: 1}\n")
    env = base_env(AZURE_STORAGE_CONNECTION_STRING=azure_connection_string, MONGODB_URI=mongo_uri)
    # A newer backup, so that both older ones are due for deletion.
    client.upload_blob("prod/main/2026-02-01T00-00-00Z.archive.gz", b"x", metadata={"sha256": "0", "size": "1"})
    result = backupctl(["prune", "--config", str(cfg)], env)
    assert result.returncode == 74, result.stderr
    line = result.stderr.strip()
    assert "\n" not in line and "Traceback" not in line
    assert line.startswith(f"backupctl: Azure Blob azure://devstoreaccount1/{container}: could not delete 1 of 2 "
                           f"blobs (first: {OLD}, HTTP 412 LeaseIdMissing)")
    assert OLD in [b.name for b in client.list_blobs()]


def test_retention_after_a_backup_that_cannot_delete_is_logged_as_an_error_and_the_backup_stands(
        tmp_path: Path, client: ContainerClient, container: str, azure_connection_string: str,
        mongo_uri: str, mongo_client: MongoClient) -> None:  # type: ignore[type-arg]
    prefix = f"rr{uuid.uuid4().hex[:6]}"
    dataset.load(mongo_client, prefix, per_collection=5)
    try:
        cfg = native_azure_config(tmp_path / "backup.yml", container, prefix, "    retention: {keep_last: 1}\n")
        env = base_env(AZURE_STORAGE_CONNECTION_STRING=azure_connection_string, MONGODB_URI=mongo_uri)
        made = backupctl(["run-now", "--config", str(cfg)], env)
    finally:
        dataset.drop(mongo_client, prefix)
    assert made.returncode == 0, made.stderr
    name = made.stdout.split("\t")[0]
    assert "after-backup step (retention, storage totals) failed" in made.stderr
    assert f"could not delete 1 of 2 blobs (first: {OLD}, HTTP 412 LeaseIdMissing)" in made.stderr
    names = {b.name for b in client.list_blobs()}
    assert name in names and OLD in names and OLDER not in names


def test_a_retention_the_storage_refuses_is_counted_in_backup_retention_failures_total(
        client: ContainerClient, container: str, azure_connection_string: str) -> None:
    cfg = config_module.from_mapping({
        "storage": {"container": container, "connection_string": azure_connection_string},
        "plans": {"main": {"mongodb_uri": "mongodb://127.0.0.1:1/", "prefix": "prod",
                           "retention": {"keep_last": 1}}}}, {}, "test")
    client.upload_blob("prod/main/2026-06-01T00-00-00Z.archive.gz", b"x", metadata={"sha256": "0", "size": "1"})
    state = PlanStates(["main"])
    registry = metrics_registry(state)
    assert registry.get_sample_value("backup_retention_failures_total", {"plan": "main"}) == 0
    storage = AzureStorage(container, connection_string=azure_connection_string)
    try:
        with pytest.raises(StorageError, match="could not delete"):
            prune_plan(storage, cfg.plans["main"], state)
    finally:
        storage.close()
    assert registry.get_sample_value("backup_retention_failures_total", {"plan": "main"}) == 1


# -- a clock that ran ahead -----------------------------------------------------------------------------------

AHEAD = timedelta(days=30)


@pytest.fixture(params=["local", "azure"])
def clock_storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Storage, dict[str, object]]]:
    """The storage a plan writes to, and its configuration: a local folder (its clock is the host's own file
    times) or Azurite (storage's own clock)."""
    if request.param == "local":
        (tmp_path / "store").mkdir()
        yield LocalStorage(tmp_path / "store"), {"type": "local", "path": str(tmp_path / "store")}
        return
    conn = request.getfixturevalue("azure_connection_string")
    container = request.getfixturevalue("container")
    storage = AzureStorage(container, connection_string=conn)
    yield storage, {"container": container, "connection_string": conn}
    storage.close()


def test_retention_after_a_backup_named_by_a_clock_ahead_of_storage_deletes_nothing_and_is_counted(
        clock_storage: tuple[Storage, dict[str, object]], mongo_uri: str, mongo_client: MongoClient,  # type: ignore[type-arg]
        caplog: pytest.LogCaptureFixture) -> None:
    storage, storage_cfg = clock_storage
    prefix = f"ca{uuid.uuid4().hex[:6]}"
    dataset.load(mongo_client, prefix, per_collection=3)
    try:
        cfg = config_module.from_mapping({"storage": storage_cfg, "plans": {"main": {
            "mongodb_uri": mongo_uri, "prefix": "prod", "engine": "native", "include": [f"{prefix}*.*"],
            "retention": {"keep_last": 1}}}}, {}, "test")
        plan = cfg.plans["main"]
        state = PlanStates(["main"])
        registry = metrics_registry(state)
        # Two backups by the right clock: keep_last 1 deletes the older one, as it should.
        for _ in range(2):
            outcome = run_backup(plan, storage, state=state, after_success=after_success_hook(plan, storage, state))
            assert outcome.result == "success", outcome.message
        good = [b.name for b in backups.archives(storage, "prod/main")]
        assert len(good) == 1
        assert registry.get_sample_value("backup_last_retention_success", {"plan": "main"}) == 1
        # The host's clock steps 30 days ahead (a bad NTP source, a VM restored with the wrong time).
        ahead = ManualClock(datetime.now(UTC) + AHEAD, ticking=True)
        with caplog.at_level(logging.ERROR):
            outcome = run_backup(plan, storage, state=state, clock=ahead,
                                 after_success=after_success_hook(plan, storage, state, ahead))
    finally:
        dataset.drop(mongo_client, prefix)
    assert outcome.result == "success", outcome.message  # the new backup stands; only retention is refused
    names = [b.name for b in backups.archives(storage, "prod/main")]
    assert good[0] in names and outcome.name in names and len(names) == 2
    assert registry.get_sample_value("backup_retention_failures_total", {"plan": "main"}) == 1
    assert registry.get_sample_value("backup_last_retention_success", {"plan": "main"}) == 0
    assert outcome.retention_ok is False
    message = next(r.getMessage() for r in caplog.records if "refused, nothing deleted" in r.getMessage())
    if isinstance(storage, LocalStorage):  # the file system keeps this host's clock: the name gives it away
        assert f"backup {outcome.name} is named" in message and "clock ran 4w2d ahead" in message
    else:  # Azure has a clock of its own, asked first
        assert "this host's time" in message and "is 4w2d ahead of storage's" in message


def test_prune_by_a_clock_ahead_of_storage_exits_65_with_one_line_and_deletes_nothing_even_in_a_dry_run(
        tmp_path: Path, mongo_uri: str, mongo_client: MongoClient) -> None:  # type: ignore[type-arg]
    store = tmp_path / "store"
    store.mkdir()
    config = tmp_path / "backup.yml"
    prefix = f"cp{uuid.uuid4().hex[:6]}"
    config.write_text(f"""storage: {{type: local, path: {store}}}
plans:
  main: {{mongodb_uri: "{mongo_uri}", prefix: prod, engine: native, include: ["{prefix}*.*"],
          retention: {{keep_last: 1}}}}
""")
    plan = config_module.load(config, {}).plans["main"]
    dataset.load(mongo_client, prefix, per_collection=3)
    try:
        for clock in (SYSTEM, ManualClock(datetime.now(UTC) + AHEAD, ticking=True)):
            assert run_backup(plan, LocalStorage(store), clock=clock).result == "success"
    finally:
        dataset.drop(mongo_client, prefix)
    before = sorted(p.name for p in store.rglob("*.archive.gz"))
    assert len(before) == 2
    for args in (["prune"], ["prune", "--dry-run"]):
        result = backupctl([*args, "--config", str(config)], base_env())
        assert result.returncode == 65, result.stderr
        line = result.stderr.strip()
        assert "\n" not in line and "Traceback" not in line
        assert "retention of prod/main/ refused, nothing deleted" in line and "fix the clock (NTP)" in line
    assert sorted(p.name for p in store.rglob("*.archive.gz")) == before


def test_prune_by_a_host_clock_ahead_of_azure_deletes_nothing_though_every_backup_name_is_right(
        container: str, azure_connection_string: str) -> None:
    cfg = config_module.from_mapping({
        "storage": {"container": container, "connection_string": azure_connection_string},
        "plans": {"main": {"mongodb_uri": "mongodb://127.0.0.1:1/", "prefix": "prod",
                           "retention": {"keep_within": "1d"}}}}, {}, "test")
    plan = cfg.plans["main"]
    storage = AzureStorage(container, connection_string=azure_connection_string)
    real = datetime.now(UTC)
    try:
        for hours in (3, 2, 1):
            name = f"prod/main/{real - timedelta(hours=hours):%Y-%m-%dT%H-%M-%SZ}.archive.gz"
            upload = storage.start_upload(name)
            upload.write(b"x")
            upload.commit({"sha256": "0", "size": "1"})
        state = PlanStates(["main"])
        # 30 days ahead, every backup looks a month old: keep_within would delete all but the newest.
        with pytest.raises(ClockAhead, match=r"this host's time .* is 4w2d ahead of storage's .*; fix the clock"):
            prune_plan(storage, plan, state, now=real + AHEAD)
        assert len(backups.archives(storage, "prod/main")) == 3
        assert state.get("main").retention is not None and state.get("main").retention[1] is False
        # By the right clock the same policy keeps all three (the control: the refusal was the clock's).
        assert prune_plan(storage, plan, state, now=datetime.now(UTC)).deleted == []
    finally:
        storage.close()
