"""`backupctl run-now` end to end: real SecantusDB, real Azurite, real subprocesses."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import time
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from azure.storage.blob import ContainerClient
from pymongo import MongoClient

from backup_exporter import archive
from backup_exporter.repository import backups
from backup_exporter.storage.azure import AzureStorage
from tests import dataset, servers
from tests.cli_helpers import FAKE_MONGODUMP, backupctl, base_env, native_azure_config, start_backupctl
from tests.clocks import ManualClock
from tests.test_progress import run_on_terminal

GOLDEN_GZ = Path(__file__).parent / "data" / "mongodump-100.8.0-sample.archive.gz"


@pytest.fixture(scope="module")
def sample(mongo_client: MongoClient) -> Iterator[tuple[str, dict[str, int]]]:  # type: ignore[type-arg]
    prefix = f"rn{uuid.uuid4().hex[:6]}"
    counts = dataset.load(mongo_client, prefix)
    yield prefix, counts
    dataset.drop(mongo_client, prefix)


def env_for(mongo_uri: str, conn: str, container: str, **extra: str) -> dict[str, str]:
    return base_env(MONGODB_URI=mongo_uri, AZURE_STORAGE_CONNECTION_STRING=conn,
                    AZURE_STORAGE_CONTAINER=container, BACKUP_PREFIX="prod", BACKUP_PLAN="main", **extra)


def blobs(conn: str, container: str) -> list[str]:
    client = ContainerClient.from_connection_string(conn, container)
    try:
        return sorted(b.name for b in client.list_blobs())
    finally:
        client.close()


def archives(conn: str, container: str) -> list[str]:
    return [b for b in blobs(conn, container) if b.endswith(".archive.gz")]


def stored_status(conn: str, container: str) -> dict:  # type: ignore[type-arg]
    client = ContainerClient.from_connection_string(conn, container)
    try:
        return json.loads(client.download_blob("prod/main/_status.json").readall())  # type: ignore[no-any-return]
    finally:
        client.close()


def download(conn: str, container: str, name: str) -> bytes:
    client = ContainerClient.from_connection_string(conn, container)
    try:
        return client.download_blob(name).readall()
    finally:
        client.close()


def test_native_run_now_streams_a_verifiable_archive_of_every_database_into_azure(
        sample: tuple[str, dict[str, int]], mongo_uri: str, mongo_client: MongoClient,  # type: ignore[type-arg]
        azure_connection_string: str, container: str, tmp_path: Path) -> None:
    prefix, counts = sample
    env = env_for(mongo_uri, azure_connection_string, container, BACKUP_ENGINE="native")
    # Only this test's databases: other tests share the server.
    cfg = native_azure_config(tmp_path / "backup.yml", container, prefix)
    result = backupctl(["run-now", "--config", str(cfg)], env)
    assert result.returncode == 0, result.stderr
    names = archives(azure_connection_string, container)
    assert len(names) == 1 and names[0].startswith("prod/main/")
    data = download(azure_connection_string, container, names[0])
    summary = archive.verify_archive(archive.open_archive_stream(io.BytesIO(data)))
    assert summary.ok
    assert {ns: s.documents for ns, s in summary.namespaces.items()} == counts
    for ns in counts:
        assert dataset.digest(mongo_client, ns) == summary_digest(data, ns)
    users = summary.namespaces[f"{prefix}_shop.users"].metadata
    assert {ix["name"] for ix in users["indexes"]} == {"_id_", "email_1", "age_at"}
    assert summary.namespaces[f"{prefix}_analytics.capped_events"].metadata["options"]["capped"] is True
    # The printed line and the blob metadata agree with the bytes.
    name, size, sha = result.stdout.strip().split("\t")
    props = ContainerClient.from_connection_string(azure_connection_string, container).get_blob_client(name)
    meta = props.get_blob_properties().metadata
    import hashlib
    assert meta["sha256"] == sha == hashlib.sha256(data).hexdigest()
    assert int(meta["size"]) == int(size) == len(data)
    assert meta["engine"] == "native" and meta["plan"] == "main"
    status = stored_status(azure_connection_string, container)
    assert status["last_success"]["name"] == name and status["last_attempt"]["exit_code"] == 0


def summary_digest(data: bytes, ns: str) -> str:
    import hashlib
    hashes = []
    for ev in archive.iter_archive(archive.open_archive_stream(io.BytesIO(data))):
        if isinstance(ev, archive.Document) and f"{ev.db}.{ev.collection}" == ns:
            hashes.append(hashlib.sha256(ev.raw).digest())
    return hashlib.sha256(b"".join(sorted(hashes))).hexdigest()


def test_mongodump_engine_with_mongodump_compress_streams_the_tools_output_byte_for_byte(
        tmp_path: Path, azure_connection_string: str, container: str) -> None:
    record = tmp_path / "record.jsonl"
    uri = "mongodb://backup:Sup3r-S3cret@db.internal:27017/?authSource=admin"
    env = env_for(uri, azure_connection_string, container, BACKUP_ENGINE="mongodump",
                  BACKUP_MONGODUMP_PATH=FAKE_MONGODUMP, FAKE_MONGODUMP_MODE="ok", FAKE_MONGODUMP_RECORD=str(record),
                  BACKUP_MONGODUMP_COMPRESS="true")
    result = backupctl(["run-now"], env)
    assert result.returncode == 0, result.stderr
    (name,) = archives(azure_connection_string, container)
    assert download(azure_connection_string, container, name) == GOLDEN_GZ.read_bytes()
    run = json.loads(record.read_text().splitlines()[-1])
    assert "--gzip" in run["argv"]
    assert "Sup3r-S3cret" not in " ".join(run["argv"])
    assert not any("mongodb://" in a for a in run["argv"])
    assert json.loads(run["config"].split(":", 1)[1]) == uri  # the URI arrived through --config on a pipe
    assert "Sup3r-S3cret" not in result.stderr + result.stdout


def test_mongodump_engine_by_default_gzips_the_plain_archive_itself_into_one_gzip_member(
        tmp_path: Path, azure_connection_string: str, container: str) -> None:
    record = tmp_path / "record.jsonl"
    env = env_for("mongodb://db.internal:27017/", azure_connection_string, container, BACKUP_ENGINE="mongodump",
                  BACKUP_MONGODUMP_PATH=FAKE_MONGODUMP, FAKE_MONGODUMP_MODE="ok", FAKE_MONGODUMP_RECORD=str(record),
                  BACKUP_COMPRESSION_LEVEL="2")
    result = backupctl(["run-now"], env)
    assert result.returncode == 0, result.stderr
    run = json.loads(record.read_text().splitlines()[-1])
    assert "--archive" in run["argv"] and "--gzip" not in run["argv"]
    (name,) = archives(azure_connection_string, container)
    blob = download(azure_connection_string, container, name)
    inflate = zlib.decompressobj(wbits=31)
    assert inflate.decompress(blob) == GOLDEN_GZ.with_suffix("").read_bytes()  # the tool's archive, unchanged
    assert inflate.eof and inflate.unused_data == b""  # one gzip member, nothing after it


def _seed_success(env: dict[str, str]) -> None:
    ok = backupctl(["run-now"], {**env, "FAKE_MONGODUMP_MODE": "ok"})
    assert ok.returncode == 0, ok.stderr


@pytest.mark.parametrize(("mode", "mongodump_compress", "exit_code", "words"), [
    ("fail", "false", 1, "exited with code 1: "),
    ("crash", "false", 128 + 9, "killed by signal 9"),
    ("empty", "false", 65, "wrote nothing (0 bytes)"),
    ("truncated", "false", 65, "truncated (no final terminator)"),
    ("truncated", "true", 65, "gzip stream is truncated"),
    ("garbage", "false", 65, "not a mongodump archive (bad magic number)"),
    ("garbage", "true", 65, "not valid gzip"),
])
def test_failed_dump_leaves_no_blob_and_keeps_the_last_success(
        mode: str, mongodump_compress: str, exit_code: int, words: str, azure_connection_string: str,
        container: str) -> None:
    env = env_for("mongodb://127.0.0.1:1/", azure_connection_string, container, BACKUP_ENGINE="mongodump",
                  BACKUP_MONGODUMP_PATH=FAKE_MONGODUMP, BACKUP_MONGODUMP_COMPRESS=mongodump_compress)
    _seed_success(env)
    before = archives(azure_connection_string, container)
    good = stored_status(azure_connection_string, container)["last_success"]
    result = backupctl(["run-now"], {**env, "FAKE_MONGODUMP_MODE": mode})
    assert result.returncode == exit_code, result.stderr
    assert words in result.stderr
    assert "Traceback" not in result.stderr
    assert archives(azure_connection_string, container) == before
    status = stored_status(azure_connection_string, container)
    assert status["last_attempt"]["exit_code"] == exit_code
    assert status["last_attempt"]["result"] == "failure"
    assert status["last_success"] == good
    if mode == "fail":
        assert "connection reset" in result.stderr  # the tool's own last words reach the user


def test_unreachable_mongodb_leaves_no_blob_and_exits_69_without_the_password(
        azure_connection_string: str, container: str) -> None:
    port = servers.free_port()
    env = env_for(f"mongodb://admin:Hunter2-pw@127.0.0.1:{port}/", azure_connection_string, container,
                  BACKUP_ENGINE="native")
    env_cfg = {**env}
    started = time.monotonic()
    result = backupctl(["run-now"], env_cfg)
    assert result.returncode == 69, result.stderr
    assert time.monotonic() - started < 60
    assert f"127.0.0.1:{port}" in result.stderr
    assert "Hunter2-pw" not in result.stderr + result.stdout
    assert archives(azure_connection_string, container) == []
    assert stored_status(azure_connection_string, container)["last_attempt"]["exit_code"] == 69


def test_a_plan_locked_by_another_run_exits_75_and_records_nothing(
        azure_connection_string: str, container: str) -> None:
    env = env_for("mongodb://127.0.0.1:1/", azure_connection_string, container, BACKUP_ENGINE="mongodump",
                  BACKUP_MONGODUMP_PATH=FAKE_MONGODUMP, FAKE_MONGODUMP_MODE="ok")
    storage = AzureStorage(container, connection_string=azure_connection_string)
    try:
        with storage.lock("prod/main/_lock", "test holder on host-a"):
            result = backupctl(["run-now"], env)
    finally:
        storage.close()
    assert result.returncode == 75, result.stderr
    assert "test holder on host-a" in result.stderr
    assert archives(azure_connection_string, container) == []


def test_sigterm_during_a_dump_commits_nothing_and_leaves_no_child(
        tmp_path: Path, azure_connection_string: str, container: str) -> None:
    record = tmp_path / "record.jsonl"
    env = env_for("mongodb://127.0.0.1:1/", azure_connection_string, container, BACKUP_ENGINE="mongodump",
                  BACKUP_MONGODUMP_PATH=FAKE_MONGODUMP, FAKE_MONGODUMP_MODE="slow",
                  FAKE_MONGODUMP_RECORD=str(record))
    proc = start_backupctl(["run-now"], env)
    servers.wait_until(lambda: record.exists() and "grandchild" in record.read_text(), 30, "slow dump to start")
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 143, stderr
    assert "interrupted by SIGTERM" in stderr
    lines = [json.loads(line) for line in record.read_text().splitlines()]
    pids = [lines[0]["pid"], next(line["grandchild"] for line in lines if "grandchild" in line)]
    for pid in pids:
        assert not _alive(pid), f"process {pid} survived"
    assert archives(azure_connection_string, container) == []
    status = stored_status(azure_connection_string, container)
    assert status["last_attempt"]["result"] == "interrupted" and status["last_attempt"]["exit_code"] == 143


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def test_json_logs_carry_level_plan_event_and_message(azure_connection_string: str, container: str) -> None:
    env = env_for("mongodb://127.0.0.1:1/", azure_connection_string, container, BACKUP_ENGINE="mongodump",
                  BACKUP_MONGODUMP_PATH=FAKE_MONGODUMP, FAKE_MONGODUMP_MODE="ok")
    result = backupctl(["run-now", "--log-format", "json"], env)
    assert result.returncode == 0, result.stderr
    entries = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    events = {e["event"] for e in entries}
    assert {"started", "succeeded"} <= events
    for entry in entries:
        assert {"level", "plan", "event", "message"} <= set(entry)
    assert all(e["plan"] == "main" for e in entries if e["event"] in ("started", "succeeded"))


def test_local_directory_backend_keeps_the_same_contract(tmp_path: Path) -> None:
    (tmp_path / "store").mkdir()
    env = base_env(MONGODB_URI="mongodb://127.0.0.1:1/", BACKUP_LOCAL_DIR=str(tmp_path / "store"),
                   BACKUP_ENGINE="mongodump", BACKUP_MONGODUMP_PATH=FAKE_MONGODUMP, FAKE_MONGODUMP_MODE="ok")
    assert backupctl(["run-now"], env).returncode == 0
    failed = backupctl(["run-now"], {**env, "FAKE_MONGODUMP_MODE": "crash"})
    assert failed.returncode == 137
    files = sorted(p.relative_to(tmp_path / "store").as_posix() for p in (tmp_path / "store").rglob("*")
                   if p.is_file() and p.name.endswith(".archive.gz"))
    assert len(files) == 1 and files[0].startswith("default/")
    # backupctl gzipped the tool's plain archive: the same archive inside
    stored = (tmp_path / "store" / files[0]).read_bytes()
    assert zlib.decompress(stored, wbits=31) == GOLDEN_GZ.with_suffix("").read_bytes()


def test_a_missing_local_directory_is_a_storage_error_not_a_silent_new_folder(tmp_path: Path) -> None:
    env = base_env(MONGODB_URI="mongodb://127.0.0.1:1/", BACKUP_LOCAL_DIR=str(tmp_path / "not-mounted"),
                   BACKUP_ENGINE="mongodump", BACKUP_MONGODUMP_PATH=FAKE_MONGODUMP, FAKE_MONGODUMP_MODE="ok")
    result = backupctl(["run-now"], env)
    assert result.returncode == 74, result.stderr
    assert "not-mounted does not exist" in result.stderr
    assert not (tmp_path / "not-mounted").exists()


def test_on_a_terminal_run_now_shows_live_progress(tmp_path: Path) -> None:
    (tmp_path / "store").mkdir()
    env = base_env(MONGODB_URI="mongodb://127.0.0.1:1/", BACKUP_LOCAL_DIR=str(tmp_path / "store"),
                   BACKUP_ENGINE="mongodump", BACKUP_MONGODUMP_PATH=FAKE_MONGODUMP, FAKE_MONGODUMP_MODE="sleepy",
                   FAKE_MONGODUMP_SECONDS="2")
    code, seen, _out = run_on_terminal(["run-now"], env, timeout=60)
    assert code == 0
    text = seen.decode(errors="replace")
    assert "10,800 docs" in text and "uploaded" in text and "/s" in text
    # The server is unreachable: no estimate, so no percentage while it runs (never a wrong one), only the
    # final "100%  done".
    assert "estimating the work" in text or "estimate unavailable" in text
    assert set(re.findall(r"(\d+)%", text)) == {"100"} and "100%  done" in text


def test_off_a_terminal_run_now_prints_no_progress_line(tmp_path: Path) -> None:
    (tmp_path / "store").mkdir()
    env = base_env(MONGODB_URI="mongodb://127.0.0.1:1/", BACKUP_LOCAL_DIR=str(tmp_path / "store"),
                   BACKUP_ENGINE="mongodump", BACKUP_MONGODUMP_PATH=FAKE_MONGODUMP, FAKE_MONGODUMP_MODE="sleepy",
                   FAKE_MONGODUMP_SECONDS="1")
    result = backupctl(["run-now"], env)
    assert result.returncode == 0
    assert "docs" not in result.stderr and "uploaded" not in result.stderr and "\r" not in result.stderr


def test_a_crashing_after_backup_step_does_not_turn_a_stored_backup_into_a_failure(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from backup_exporter import config as config_module
    from backup_exporter.core.plan_state import PlanStates
    from backup_exporter.operations.run import RunOutcome, run_backup
    from backup_exporter.serve.metrics import metrics_registry
    from backup_exporter.storage.local import LocalStorage

    cfg = config_module.from_mapping({
        "storage": {"type": "local", "path": str(tmp_path)},
        "plans": {"main": {"mongodb_uri": "mongodb://127.0.0.1:1/", "engine": "mongodump",
                           "mongodump_path": FAKE_MONGODUMP}}}, {}, "test")
    metrics = PlanStates(["main"])
    registry = metrics_registry(metrics)

    def broken_retention(_outcome: RunOutcome) -> None:
        raise RuntimeError("bug in retention")

    monkeypatch.setenv("FAKE_MONGODUMP_MODE", "ok")  # read by the real fake-mongodump child process
    outcome = run_backup(cfg.plans["main"], LocalStorage(tmp_path), state=metrics, after_success=broken_retention)
    assert (outcome.result, outcome.exit_code) == ("success", 0), outcome.message
    assert list(tmp_path.glob("main/*.archive.gz"))
    assert registry.get_sample_value("backup_runs_total", {"plan": "main", "result": "success"}) == 1
    assert registry.get_sample_value("backup_runs_total", {"plan": "main", "result": "failure"}) == 0
    assert registry.get_sample_value("backup_in_progress", {"plan": "main"}) == 0


def test_two_runs_in_the_same_second_keep_both_backups_in_order(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from backup_exporter import config as config_module
    from backup_exporter.operations.run import run_backup
    from backup_exporter.storage.local import LocalStorage

    store = tmp_path / "store"
    store.mkdir()
    cfg = config_module.from_mapping({"storage": {"type": "local", "path": str(store)},
                                      "plans": {"main": {"mongodb_uri": "mongodb://127.0.0.1:1/",
                                                         "engine": "mongodump", "mongodump_path": FAKE_MONGODUMP}}},
                                     {"FAKE_MONGODUMP_MODE": "ok"}, "test")
    frozen = datetime(2026, 11, 27, 3, 0, 0, 250000, tzinfo=UTC)
    storage = LocalStorage(store)
    os.environ["FAKE_MONGODUMP_MODE"] = "ok"
    try:
        first = run_backup(cfg.plans["main"], storage, clock=ManualClock(frozen))
        second = run_backup(cfg.plans["main"], storage, clock=ManualClock(frozen))
    finally:
        del os.environ["FAKE_MONGODUMP_MODE"]
    assert first.exit_code == 0 and second.exit_code == 0, (first.message, second.message)
    assert first.name == "main/2026-11-27T03-00-00Z.archive.gz"
    assert second.name == "main/2026-11-27T03-00-01Z.archive.gz"
    assert [b.name for b in backups.archives(storage, "main")] == [first.name, second.name]


def test_a_run_over_the_plans_timeout_is_stopped_recorded_as_a_failure_and_commits_nothing(
        tmp_path: Path, azure_connection_string: str, container: str) -> None:
    record = tmp_path / "record.jsonl"
    env = env_for("mongodb://127.0.0.1:1/", azure_connection_string, container, BACKUP_ENGINE="mongodump",
                  BACKUP_MONGODUMP_PATH=FAKE_MONGODUMP, FAKE_MONGODUMP_MODE="slow", BACKUP_TIMEOUT="2s",
                  FAKE_MONGODUMP_RECORD=str(record))
    started = time.monotonic()
    result = backupctl(["run-now"], env)
    assert result.returncode == 124, result.stderr
    assert time.monotonic() - started < 30
    assert "exceeded the plan's timeout of 2 s" in result.stderr
    lines = [json.loads(line) for line in record.read_text().splitlines()]
    for pid in (lines[0]["pid"], next(x["grandchild"] for x in lines if "grandchild" in x)):
        assert not _alive(pid)
    assert archives(azure_connection_string, container) == []
    attempt = stored_status(azure_connection_string, container)["last_attempt"]
    assert attempt["result"] == "failure" and attempt["exit_code"] == 124


def late_dump_config(path: Path, uri: str) -> Path:
    (path.parent / "store").mkdir(exist_ok=True)
    path.write_text(f"""storage: {{type: local, path: {path.parent / "store"}}}
