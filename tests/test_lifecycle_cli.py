"""Finding, verifying and restoring a backup from the command line, as the README walks through it."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from azure.storage.blob import ContainerClient
from pymongo import MongoClient

from tests import dataset
from tests.cli_helpers import backupctl, base_env, native_azure_config


@pytest.fixture(scope="module")
def source(mongo_client: MongoClient) -> Iterator[tuple[str, dict[str, int]]]:  # type: ignore[type-arg]
    prefix = f"lc{uuid.uuid4().hex[:6]}"
    counts = dataset.load(mongo_client, prefix, per_collection=40)
    yield prefix, counts
    dataset.drop(mongo_client, prefix)
    dataset.drop(mongo_client, prefix + "r")


def config(tmp_path: Path, container: str, prefix: str, retention: str = "") -> Path:
    return native_azure_config(tmp_path / "backup.yml", container, prefix, retention)


def backed_up(tmp_path: Path, container: str, prefix: str, mongo_uri: str,
              connection_string: str) -> tuple[Path, dict[str, str], str]:
    """Make one native backup with `backupctl run-now`; return (config, environment, backup name).
    The environment also holds RESTORE_URI (the same server) for `restore --to env:RESTORE_URI`."""
    cfg = config(tmp_path, container, prefix)
    env = base_env(AZURE_STORAGE_CONNECTION_STRING=connection_string, MONGODB_URI=mongo_uri,
                   RESTORE_URI=mongo_uri)
    made = backupctl(["run-now", "--config", str(cfg)], env)
    assert made.returncode == 0, made.stderr
    return cfg, env, made.stdout.split("\t")[0]


def test_backup_list_verify_restore_round_trip_keeps_every_document_and_index(
        tmp_path: Path, source: tuple[str, dict[str, int]], mongo_uri: str,
        mongo_client: MongoClient, azure_connection_string: str, container: str) -> None:  # type: ignore[type-arg]
    prefix, counts = source
    cfg, env, name = backed_up(tmp_path, container, prefix, mongo_uri, azure_connection_string)

    listed = backupctl(["list", "--config", str(cfg), "--json"], env)
    assert listed.returncode == 0, listed.stderr
    (row,) = json.loads(listed.stdout)
    assert row["name"] == name and row["engine"] == "native" and row["keep"] is True

    verified = backupctl(["verify", "--latest", "--config", str(cfg)], env)
    assert verified.returncode == 0, verified.stderr
    assert f"{name}: OK" in verified.stdout
    for ns, count in counts.items():
        assert f"{ns}" in verified.stdout and f"{count} documents" in verified.stdout

    restored = backupctl(["restore", name, "--config", str(cfg), "--to", "env:RESTORE_URI", "--check",
                          "--ns-from", f"{prefix}_shop.*", "--ns-to", f"{prefix}r_shop.*",
                          "--ns-include", f"{prefix}_shop.*"], env)
    assert restored.returncode == 0, restored.stderr
    assert "document counts match" in restored.stdout
    for coll in ("users", "orders", "sessions"):
        assert dataset.digest(mongo_client, f"{prefix}r_shop.{coll}") == dataset.digest(
            mongo_client, f"{prefix}_shop.{coll}")
        source_indexes = {ix["name"]: {k: v for k, v in ix.items() if k not in ("ns", "v")}
                          for ix in mongo_client[f"{prefix}_shop"][coll].list_indexes()}
        copy_indexes = {ix["name"]: {k: v for k, v in ix.items() if k not in ("ns", "v")}
                        for ix in mongo_client[f"{prefix}r_shop"][coll].list_indexes()}
        assert copy_indexes == source_indexes

    # Restoring again over the now non-empty copy needs confirmation (no terminal here) or --yes.
    again = backupctl(["restore", name, "--config", str(cfg), "--to", "env:RESTORE_URI", "--drop",
                       "--ns-from", f"{prefix}_shop.*", "--ns-to", f"{prefix}r_shop.*",
                       "--ns-include", f"{prefix}_shop.*"], env)
    assert again.returncode == 64 and "--yes" in again.stderr
    forced = backupctl(["restore", name, "--config", str(cfg), "--to", "env:RESTORE_URI", "--drop", "--yes",
                        "--ns-from", f"{prefix}_shop.*", "--ns-to", f"{prefix}r_shop.*",
                        "--ns-include", f"{prefix}_shop.*"], env)
    assert forced.returncode == 0, forced.stderr
    assert mongo_client[f"{prefix}r_shop"].users.count_documents({}) == counts[f"{prefix}_shop.users"]


def test_a_corrupted_blob_fails_verify_and_restore(
        tmp_path: Path, source: tuple[str, dict[str, int]], mongo_uri: str,
        azure_connection_string: str, container: str) -> None:
    prefix, _ = source
    cfg, env, name = backed_up(tmp_path, container, prefix, mongo_uri, azure_connection_string)
    client = ContainerClient.from_connection_string(azure_connection_string, container)
    blob = client.get_blob_client(name)
    props = blob.get_blob_properties()
    data = bytearray(blob.download_blob().readall())
    data[len(data) // 2] ^= 0xFF
    blob.upload_blob(bytes(data), overwrite=True, metadata=props.metadata)
    client.close()
    verified = backupctl(["verify", name, "--config", str(cfg)], env)
    assert verified.returncode == 65
    assert "sha256" in verified.stderr and "Traceback" not in verified.stderr
    restored = backupctl(["restore", name, "--config", str(cfg), "--to", "env:RESTORE_URI", "--yes",
                          "--ns-from", f"{prefix}_*", "--ns-to", f"{prefix}x_*"], env)
    assert restored.returncode == 65, restored.stderr


def test_a_password_in_restore_to_is_refused(tmp_path: Path, azure_connection_string: str, container: str) -> None:
    cfg = config(tmp_path, container, "x")
    env = base_env(AZURE_STORAGE_CONNECTION_STRING=azure_connection_string, MONGODB_URI="mongodb://db/")
    result = backupctl(["restore", "--latest", "--config", str(cfg), "--to", "mongodb://root:Pw1@db/"], env)
    assert result.returncode == 64
    assert "env:VAR" in result.stderr and "Pw1" not in result.stderr


def test_prune_dry_run_prints_decisions_and_deletes_nothing(
        tmp_path: Path, source: tuple[str, dict[str, int]], mongo_uri: str,
        azure_connection_string: str, container: str) -> None:
    prefix, _ = source
    cfg = config(tmp_path, container, prefix, retention="    retention: {keep_last: 1}\n")
    env = base_env(AZURE_STORAGE_CONNECTION_STRING=azure_connection_string, MONGODB_URI=mongo_uri)
    client = ContainerClient.from_connection_string(azure_connection_string, container)
    # Two older backups uploaded under our naming scheme, plus a foreign object that must survive.
    for stamp in ("2026-01-01T00-00-00Z", "2026-02-01T00-00-00Z"):
        client.upload_blob(f"prod/main/{stamp}.archive.gz", b"x", metadata={"sha256": "0", "size": "1"})
    client.upload_blob("prod/main/notes.txt", b"keep me")
    dry = backupctl(["prune", "--config", str(cfg), "--dry-run"], env)
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.count("would delete") >= 2
    assert len([b for b in client.list_blobs() if b.name.endswith(".archive.gz")]) == 2
    made = backupctl(["run-now", "--config", str(cfg)], env)  # retention runs after the success
    assert made.returncode == 0, made.stderr
    names = sorted(b.name for b in client.list_blobs())
    client.close()
    assert names == sorted([made.stdout.split("\t")[0], "prod/main/_lock", "prod/main/_status.json",
                            "prod/main/notes.txt"])
