"""Retention on a container that refuses deletes (immutability / WORM, legal hold): it fails loudly, never
silently. Azurite has no immutability policies; a leased blob is refused the same way (a per-blob failure
inside the delete batch), so a lease stands in for the policy here."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from azure.storage.blob import BlobLeaseClient, ContainerClient
from pymongo import MongoClient

from backup_exporter import config as config_module
from backup_exporter.core.errors import StorageError
from backup_exporter.core.plan_state import PlanStates
from backup_exporter.operations.housekeeping import prune_plan
from backup_exporter.serve.metrics import metrics_registry
from backup_exporter.storage.azure import AzureStorage
from tests import dataset
from tests.cli_helpers import backupctl, base_env, native_azure_config

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