plans:
  main: {{mongodb_uri: "{uri}", engine: mongodump, mongodump_path: {FAKE_MONGODUMP}, connect_timeout: 1s}}
""")
    return path


def test_a_dump_tool_slow_to_its_first_byte_is_left_alone_while_the_server_answers(
        tmp_path: Path, mongo_uri: str) -> None:
    cfg = late_dump_config(tmp_path / "c.yml", mongo_uri)
    env = base_env(FAKE_MONGODUMP_MODE="late", FAKE_MONGODUMP_SECONDS="4")
    result = backupctl(["run-now", "--config", str(cfg)], env)
    assert result.returncode == 0, result.stderr
    assert len(list((tmp_path / "store").rglob("*.archive.gz"))) == 1


def test_a_dump_tool_that_writes_nothing_while_no_server_answers_is_stopped_with_69_at_the_connect_timeout(
        tmp_path: Path) -> None:
    # The real mongodump keeps retrying a refused port past serverSelectionTimeoutMS and SIGTERM
    # (tests/test_real_tools.py has the same case with it); the stand-in just waits a minute before writing.
    cfg = late_dump_config(tmp_path / "c.yml", "mongodb://backup:Late-Canary-pw@127.0.0.1:1/")
    record = tmp_path / "record.jsonl"
    env = base_env(FAKE_MONGODUMP_MODE="late", FAKE_MONGODUMP_SECONDS="60", FAKE_MONGODUMP_RECORD=str(record))
    started = time.monotonic()
    result = backupctl(["run-now", "--config", str(cfg)], env, timeout=60)
    elapsed = time.monotonic() - started
    assert result.returncode == 69, result.stderr
    assert elapsed < 20, f"took {elapsed:.0f} s"
    message = result.stderr.strip().splitlines()[-1]
    assert "MongoDB at 127.0.0.1:1 is unreachable" in message and "had written nothing after" in message
    assert "Late-Canary-pw" not in result.stderr
    pid = json.loads(record.read_text().splitlines()[0])["pid"]
    assert not os.path.exists(f"/proc/{pid}") or "zombie" in Path(f"/proc/{pid}/status").read_text()
    assert not list((tmp_path / "store").rglob("*.archive.gz"))
    stored = json.loads(next((tmp_path / "store").rglob("_status.json")).read_text())
    assert stored["last_attempt"]["exit_code"] == 69
