"""Faults of the parts around a run: MongoDB killed mid-dump, a full local disk, a storage outage under
the daemon. Each asserts the documented exit code, nothing partial stored, the earlier backup intact and
verifiable, the last success kept, a bounded run time, and recovery once the fault is gone."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from bson import Binary
from pymongo import MongoClient

from tests import servers
from tests.cli_helpers import backupctl, base_env
from tests.daemon_helpers import post, start_daemon
from tests.faultproxy import FaultProxy, fault_proxy

DOCS = 1500
PAYLOAD = 4096  # ~6 MiB of incompressible documents


def _load(uri: str, db: str) -> None:
    client: MongoClient = MongoClient(uri, serverSelectionTimeoutMS=5000)  # type: ignore[type-arg]
    try:
        client[db]["chunks"].insert_many([{"_id": i, "data": Binary(os.urandom(PAYLOAD))} for i in range(DOCS)])
    finally:
        client.close()


def _local_config(path: Path, storage: Path, db: str, engine: str = "native", extra: str = "") -> Path:
    storage.mkdir(parents=True, exist_ok=True)
    path.write_text(f"""storage:
  path: {storage}
plans:
  main:
    mongodb_uri: ${{MONGODB_URI}}
    engine: {engine}
    mongodump_path: ${{MONGODUMP:-mongodump}}
    include: ["{db}.*"]
    timeout: 60s
{extra}""")
    return path


def _archives(storage: Path) -> list[str]:
    return sorted(str(p.relative_to(storage)) for p in storage.rglob("*.archive.gz"))


def _status(storage: Path) -> dict:  # type: ignore[type-arg]
    return json.loads((storage / "main" / "_status.json").read_text())  # type: ignore[no-any-return]


@pytest.fixture
def own_mongo(tmp_path: Path) -> Iterator[servers.Server]:
    """A SecantusDB of this test's own, so that killing it harms no other test."""
    server = servers.start_secantus(tmp_path / "logs")
    yield server
    server.stop(grace=2)


ENGINES = ["native", pytest.param("mongodump", marks=pytest.mark.skipif(
    not os.environ.get("MONGO_TOOLS_BIN"), reason="real mongodump not found: set MONGO_TOOLS_BIN "
    "(scripts/test does when ../shared/mongo-tools exists)"))]


