"""The daemon: schedules, metrics over real HTTP, shared status, the run API, shutdown."""

from __future__ import annotations

import gzip
import http.client
import json
import math
import os
import signal
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from bson import Binary

from backup_exporter.core.status import Attempt, PlanStatus
from backup_exporter.storage.local import LocalStorage
from tests import servers
from tests.cli_helpers import FAKE_MONGODUMP, backupctl, base_env, start_backupctl
from tests.daemon_helpers import DaemonProcess, post, sample, start_daemon
from tests.faultproxy import fault_proxy

PER_PLAN_GAUGES = [
    "backup_last_success_timestamp_seconds", "backup_last_exit_code", "backup_last_attempt_timestamp_seconds",
    "backup_last_duration_seconds", "backup_last_size_bytes", "backup_in_progress",
    "backup_next_run_timestamp_seconds", "backup_max_age_seconds", "backup_stored_backups", "backup_stored_bytes",
    "backup_last_restore_check_timestamp_seconds", "backup_last_restore_check_success",
]
PER_PLAN_COUNTERS = ["backup_uploaded_bytes_total", "backup_retention_deleted_total"]
TOKEN = "test-token-123"


def write_config(path: Path, store: Path, plans: dict[str, str], extra_plan: str = "",
                 server: str = "") -> Path:
    store.mkdir(parents=True, exist_ok=True)
    body = "\n".join(f"""  {name}:
    mongodb_uri: mongodb://127.0.0.1:1/
    schedule: "{schedule}"
    engine: mongodump
    mongodump_path: {FAKE_MONGODUMP}
{extra_plan}""" for name, schedule in plans.items())
    path.write_text(f"""storage:
  type: local
  path: {store}
server:
  api_token: {TOKEN}
  status_refresh: 1s
  grace_period: 3s
{server}
plans:
{body}
""")
    return path


@pytest.fixture
def daemons(tmp_path: Path):  # type: ignore[no-untyped-def]
    started: list[DaemonProcess] = []

    def start(config: Path, **env: str) -> DaemonProcess:
        daemon = start_daemon(config, base_env(**env), tmp_path / "logs")
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        daemon.stop(signal.SIGKILL)


def test_every_series_exists_for_every_plan_at_startup(tmp_path: Path, daemons) -> None:  # type: ignore[no-untyped-def]
    cfg = write_config(tmp_path / "c.yml", tmp_path / "store", {"orders": "0 3 * * *", "users": "0 4 * * *"})
    daemon = daemons(cfg)
    text = daemon.metrics()
    for plan in ("orders", "users"):
        for name in PER_PLAN_GAUGES + PER_PLAN_COUNTERS:
            assert daemon.value(name, plan=plan) is not None, f"{name}{{plan={plan}}} missing"
        for result in ("success", "failure", "skipped"):
            assert daemon.value("backup_runs_total", plan=plan, result=result) == 0
        assert daemon.value("backup_max_age_seconds", plan=plan) == 28800
        assert daemon.value("backup_last_success_timestamp_seconds", plan=plan) == 0
    assert "# HELP backup_last_success_timestamp_seconds UNIX time" in text
    assert "backup_exporter_build_info{" in text
    next_run = daemon.value("backup_next_run_timestamp_seconds", plan="orders")
    assert next_run is not None and next_run > time.time()
    assert servers.http_ok(f"{daemon.url}/readyz")


def test_a_scheduled_run_happens_and_updates_the_metrics(tmp_path: Path, daemons) -> None:  # type: ignore[no-untyped-def]
    cfg = write_config(tmp_path / "c.yml", tmp_path / "store", {"main": "* * * * *"})
    daemon = daemons(cfg, FAKE_MONGODUMP_MODE="ok")
    servers.wait_until(lambda: (daemon.value("backup_runs_total", plan="main", result="success") or 0) >= 1, 90,
                       "a scheduled run")
    assert daemon.value("backup_last_exit_code", plan="main") == 0
    assert time.time() - (daemon.value("backup_last_success_timestamp_seconds", plan="main") or 0) < 120
    assert (daemon.value("backup_last_size_bytes", plan="main") or 0) > 100_000
    assert (daemon.value("backup_uploaded_bytes_total", plan="main") or 0) > 100_000
    assert daemon.value("backup_stored_backups", plan="main") == 1
    assert daemon.value("backup_in_progress", plan="main") == 0


