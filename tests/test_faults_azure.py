"""Azure faults between backupctl and a real Azurite, through the suite's TCP fault proxy.

Each case checks what an operator relies on: the documented exit code, nothing partial becomes visible,
the earlier backup still verifies, the last success is kept, the run ends within a bounded time, and the
next run succeeds once the fault is gone.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from azure.storage.blob import ContainerClient
from bson import Binary
from pymongo import MongoClient

from tests import servers
from tests.cli_helpers import backupctl, base_env, native_azure_config
from tests.faultproxy import FaultProxy, fault_proxy

DOCS = 1500  # ~6 MiB of incompressible BSON: three 2 MiB blocks, so a fault can land mid-upload
PAYLOAD = 4096


@pytest.fixture(scope="module")
def random_db(mongo_client: MongoClient) -> Iterator[str]:  # type: ignore[type-arg]
    prefix = f"fa{uuid.uuid4().hex[:6]}"
    coll = mongo_client[f"{prefix}_blobs"]["chunks"]
    coll.insert_many([{"_id": i, "data": Binary(os.urandom(PAYLOAD))} for i in range(DOCS)])
    yield prefix
    mongo_client.drop_database(f"{prefix}_blobs")


@pytest.fixture
def proxy(azurite: servers.Server) -> Iterator[FaultProxy]:
    with fault_proxy(azurite.port, max_stall=300) as p:
        yield p


def _env(mongo_uri: str, proxy: FaultProxy, **extra: str) -> dict[str, str]:
    return base_env(MONGODB_URI=mongo_uri, AZURE_STORAGE_CONNECTION_STRING=servers.azurite_connection_string(
        proxy.port), **extra)


def _config(tmp_path: Path, container: str, prefix: str, extra: str = "") -> Path:
    return native_azure_config(tmp_path / "backup.yml", container, prefix,
                               extra="    timeout: 40s\n" + extra).resolve()


def _storage_block_size(path: Path) -> None:
    text = path.read_text().replace("storage:\n", "storage:\n  block_size: 2MiB\n  max_concurrency: 2\n", 1)
    path.write_text(text)


def _archives(conn: str, container: str) -> list[str]:
    client = ContainerClient.from_connection_string(conn, container)
    try:
        return sorted(b.name for b in client.list_blobs() if b.name.endswith(".archive.gz"))
    finally:
        client.close()


def _run(config: Path, env: dict[str, str], timeout: float = 240) -> tuple[int, str, float]:
    started = time.monotonic()
    result = backupctl(["run-now", "--config", str(config)], env, timeout=timeout)
    return result.returncode, result.stderr, time.monotonic() - started


@pytest.fixture
def baseline(tmp_path: Path, mongo_uri: str, random_db: str, container: str, proxy: FaultProxy,
             azure_connection_string: str) -> tuple[Path, dict[str, str], str]:
    """One good backup made through the (healthy) proxy before the fault."""
    config = _config(tmp_path, container, random_db)
    _storage_block_size(config)
    env = _env(mongo_uri, proxy)
    code, err, _ = _run(config, env)
    assert code == 0, err
    [first] = _archives(azure_connection_string, container)
    return config, env, first


def _verify(config: Path, name: str, azure_connection_string: str) -> None:
    env = base_env(AZURE_STORAGE_CONNECTION_STRING=azure_connection_string, MONGODB_URI="mongodb://unused/")
    result = backupctl(["verify", "--config", str(config), name], env)
    assert result.returncode == 0, result.stderr


def test_throttled_storage_is_retried_and_the_run_still_succeeds(
        baseline: tuple[Path, dict[str, str], str], proxy: FaultProxy, azure_connection_string: str,
        container: str) -> None:
    config, env, _first = baseline
    proxy.respond(503, 4)
    code, err, _ = _run(config, env)
    assert code == 0, err
    assert proxy.injected == [503] * 4
    newest = _archives(azure_connection_string, container)[-1]
    _verify(config, newest, azure_connection_string)


def test_a_connection_reset_mid_upload_is_retried_and_the_run_still_succeeds(
        baseline: tuple[Path, dict[str, str], str], proxy: FaultProxy, azure_connection_string: str,
        container: str) -> None:
    config, env, _first = baseline
    proxy.reset_after(3 << 20)
    code, err, _ = _run(config, env)
    assert code == 0, err
    assert proxy.resets == 1
    assert len(_archives(azure_connection_string, container)) == 2
    _verify(config, _archives(azure_connection_string, container)[-1], azure_connection_string)


def test_slow_storage_with_latency_still_completes(
        baseline: tuple[Path, dict[str, str], str], proxy: FaultProxy, azure_connection_string: str,
        container: str) -> None:
    config, env, _first = baseline
    proxy.latency(0.05)
    proxy.bandwidth(4 << 20)
    code, err, _ = _run(config, env)
    assert code == 0, err
    assert len(_archives(azure_connection_string, container)) == 2


def test_storage_stalled_mid_upload_ends_the_run_at_its_timeout_and_commits_nothing(
        baseline: tuple[Path, dict[str, str], str], proxy: FaultProxy, azure_connection_string: str,
        container: str) -> None:
    config, env, first = baseline
    proxy.stall_after(3 << 20)
    code, err, elapsed = _run(config, env)
    assert code == 124, err
    assert elapsed < 40 + 45, f"the run took {elapsed:.0f} s for a 40 s timeout:\n{err}"
    assert "timeout" in err
    proxy.clear()
    assert _archives(azure_connection_string, container) == [first]
    _verify(config, first, azure_connection_string)
    code, err, _ = _run(config, env)
    assert code == 0, err


def test_storage_down_before_the_run_fails_with_74_within_the_bound(
        baseline: tuple[Path, dict[str, str], str], proxy: FaultProxy, azure_connection_string: str,
        container: str) -> None:
    config, env, first = baseline
    proxy.refuse()
    code, err, elapsed = _run(config, env)
    assert code == 74, err
    assert elapsed < 180, f"an unreachable storage took {elapsed:.0f} s to fail"
    assert "unreachable" in err and "Connection reset" in err
    proxy.clear()
    assert _archives(azure_connection_string, container) == [first]