@pytest.mark.parametrize("engine", ENGINES)
def test_mongodb_killed_mid_dump_fails_the_run_and_keeps_the_last_backup(
        engine: str, tmp_path: Path, own_mongo: servers.Server) -> None:
    db = f"kill{uuid.uuid4().hex[:6]}"
    _load(f"mongodb://{own_mongo.address}/?directConnection=true", db)
    storage = tmp_path / "storage"
    config = _local_config(tmp_path / "backup.yml", storage, db, engine)
    tools = os.environ.get("MONGO_TOOLS_BIN", "")
    with fault_proxy(own_mongo.port, http=False) as proxy:
        env = base_env(MONGODB_URI=f"mongodb://127.0.0.1:{proxy.port}/?directConnection=true"
                                   f"&serverSelectionTimeoutMS=3000&socketTimeoutMS=10000",
                       MONGODUMP=str(Path(tools) / "mongodump") if tools else "mongodump")
        first = backupctl(["run-now", "--config", str(config)], env)
        assert first.returncode == 0, first.stderr
        [good] = _archives(storage)
        success = _status(storage)["last_success"]
        proxy.bandwidth(1 << 20)  # the dump now takes several seconds: long enough to kill the server in it
        started = time.monotonic()
        run = subprocess.Popen([sys.executable, "-m", "backup_exporter.cli.main", "run-now", "--config", str(config)],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        servers.wait_until(lambda: proxy.requests > 0 or True, 5, "dump start")
        time.sleep(1.5)
        os.killpg(own_mongo.process.pid, signal.SIGKILL)
        _out, err = run.communicate(timeout=120)
        elapsed = time.monotonic() - started
    assert run.returncode not in (0, 70), err
    assert "Traceback" not in err
    # Bounded by the driver's socket timeout (10 s here) plus mongodump's own reconnect attempts.
    assert elapsed < 120, f"the run took {elapsed:.0f} s to notice the dead server"
    assert _archives(storage) == [good]
    record = _status(storage)
    assert record["last_success"] == success
    assert record["last_attempt"]["result"] == "failure"
    assert record["last_attempt"]["exit_code"] == run.returncode
    verify = backupctl(["verify", "--config", str(config), good], base_env(MONGODB_URI="mongodb://unused/"))
    assert verify.returncode == 0, verify.stderr


def _limit_file_size(limit: int) -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def test_a_full_local_disk_fails_with_74_and_leaves_no_file_under_a_backup_name(
        tmp_path: Path, mongo_client: MongoClient, mongo_uri: str) -> None:  # type: ignore[type-arg]
    db = f"full{uuid.uuid4().hex[:6]}"
    mongo_client[db]["chunks"].insert_many([{"_id": i, "data": Binary(os.urandom(PAYLOAD))} for i in range(DOCS)])
    try:
        storage = tmp_path / "storage"
        config = _local_config(tmp_path / "backup.yml", storage, db)
        env = base_env(MONGODB_URI=mongo_uri)
        # A file-size limit stands in for a full volume: every write past 1 MiB fails with EFBIG.
        started = time.monotonic()
        result = subprocess.run([sys.executable, "-m", "backup_exporter.cli.main", "run-now", "--config",
                                 str(config)], env=env, capture_output=True, text=True, timeout=120,
                                preexec_fn=lambda: _limit_file_size(1 << 20))
        assert result.returncode == 74, result.stderr
        assert time.monotonic() - started < 60
        assert "Traceback" not in result.stderr
        assert "local storage" in result.stderr.splitlines()[-1]
        assert _archives(storage) == []
        # The plan's records and its lock file (kept on purpose: see storage/local.py) are not backups.
        leftovers = [p.name for p in storage.rglob("*") if p.is_file() and not p.name.startswith("_")]
        assert leftovers == [], f"temporary files left behind: {leftovers}"
        ok = backupctl(["run-now", "--config", str(config)], env)
        assert ok.returncode == 0, ok.stderr
    finally:
        mongo_client.drop_database(db)


def test_the_daemon_rides_out_a_storage_outage_and_recovers_without_restart(
        tmp_path: Path, azurite: servers.Server, container: str, mongo_uri: str,
        mongo_client: MongoClient) -> None:  # type: ignore[type-arg]
    db = f"out{uuid.uuid4().hex[:6]}"
    mongo_client[db]["c"].insert_many([{"_id": i, "v": "x" * 100} for i in range(200)])
    config = tmp_path / "backup.yml"
    config.write_text(f"""storage:
  container: {container}
  connection_string: ${{AZURE_STORAGE_CONNECTION_STRING}}
server:
  api_token: ${{BACKUP_API_TOKEN}}
  status_refresh: 1s
plans:
  main:
    mongodb_uri: ${{MONGODB_URI}}
    engine: native
    schedule: "0 0 1 1 *"
    include: ["{db}.*"]
    timeout: 60s
""")
    proxy: FaultProxy
    with fault_proxy(azurite.port) as proxy:
        env = base_env(MONGODB_URI=mongo_uri, BACKUP_API_TOKEN="t0ken",
                       AZURE_STORAGE_CONNECTION_STRING=servers.azurite_connection_string(proxy.port))
        daemon = start_daemon(config, env, tmp_path / "logs")
        try:
            def run_and_wait() -> float:
                # Until the API says the run is finished: the counters move when its result is recorded,
                # but the run (retention, stored totals) still holds the plan for a moment after that.
                code, body = post(f"{daemon.url}/api/v1/plans/main/run", "t0ken")
                assert code == 202, body

                def this_run() -> dict[str, Any]:
                    return next(r for r in daemon.status()["runs"] if r["id"] == body["id"])

                servers.wait_until(lambda: this_run()["state"] == "finished", 120, "the run to finish")
                return float(this_run()["exit_code"])

            assert run_and_wait() == 0
            success = daemon.value("backup_last_success_timestamp_seconds", plan="main")
            proxy.refuse()
            servers.wait_until(lambda: not servers.http_ok(f"{daemon.url}/readyz"), 30, "/readyz to flip")
            assert run_and_wait() == 74
            assert daemon.value("backup_runs_total", plan="main", result="failure") == 1
            assert daemon.value("backup_last_success_timestamp_seconds", plan="main") == success
            assert servers.http_ok(f"{daemon.url}/healthz"), "a storage outage is no reason to restart"
            proxy.clear()
            servers.wait_until(lambda: servers.http_ok(f"{daemon.url}/readyz"), 30, "/readyz to recover")
            assert run_and_wait() == 0
            assert daemon.value("backup_runs_total", plan="main", result="success") == 2
        finally:
            daemon.stop()
            mongo_client.drop_database(db)


def test_a_run_killed_with_sigkill_shows_as_failed_and_the_next_run_records_it(
        tmp_path: Path, mongo_client: MongoClient, mongo_uri: str) -> None:  # type: ignore[type-arg]
    db = f"sk{uuid.uuid4().hex[:6]}"
    mongo_client[db]["chunks"].insert_many([{"_id": i, "data": Binary(os.urandom(PAYLOAD))} for i in range(DOCS)])
    try:
        storage = tmp_path / "storage"
        config = _local_config(tmp_path / "backup.yml", storage, db)
        with fault_proxy(int(mongo_uri.split(":")[2].split("/")[0]), http=False) as proxy:
            proxy.bandwidth(1 << 20)  # slow enough to be killed mid-dump
            env = base_env(MONGODB_URI=f"mongodb://127.0.0.1:{proxy.port}/?directConnection=true")
            run = subprocess.Popen([sys.executable, "-m", "backup_exporter.cli.main", "run-now", "--config",
                                    str(config)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                   start_new_session=True)
            status_file = storage / "main" / "_status.json"
            servers.wait_until(lambda: status_file.exists() and "running" in status_file.read_text(), 30,
                               "the run to record its start")
            os.killpg(run.pid, signal.SIGKILL)
            run.wait(10)
            proxy.clear()
            assert _archives(storage) == []
            # The lock died with the process: `status` shows the attempt as the failure it was.
            shown = backupctl(["status", "--json", "--config", str(config)], env)
            assert shown.returncode == 0, shown.stderr
            [row] = json.loads(shown.stdout)
            assert row["last_exit_code"] == 137 and row["last_result"] == "failure"
            assert "never finished" in row["last_message"]
            # The next run records it as failed for good, then succeeds.
            again = backupctl(["run-now", "--config", str(config)], env)
            assert again.returncode == 0, again.stderr
            assert "never finished" in again.stderr
            record = _status(storage)
            assert record["running"] is None and record["last_attempt"]["result"] == "success"
    finally:
        mongo_client.drop_database(db)
