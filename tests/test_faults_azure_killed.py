"""Azure faults that kill a process: backupctl SIGKILLed mid-upload (its lease outlives it), Azurite
SIGKILLed mid-upload, and Azurite down before a run starts.

Each test starts an Azurite of its own (never the session's: it is killed here), runs the real `backupctl`
as a subprocess against the real SecantusDB, and checks what an operator relies on: the documented exit
code, a bounded and measured time to fail, retries logged as they happen, nothing partial visible, the
earlier backup still verifying, the status record, and the next run succeeding once the fault is gone.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from azure.storage.blob import BlobServiceClient, ContainerClient
from bson import Binary
from pymongo import MongoClient

from tests import servers
from tests.cli_helpers import backupctl, base_env, native_azure_config
from tests.faultproxy import FaultProxy, fault_proxy

DOCS = 1500  # ~6 MiB of incompressible BSON: three 2 MiB blocks
PAYLOAD = 4096
LEASE = 15  # the shortest lease Azure allows: a killed run's lock frees within it
STATUS = "prod/main/_status.json"
LOCK = "prod/main/_lock"


@pytest.fixture(scope="module")
def random_db(mongo_client: MongoClient) -> Iterator[str]:  # type: ignore[type-arg]
    prefix = f"fk{uuid.uuid4().hex[:6]}"
    mongo_client[f"{prefix}_blobs"]["chunks"].insert_many(
        [{"_id": i, "data": Binary(os.urandom(PAYLOAD))} for i in range(DOCS)])
    yield prefix
    mongo_client.drop_database(f"{prefix}_blobs")


@pytest.fixture
def own_azurite(tmp_path: Path) -> Iterator[servers.Server]:
    """An Azurite of this test's own (killed and restarted by the test), with a container 'backups'."""
    server = servers.start_azurite(tmp_path / "logs", tmp_path / "azurite-data")
    service = BlobServiceClient.from_connection_string(server.extra["connection_string"])
    try:
        service.create_container("backups")
    finally:
        service.close()
    yield server
    server.stop(grace=1)


@pytest.fixture
def slow_mongo(mongo_uri: str) -> Iterator[FaultProxy]:
    """A byte proxy in front of the session's SecantusDB: a bandwidth limit makes a dump last seconds."""
    port = int(mongo_uri.split(":")[2].split("/")[0])
    with fault_proxy(port, http=False) as proxy:
        yield proxy


def _config(tmp_path: Path, db: str) -> Path:
    path = native_azure_config(tmp_path / "backup.yml", "backups", db, extra="    timeout: 120s\n")
    text = path.read_text().replace(
        "storage:\n", f"storage:\n  block_size: 2MiB\n  max_concurrency: 2\n  lease_seconds: {LEASE}\n", 1)
    path.write_text(text)
    return path.resolve()


def _env(azurite: servers.Server, proxy: FaultProxy) -> dict[str, str]:
    return base_env(MONGODB_URI=f"mongodb://127.0.0.1:{proxy.port}/?directConnection=true",
                    AZURE_STORAGE_CONNECTION_STRING=azurite.extra["connection_string"])


def _container(azurite: servers.Server) -> ContainerClient:
    return ContainerClient.from_connection_string(azurite.extra["connection_string"], "backups")


def _archives(azurite: servers.Server) -> list[str]:
    with _container(azurite) as client:
        return sorted(b.name for b in client.list_blobs() if b.name.endswith(".archive.gz"))


def _record(azurite: servers.Server) -> dict:  # type: ignore[type-arg]
    with _container(azurite) as client:
        return json.loads(client.get_blob_client(STATUS).download_blob().readall())  # type: ignore[no-any-return]


def _staged_blocks(azurite: servers.Server) -> int:
    """Return how many blocks the run under way has staged (0 before it recorded its start)."""
    running = _record(azurite).get("running")
    if not running or not running.get("name"):
        return 0
    with _container(azurite) as client:
        try:
            _committed, uncommitted = client.get_blob_client(running["name"]).get_block_list("uncommitted")
        except Exception:
            return 0
    return len(uncommitted)


