"""Azure faults that kill a process: backupctl SIGKILLed mid-upload (its lease outlives it), Azurite
SIGKILLed mid-upload, and Azurite down before a run starts.

Each test starts an Azurite of its own (never the session's: it is killed here), runs the real `backupctl`
as a subprocess against the real SecantusDB, and checks what an operator relies on: the documented exit
code, a bounded and measured time to fail, retries logged as they happen, nothing partial visible, the
earlier backup still verifying, the status record, and the next run succeeding once the fault is gone.
"""

from __future__ import annotations

import itertools
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
from tests.daemon_helpers import DaemonProcess, post, start_daemon
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
    refused_at = datetime.now(UTC)
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
    # "At the latest": never before the dead holder's last renewal could expire, at most a lease from now.
    assert -1 <= (expires_by - killed_at).total_seconds() - LEASE, line
    assert (expires_by - refused_at).total_seconds() <= LEASE + 2, line

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


def _daemon_config(tmp_path: Path, db: str) -> Path:
    config = _config(tmp_path, db)
    text = config.read_text().replace("plans:\n", "log_format: json\nserver:\n  api_token: ${BACKUP_API_TOKEN:-}\n"
                                      "  status_refresh: 1s\nplans:\n", 1)
    config.write_text(text.replace("    engine: native\n", '    engine: native\n    schedule: "0 0 1 1 *"\n', 1))
    return config


def _finished_runs(daemon: DaemonProcess) -> float:
    return sum(daemon.value("backup_runs_total", plan="main", result=r) or 0.0 for r in ("success", "failure"))


def _log_lines(daemon: DaemonProcess, since: float) -> list[tuple[float, str]]:
    """Return (UNIX time, message) of the daemon's JSON log lines from `since` on."""
    lines = []
    for raw in daemon.log().splitlines():
        try:
            entry = json.loads(raw)
        except ValueError:
            continue
        stamp = datetime.fromisoformat(entry["time"]).timestamp()
        if stamp >= since:
            lines.append((stamp, str(entry.get("message", ""))))
    return lines


def test_azurite_killed_mid_upload_fails_the_run_with_74_within_the_bound_logging_every_retry(
        tmp_path: Path, own_azurite: servers.Server, slow_mongo: FaultProxy, random_db: str) -> None:
    config = _daemon_config(tmp_path, random_db)
    env = _env(own_azurite, slow_mongo) | {"BACKUP_API_TOKEN": "t0ken"}
    daemon = start_daemon(config, env, tmp_path / "logs")
    try:
        def run_now() -> float:
            done = _finished_runs(daemon)
            code, body = post(f"{daemon.url}/api/v1/plans/main/run", "t0ken")
            assert code == 202, body
            return done

        before = run_now()
        servers.wait_until(lambda: _finished_runs(daemon) > before, 60, "the first run")
        assert daemon.value("backup_last_exit_code", plan="main") == 0, daemon.log()
        [good] = _archives(own_azurite)
        success = daemon.value("backup_last_success_timestamp_seconds", plan="main")

        slow_mongo.bandwidth(1 << 20)
        before = run_now()
        servers.wait_until(lambda: _staged_blocks(own_azurite) > 0, 60, "the run to stage a block")
        os.killpg(own_azurite.process.pid, signal.SIGKILL)
        own_azurite.process.wait(10)
        killed = time.time()
        servers.wait_until(lambda: _finished_runs(daemon) > before, 200, "the run to fail")
        took = time.time() - killed
        slow_mongo.clear()
        log = _log_lines(daemon, killed)
        print(f"Azurite killed mid-upload: the run failed {took:.1f} s later")
        print("\n".join(f"{t - killed:6.1f} {m}" for t, m in log))
        assert daemon.value("backup_last_exit_code", plan="main") == 74
        assert took < 60, f"a dead storage took {took:.0f} s to fail the run"
        assert daemon.value("backup_last_success_timestamp_seconds", plan="main") == success
        assert servers.http_ok(f"{daemon.url}/healthz")
        # Every retry of the upload is logged as it happens: no silence longer than one backoff (8.5 +- 1 s)
        # and an attempt, from the kill to the failure.
        upload = [t for t, m in log if ".archive.gz" in m and "retry" in m]
        assert len(upload) >= 3, log
        stamps = [killed, *upload, *(t for t, m in log if m.startswith("backup failed (exit 74)"))]
        assert max(b - a for a, b in itertools.pairwise(stamps)) < 15, log
        assert any("unreachable" in m and "Connection refused" in m for _, m in log), log

        restarted = servers.start_azurite(tmp_path / "logs", tmp_path / "azurite-data", port=own_azurite.port)
        own_azurite.process = restarted.process
        assert _archives(own_azurite) == [good], "nothing of the failed run may be visible"
        _verify(config, own_azurite, good)
        # Once storage answers again (and the lease the failed run could not release has expired), the daemon
        # records the failure it could not write then; its gauges never fall back to the older attempt.
        servers.wait_until(lambda: (_record(own_azurite).get("last_attempt") or {}).get("exit_code") == 74,
                           LEASE + 15, "the failure to be recorded")
        record = _record(own_azurite)
        assert record["running"] is None and record["last_success"]["finished"] == success
        assert "unreachable" in record["last_attempt"]["message"]
        assert daemon.value("backup_last_exit_code", plan="main") == 74
        assert daemon.value("backup_last_success_timestamp_seconds", plan="main") == success
        before = run_now()
        servers.wait_until(lambda: _finished_runs(daemon) > before, 90, "the run after Azurite is back")
        assert daemon.value("backup_last_exit_code", plan="main") == 0, daemon.log()
        assert len(_archives(own_azurite)) == 2
    finally:
        daemon.stop()


def test_azurite_down_before_the_run_fails_it_with_74_in_seconds_and_the_next_run_succeeds(
        tmp_path: Path, own_azurite: servers.Server, slow_mongo: FaultProxy, random_db: str) -> None:
    config = _config(tmp_path, random_db)
    env = _env(own_azurite, slow_mongo)
    good, success = _good_backup(config, env, own_azurite)
    own_azurite.stop(grace=1)  # the process is gone and its port closed: connections are refused
    assert not servers.port_open(own_azurite.port)

    started = time.monotonic()
    down = backupctl(["run-now", "--config", str(config)], env)
    took = time.monotonic() - started
    print(f"Azurite down before the run: the run failed in {took:.1f} s")
    assert down.returncode == 74, down.stderr
    assert took < 20, f"a refused storage took {took:.0f} s to fail the run"
    assert "Traceback" not in down.stderr
    line = down.stderr.strip().splitlines()[-1]
    assert f"127.0.0.1:{own_azurite.port} is unreachable" in line and "Connection refused" in line, line
    assert "retry 1 of 1" in down.stderr, "the retry is logged"
    started = time.monotonic()
    shown = backupctl(["status", "--config", str(config)], env)
    assert shown.returncode == 74 and time.monotonic() - started < 20, shown.stderr

    restarted = servers.start_azurite(tmp_path / "logs", tmp_path / "azurite-data", port=own_azurite.port)
    own_azurite.process = restarted.process
    assert _archives(own_azurite) == [good]
    assert _record(own_azurite)["last_success"]["finished"] == success
    _verify(config, own_azurite, good)
    ok = backupctl(["run-now", "--config", str(config)], env)
    assert ok.returncode == 0, ok.stderr
    assert len(_archives(own_azurite)) == 2