def test_kill_9_and_restart_keeps_the_last_success(tmp_path: Path, daemons) -> None:  # type: ignore[no-untyped-def]
    cfg = write_config(tmp_path / "c.yml", tmp_path / "store", {"main": "0 3 * * *"})
    env = {"FAKE_MONGODUMP_MODE": "ok"}
    first = daemons(cfg, **env)
    code, _ = post(f"{first.url}/api/v1/plans/main/run", TOKEN)
    assert code == 202
    servers.wait_until(lambda: (first.value("backup_runs_total", plan="main", result="success") or 0) >= 1, 30,
                       "the API run")
    success = first.value("backup_last_success_timestamp_seconds", plan="main")
    assert success and success > 0
    first.stop(signal.SIGKILL)
    second = daemons(cfg, **env)
    # The very first scrape after the restart already has it.
    assert second.value("backup_last_success_timestamp_seconds", plan="main") == success
    assert second.value("backup_last_exit_code", plan="main") == 0


def test_a_backup_made_by_run_now_in_another_process_shows_in_the_daemon(  # type: ignore[no-untyped-def]
        tmp_path: Path, daemons) -> None:
    cfg = write_config(tmp_path / "c.yml", tmp_path / "store", {"main": "0 3 * * *"})
    daemon = daemons(cfg)
    assert daemon.value("backup_last_success_timestamp_seconds", plan="main") == 0
    result = backupctl(["run-now", "--config", str(cfg)], base_env(FAKE_MONGODUMP_MODE="ok"))
    assert result.returncode == 0, result.stderr
    servers.wait_until(lambda: (daemon.value("backup_last_success_timestamp_seconds", plan="main") or 0) > 0, 15,
                       "the daemon to pick up the other process's backup")
    failed = backupctl(["run-now", "--config", str(cfg)], base_env(FAKE_MONGODUMP_MODE="fail"))
    assert failed.returncode == 1
    servers.wait_until(lambda: daemon.value("backup_last_exit_code", plan="main") == 1, 15, "the failure to show")
    assert (daemon.value("backup_last_success_timestamp_seconds", plan="main") or 0) > 0