def _start_run(config: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "backup_exporter.cli.main", "run-now", "--config", str(config)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def _verify(config: Path, azurite: servers.Server, name: str) -> None:
    env = base_env(AZURE_STORAGE_CONNECTION_STRING=azurite.extra["connection_string"], MONGODB_URI="mongodb://unused/")
    result = backupctl(["verify", "--config", str(config), name], env)
    assert result.returncode == 0, result.stderr


def _status(config: Path, env: dict[str, str]) -> tuple[dict, str]:  # type: ignore[type-arg]
    as_json = backupctl(["status", "--json", "--config", str(config)], env)
    assert as_json.returncode == 0, as_json.stderr
    table = backupctl(["status", "--config", str(config)], env)
    assert table.returncode == 0, table.stderr
    [row] = json.loads(as_json.stdout)
    return row, table.stdout


def _good_backup(config: Path, env: dict[str, str], azurite: servers.Server) -> tuple[str, float]:
    first = backupctl(["run-now", "--config", str(config)], env)
    assert first.returncode == 0, first.stderr
    [good] = _archives(azurite)
    return good, _record(azurite)["last_success"]["finished"]


def test_a_run_sigkilled_mid_upload_leaves_a_stale_lease_that_the_next_run_names_and_outlives(
        tmp_path: Path, own_azurite: servers.Server, slow_mongo: FaultProxy, random_db: str) -> None:
    config = _config(tmp_path, random_db)
    env = _env(own_azurite, slow_mongo)
    good, success = _good_backup(config, env, own_azurite)

    slow_mongo.bandwidth(1 << 20)  # ~6 s of dump: killed after its first block is staged
    run = _start_run(config, env)
    servers.wait_until(lambda: _staged_blocks(own_azurite) > 0, 60, "the run to stage a block")
    os.killpg(run.pid, signal.SIGKILL)
    killed_at = datetime.now(UTC)
    run.communicate(timeout=10)
    slow_mongo.clear()

    # A new run at once: the lease is still held by the dead process. It fails at once with 75, naming the
    # holder recorded on the lock blob and when its lease frees at the latest.
    started = time.monotonic()
    again = backupctl(["run-now", "--config", str(config)], env)
    refused_in = time.monotonic() - started
    assert again.returncode == 75, again.stderr
    assert refused_in < 10, f"a locked plan took {refused_in:.1f} s to refuse"
    assert "Traceback" not in again.stderr
    line = again.stderr.strip().splitlines()[-1]
    holder = f"{socket.gethostname()} pid {run.pid} (run-now)"
    assert f"is locked by {holder}" in line, line
    assert f"no process {run.pid} runs on this host now" in line, line
    expires = re.search(r"expires by (\S+) at the latest", line)
    assert expires, line
    expires_by = datetime.strptime(expires.group(1), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert 0 < (expires_by - killed_at).total_seconds() <= LEASE + 2, line

    # Meanwhile `status` shows the killed attempt as one that never finished, never as a success.
    row, table = _status(config, env)
    assert row["last_result"] == "failure" and row["last_exit_code"] == 137, row
    assert "never finished" in row["last_message"]
    assert row["last_success"] is not None and abs(
        datetime.fromisoformat(row["last_success"].replace("Z", "+00:00")).timestamp() - success) < 1
    assert "137" in table and "never finished" in table
    assert _archives(own_azurite) == [good], "uncommitted blocks must never show as a blob"
    _verify(config, own_azurite, good)

    # Once the lease has expired, the next run proceeds, records the killed attempt as failed, and succeeds.
    time.sleep(max(0.0, (expires_by - datetime.now(UTC)).total_seconds()))
    ok = backupctl(["run-now", "--config", str(config)], env)
    assert ok.returncode == 0, ok.stderr
    assert "never finished" in ok.stderr
    assert len(_archives(own_azurite)) == 2
    record = _record(own_azurite)
    assert record["running"] is None and record["last_attempt"]["result"] == "success"