def test_the_run_api_needs_the_token_refuses_overlap_and_reports_progress(  # type: ignore[no-untyped-def]
        tmp_path: Path, daemons) -> None:
    cfg = write_config(tmp_path / "c.yml", tmp_path / "store", {"main": "0 3 * * *"})
    daemon = daemons(cfg, FAKE_MONGODUMP_MODE="sleepy", FAKE_MONGODUMP_SECONDS="3")
    assert post(f"{daemon.url}/api/v1/plans/main/run")[0] == 401
    assert post(f"{daemon.url}/api/v1/plans/main/run", "wrong")[0] == 401
    assert post(f"{daemon.url}/api/v1/plans/nope/run", TOKEN)[0] == 404
    code, run = post(f"{daemon.url}/api/v1/plans/main/run", TOKEN)
    assert code == 202 and run["state"] == "running"
    assert post(f"{daemon.url}/api/v1/plans/main/run", TOKEN)[0] == 409
    servers.wait_until(lambda: daemon.value("backup_in_progress", plan="main") == 1, 10, "backup_in_progress 1")
    servers.wait_until(lambda: daemon.status()["runs"][0]["dumped_bytes"] > 0, 10, "progress")
    servers.wait_until(lambda: daemon.status()["runs"][0]["state"] == "finished", 30, "the run to finish")
    finished = daemon.status()["runs"][0]
    assert finished["exit_code"] == 0 and finished["size"] > 0
    # run-now --daemon starts a run through the API and waits for its exit code.
    env = base_env(BACKUP_API_TOKEN=TOKEN)
    result = backupctl(["run-now", "--config", str(cfg), "--daemon", daemon.url], env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("main/")


def test_the_run_api_is_off_without_a_token(tmp_path: Path, daemons) -> None:  # type: ignore[no-untyped-def]
    cfg = write_config(tmp_path / "c.yml", tmp_path / "store", {"main": "0 3 * * *"})
    cfg.write_text(cfg.read_text().replace(f"  api_token: {TOKEN}\n", ""))
    daemon = daemons(cfg)
    code, body = post(f"{daemon.url}/api/v1/plans/main/run", TOKEN)
    assert code == 404 and "off" in body["error"]


@pytest.mark.parametrize(("signum", "exit_code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_stop_signal_mid_backup_records_an_interruption_and_leaves_nothing(  # type: ignore[no-untyped-def]
        signum: signal.Signals, exit_code: int, tmp_path: Path, daemons) -> None:
    record = tmp_path / "record.jsonl"
    store = tmp_path / "store"
    cfg = write_config(tmp_path / "c.yml", store, {"main": "0 3 * * *"})
    daemon = daemons(cfg, FAKE_MONGODUMP_MODE="slow", FAKE_MONGODUMP_RECORD=str(record))
    assert post(f"{daemon.url}/api/v1/plans/main/run", TOKEN)[0] == 202
    servers.wait_until(lambda: record.exists() and "grandchild" in record.read_text(), 30, "the dump to start")
    started = time.monotonic()
    code = daemon.stop(signum)
    assert time.monotonic() - started < 3 + 5, "exceeded the grace period"
    assert code == 0, daemon.log()
    lines = [json.loads(line) for line in record.read_text().splitlines()]
    for pid in (lines[0]["pid"], next(x["grandchild"] for x in lines if "grandchild" in x)):
        assert not Path(f"/proc/{pid}").exists() or Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    assert not list(store.rglob("*.archive.gz"))
    stored = json.loads((store / "main" / "_status.json").read_text())
    assert stored["last_attempt"]["result"] == "interrupted"
    assert stored["last_attempt"]["exit_code"] == exit_code
    assert f"interrupted by {signum.name}" in stored["last_attempt"]["message"]


def test_a_run_missed_while_down_is_caught_up_once(tmp_path: Path, daemons) -> None:  # type: ignore[no-untyped-def]
    store = tmp_path / "store"
    store.mkdir()
    storage = LocalStorage(store)
    long_ago = time.time() - 5 * 3600
    storage.put("main/_status.json", PlanStatus(
        "main", last_attempt=Attempt(long_ago, long_ago + 5, 0, "success", size=10),
        last_success=Attempt(long_ago, long_ago + 5, 0, "success", size=10)).to_json())
    cfg = write_config(tmp_path / "c.yml", store, {"main": "0 * * * *"})  # hourly: five slots were missed
    daemon = daemons(cfg, FAKE_MONGODUMP_MODE="ok")
    servers.wait_until(lambda: (daemon.value("backup_runs_total", plan="main", result="success") or 0) >= 1, 30,
                       "the catch-up run")
    time.sleep(2)
    assert daemon.value("backup_runs_total", plan="main", result="success") == 1
    assert "missed while the daemon was down" in daemon.log()


def test_a_fresh_plan_is_not_caught_up(tmp_path: Path, daemons) -> None:  # type: ignore[no-untyped-def]
    cfg = write_config(tmp_path / "c.yml", tmp_path / "store", {"main": "0 * * * *"})
    daemon = daemons(cfg, FAKE_MONGODUMP_MODE="ok")
    time.sleep(2)
    assert daemon.value("backup_runs_total", plan="main", result="success") == 0
    assert "missed while the daemon was down" not in daemon.log()
    assert not (tmp_path / "store" / "main" / "_status.json").exists()


STUBBORN_DUMP = """#!/bin/sh
# A dump tool that ignores SIGTERM and a closed stdout: only the SIGKILL after the grace period stops it.
case "$*" in *--version*) echo "mongodump version: 100.8.0-stubborn"; exit 0;; esac
trap '' TERM PIPE
echo $$ >> "$STUBBORN_RECORD"
while :; do printf 'x' 2>/dev/null; sleep 0.1; done
"""


def test_shutdown_kills_a_dump_that_ignores_sigterm_within_the_grace_period_and_refuses_new_runs(
        tmp_path: Path, daemons) -> None:  # type: ignore[no-untyped-def]
    tool = tmp_path / "stubborn-mongodump"
    tool.write_text(STUBBORN_DUMP)
    tool.chmod(0o755)
    record = tmp_path / "pids"
    store = tmp_path / "store"
    cfg = write_config(tmp_path / "c.yml", store, {"main": "0 3 * * *", "other": "0 4 * * *"})
    cfg.write_text(cfg.read_text().replace("grace_period: 3s", "grace_period: 2s")
                   .replace(f"mongodump_path: {FAKE_MONGODUMP}", f"mongodump_path: {tool}"))
    daemon = daemons(cfg, STUBBORN_RECORD=str(record))
    assert post(f"{daemon.url}/api/v1/plans/main/run", TOKEN)[0] == 202
    servers.wait_until(lambda: record.exists() and record.read_text().strip() != "", 30, "the dump to start")
    pid = int(record.read_text().split()[0])
    started = time.monotonic()
    daemon.process.send_signal(signal.SIGTERM)
    servers.wait_until(lambda: "stopping (grace period" in daemon.log(), 5, "the daemon to begin stopping")
    if daemon.process.poll() is None:  # still serving while it waits for the run: no new run may start
        code, body = post(f"{daemon.url}/api/v1/plans/other/run", TOKEN)
        assert code == 503 and "shutting down" in body["error"], (code, body)
    assert daemon.process.wait(timeout=15) == 0, daemon.log()
    assert time.monotonic() - started < 2 + 2, "exceeded the grace period"
    assert not _alive(pid), "the dump tool survived the daemon"
    stored = json.loads((store / "main" / "_status.json").read_text())
    assert stored["last_attempt"]["result"] == "interrupted"
    assert stored["last_attempt"]["exit_code"] == 143
    assert not (store / "other" / "_status.json").exists()
    assert not list(store.rglob("*.archive.gz"))


def test_a_malformed_post_gets_400_and_the_daemon_keeps_serving(  # type: ignore[no-untyped-def]
        tmp_path: Path, daemons) -> None:
    cfg = write_config(tmp_path / "c.yml", tmp_path / "store", {"main": "0 3 * * *"})
    daemon = daemons(cfg)
    for length in ("abc", "-5", "99999999"):
        connection = http.client.HTTPConnection("127.0.0.1", daemon.port, timeout=5)
        try:
            connection.putrequest("POST", "/api/v1/plans/main/run")
            connection.putheader("Authorization", f"Bearer {TOKEN}")
            connection.putheader("Content-Length", length)
            connection.endheaders()
            response = connection.getresponse()
            assert response.status == 400, length
            assert "Content-Length" in json.loads(response.read())["error"]
        finally:
            connection.close()
    assert "Traceback" not in daemon.log()
    assert daemon.status()["runs"] == []
    assert servers.http_ok(f"{daemon.url}/healthz")


def test_run_now_daemon_refuses_credentials_in_the_url(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "c.yml", tmp_path / "store", {"main": "0 3 * * *"})
    result = backupctl(["run-now", "--config", str(cfg), "--daemon", "http://admin:S3cret@127.0.0.1:1/"],
                       base_env(BACKUP_API_TOKEN=TOKEN))
    assert result.returncode == 64, result.stderr
    assert "may not hold credentials" in result.stderr
    assert "S3cret" not in result.stderr + result.stdout


def _get(url: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def test_metrics_answer_503_until_the_stored_status_is_loaded_never_zeros(  # type: ignore[no-untyped-def]
        tmp_path: Path, daemons) -> None:
    store = tmp_path / "store"
    store.mkdir()
    finished = time.time() - 600
    LocalStorage(store).put("main/_status.json", PlanStatus(
        "main", last_attempt=Attempt(finished - 5, finished, 0, "success", size=10),
        last_success=Attempt(finished - 5, finished, 0, "success", size=10)).to_json())
    cfg = write_config(tmp_path / "c.yml", store, {"main": "0 3 * * *"})
    away = tmp_path / "store-not-mounted"
    store.rename(away)  # the volume is not mounted yet when the daemon starts
    daemon = daemons(cfg)
    code, headers, body = _get(f"{daemon.url}/metrics")
    assert code == 503, body
    assert b"not loaded yet" in body and b"does not exist" in body
    assert headers.get("Retry-After")
    assert _get(f"{daemon.url}/healthz")[0] == 200  # alive, just not able to tell yet
    away.rename(store)
    servers.wait_until(lambda: _get(f"{daemon.url}/metrics")[0] == 200, 15, "the status to load")
    assert daemon.value("backup_last_success_timestamp_seconds", plan="main") == finished
    next_run = daemon.value("backup_next_run_timestamp_seconds", plan="main")
    assert next_run is not None and next_run > time.time()


def test_metrics_negotiate_openmetrics_and_gzip(tmp_path: Path, daemons) -> None:  # type: ignore[no-untyped-def]
    cfg = write_config(tmp_path / "c.yml", tmp_path / "store", {"main": "0 3 * * *"})
    daemon = daemons(cfg)
    code, headers, plain = _get(f"{daemon.url}/metrics")
    assert code == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert "Content-Encoding" not in headers
    assert b'backup_runs_total{plan="main",result="success"} 0.0' in plain
    code, headers, om = _get(f"{daemon.url}/metrics", Accept="application/openmetrics-text; version=1.0.0")
    assert code == 200 and headers["Content-Type"].startswith("application/openmetrics-text")
    assert om.endswith(b"# EOF\n")
    assert b"# TYPE backup_runs counter" in om and b'backup_runs_total{plan="main",result="skipped"} 0.0' in om
    code, headers, packed = _get(f"{daemon.url}/metrics", **{"Accept-Encoding": "gzip"})
    assert code == 200 and headers["Content-Encoding"] == "gzip"
    assert b"backup_last_success_timestamp_seconds{plan=\"main\"} 0.0" in gzip.decompress(packed)
    code, headers, packed = _get(f"{daemon.url}/metrics", Accept="application/openmetrics-text; version=1.0.0",
                                 **{"Accept-Encoding": "br;q=1.0, gzip;q=0.5"})
    assert headers["Content-Encoding"] == "gzip" and gzip.decompress(packed).endswith(b"# EOF\n")
    code, _, only = _get(f"{daemon.url}/metrics?name[]=backup_in_progress")
    assert code == 200 and b"backup_in_progress{" in only and b"backup_runs_total" not in only


def test_a_port_in_use_exits_69_naming_the_address(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "c.yml", tmp_path / "store", {"main": "0 3 * * *"})
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    try:
        port = holder.getsockname()[1]
        result = backupctl(["daemon", "--config", str(cfg), "--listen", f"127.0.0.1:{port}"], base_env())
    finally:
        holder.close()
    assert result.returncode == 69, result.stderr
    assert f"cannot listen on 127.0.0.1:{port} (--listen)" in result.stderr
    assert "another process" in result.stderr and "Traceback" not in result.stderr


def test_run_now_daemon_exits_69_when_the_daemon_restarts_during_the_run(  # type: ignore[no-untyped-def]
        tmp_path: Path, daemons) -> None:
    cfg = write_config(tmp_path / "c.yml", tmp_path / "store", {"main": "0 3 * * *"})
    env = {"FAKE_MONGODUMP_MODE": "sleepy", "FAKE_MONGODUMP_SECONDS": "20"}
    first = daemons(cfg, **env)
    client = start_backupctl(["run-now", "--config", str(cfg), "--daemon", first.url],
                             base_env(BACKUP_API_TOKEN=TOKEN))
    try:
        servers.wait_until(lambda: first.value("backup_in_progress", plan="main") == 1, 15, "the run to start")
        first.stop(signal.SIGKILL)
        second = start_daemon(cfg, base_env(**env), tmp_path / "logs", port=first.port)
        try:
            _, stderr = client.communicate(timeout=60)
        finally:
            second.stop(signal.SIGKILL)
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
    assert client.returncode == 69, stderr
    assert "restarted while run" in stderr and "backupctl status --plan main" in stderr


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purposes
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def test_the_progress_of_a_run_under_way_is_on_metrics_and_nan_when_idle(  # type: ignore[no-untyped-def]
        tmp_path: Path, daemons, mongo_client, mongo_uri: str) -> None:
    prefix = f"dp{os.urandom(3).hex()}"
    # About 4 MiB of incompressible documents, dumped through a proxy limited to 1 MiB/s: a run of a few
    # seconds, scraped while it is under way.
    mongo_client[f"{prefix}_shop"]["users"].insert_many(
        [{"n": i, "p": Binary(os.urandom(500))} for i in range(8000)])
    (tmp_path / "store").mkdir()
    cfg = tmp_path / "c.yml"
    try:
        with fault_proxy(int(mongo_uri.split(":")[2].split("/")[0]), http=False) as proxy:
            proxy.bandwidth(1 << 20)
            cfg.write_text(f"""storage: {{type: local, path: {tmp_path / 'store'}}}
server: {{api_token: {TOKEN}, status_refresh: 1s}}
plans:
  main:
    mongodb_uri: mongodb://127.0.0.1:{proxy.port}/?directConnection=true
    schedule: "0 3 * * *"
    engine: native
    include: ["{prefix}_*"]
""")
            daemon = daemons(cfg)
            assert math.isnan(daemon.value("backup_progress_ratio", plan="main") or 0.0)
            assert daemon.value("backup_progress_bytes", plan="main") == 0
            assert post(f"{daemon.url}/api/v1/plans/main/run", TOKEN)[0] == 202
            seen: list[tuple[float, float, float]] = []

            def under_way() -> bool:
                scrape = daemon.metrics()  # one scrape: the three are compared with each other
                ratio = sample(scrape, "backup_progress_ratio", plan="main")
                done = sample(scrape, "backup_progress_bytes", plan="main") or 0.0
                estimated = sample(scrape, "backup_progress_estimated_bytes", plan="main")
                if ratio is not None and estimated is not None and 0 < ratio < 1:
                    seen.append((ratio, done, estimated))
                return daemon.status()["runs"][0]["state"] == "finished"

            servers.wait_until(under_way, 60, "the run to finish")
        assert seen, "the progress was never seen strictly between 0 and 1 during the run"
        ratio, done, estimated = seen[-1]
        assert 8000 * 500 < estimated < 8000 * 600  # the data size the server reports
        assert ratio == pytest.approx(done / estimated)
        assert [r for r, _, _ in seen] == sorted(r for r, _, _ in seen)
        assert daemon.status()["runs"][0]["exit_code"] == 0
        # Idle again: no measure (NaN), no bytes.
        assert math.isnan(daemon.value("backup_progress_ratio", plan="main") or 0.0)
        assert math.isnan(daemon.value("backup_progress_estimated_bytes", plan="main") or 0.0)
        assert daemon.value("backup_progress_bytes", plan="main") == 0
    finally:
        mongo_client.drop_database(f"{prefix}_shop")
