"""Every path through the real MongoDB tools: backups made by real mongodump through `backupctl run-now`
(password never in any process's argv, its stderr in the log, its exit code recorded, stopped by the
plan's timeout and by SIGTERM), `verify` of those archives, `backupctl restore --engine mongorestore`
(URI on the --config pipe, renames, --drop, --ns-include), and restore drills with mongorestore."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pymongo import MongoClient

from backup_exporter import config as config_module
from backup_exporter.core import naming
from backup_exporter.core.plan_state import PlanStates
from backup_exporter.operations import housekeeping
from backup_exporter.operations.run import run_backup
from backup_exporter.repository import records
from backup_exporter.storage.local import LocalStorage
from tests import dataset, servers
from tests.cli_helpers import backupctl, base_env, start_backupctl
from tests.mongo_tools import MongoTools
from tests.process_watch import ArgvWatcher
from tests.test_native_engine import auth_server  # noqa: F401  (a fixture: user backup / right-password)

PASSWORD = "right-password"
WRONG = "wr0ng-Pa55word-canary"


def uri_for(server: servers.Server, password: str = PASSWORD, extra: str = "") -> str:
    return f"mongodb://backup:{password}@{server.address}/?directConnection=true&authSource=admin{extra}"


def write_config(tmp_path: Path, tools: MongoTools, db: str, extra: str = "") -> Path:
    path = tmp_path / "backup.yml"
    (tmp_path / "store").mkdir(exist_ok=True)
    path.write_text(f"""storage:
  type: local
  path: {tmp_path / "store"}
plans:
  main:
    mongodb_uri: ${{MONGODB_URI}}
    prefix: prod
    engine: mongodump
    mongodump_path: {tools.mongodump}
    include: ["{db}.*"]
{extra}""")
    return path


@pytest.fixture(scope="module")
def source_db(auth_server: servers.Server) -> Iterator[str]:  # noqa: F811
    db = f"rt{uuid.uuid4().hex[:8]}"
    client: MongoClient[dict[str, Any]] = MongoClient(uri_for(auth_server), serverSelectionTimeoutMS=5000)
    counts = dataset.load(client, db, per_collection=30)
    assert counts
    client[f"{db}_shop"].create_collection("paid", viewOn="orders", pipeline=[{"$match": {"status": "paid"}}])
    yield db
    dataset.drop(client, db)
    dataset.drop(client, db + "r")
    client.close()


def namespaces(server: servers.Server, prefix: str) -> dict[str, str]:
    client: MongoClient[dict[str, Any]] = MongoClient(uri_for(server), serverSelectionTimeoutMS=5000)
    try:
        return {ns: dataset.digest(client, ns) for ns in dataset.namespace_counts(client, prefix)}
    finally:
        client.close()


def test_real_mongodump_backup_verifies_and_restores_with_mongorestore_through_backupctl(
        tmp_path: Path, mongo_tools: MongoTools, auth_server: servers.Server, source_db: str) -> None:  # noqa: F811
    shop = f"{source_db}_shop"
    cfg = write_config(tmp_path, mongo_tools, shop)
    env = mongo_tools.path_env(base_env(MONGODB_URI=uri_for(auth_server), RESTORE_URI=uri_for(auth_server)))
    with ArgvWatcher() as watcher:
        made = backupctl(["run-now", "--config", str(cfg)], env)
        assert made.returncode == 0, made.stderr
        name = made.stdout.split("\t")[0]
        assert "mongodump: " in made.stderr and "done dumping" in made.stderr  # its stderr, in our log
        verified = backupctl(["verify", name, "--config", str(cfg)], env)
        assert verified.returncode == 0, verified.stderr
        assert f"{name}: OK" in verified.stdout and f"{shop}.users" in verified.stdout
        restored = backupctl(["restore", name, "--config", str(cfg), "--engine", "mongorestore",
                              "--to", "env:RESTORE_URI", "--check", "--ns-include", f"{shop}.*",
                              "--ns-from", f"{source_db}_$db$.$coll$", "--ns-to", f"{source_db}r_$db$.$coll$"], env)
        assert restored.returncode == 0, restored.stderr
        assert "with mongorestore" in restored.stdout and "document counts match" in restored.stdout
        # Again with --drop: the copy is replaced, not doubled.
        dropped = backupctl(["restore", name, "--config", str(cfg), "--engine", "mongorestore", "--yes",
                             "--to", "env:RESTORE_URI", "--drop", "--ns-include", f"{shop}.users",
                             "--ns-from", f"{shop}.*", "--ns-to", f"{source_db}r_shop.*"], env)
        assert dropped.returncode == 0, dropped.stderr
    assert len(watcher.tool_argv("mongodump")) > 0 and len(watcher.tool_argv("mongorestore")) > 0
    for line in watcher.seen:
        assert PASSWORD not in line and "mongodb://" not in line, line
    for line in watcher.tool_argv("mongodump") + watcher.tool_argv("mongorestore"):
        assert "--config=/dev/fd/" in line  # the URI went through the --config pipe
    source, copy = namespaces(auth_server, source_db), namespaces(auth_server, source_db + "r")
    assert {ns.replace(f"{source_db}r_", f"{source_db}_"): d for ns, d in copy.items()} == {
        ns: d for ns, d in source.items() if ns.startswith(shop + ".")}
    client: MongoClient[dict[str, Any]] = MongoClient(uri_for(auth_server), serverSelectionTimeoutMS=5000)
    views = list(client[f"{source_db}r_shop"].list_collections(filter={"type": "view"}))
    client.close()
    assert [v["name"] for v in views] == ["paid"]
    assert PASSWORD not in made.stderr + verified.stdout + restored.stdout + restored.stderr + dropped.stderr


def test_a_wrong_password_through_real_mongodump_exits_77_and_leaks_nowhere(
        tmp_path: Path, mongo_tools: MongoTools, auth_server: servers.Server, source_db: str) -> None:  # noqa: F811
    cfg = write_config(tmp_path, mongo_tools, f"{source_db}_shop")
    env = mongo_tools.path_env(base_env(MONGODB_URI=uri_for(auth_server, WRONG)))
    failed = backupctl(["run-now", "--config", str(cfg)], env)
    # mongodump itself exits 1 and prints the whole URI; backupctl says 77 like the native engine.
    assert failed.returncode == 77, failed.stderr
    assert "AuthenticationFailed" in failed.stderr or "authentication failed" in failed.stderr
    status = backupctl(["status", "--config", str(cfg), "--json"], env)
    stored = (tmp_path / "store" / "prod" / "main" / "_status.json").read_text()
    for text in (failed.stdout, failed.stderr, status.stdout, status.stderr, stored):
        assert WRONG not in text
    assert json.loads(stored)["last_attempt"]["exit_code"] == 77


def test_the_native_engine_gives_the_same_exit_code_for_a_wrong_password(
        tmp_path: Path, mongo_tools: MongoTools, auth_server: servers.Server, source_db: str) -> None:  # noqa: F811
    cfg = write_config(tmp_path, mongo_tools, f"{source_db}_shop").read_text().replace("engine: mongodump",
                                                                                          "engine: native")
    (tmp_path / "native.yml").write_text(cfg)
    failed = backupctl(["run-now", "--config", str(tmp_path / "native.yml")],
                       base_env(MONGODB_URI=uri_for(auth_server, WRONG)))
    assert failed.returncode == 77 and WRONG not in failed.stderr


@pytest.mark.parametrize("engine", ["mongorestore", "native"])
def test_both_restore_engines_exit_69_for_an_unreachable_target_and_77_for_refused_credentials(
        tmp_path: Path, mongo_tools: MongoTools, auth_server: servers.Server, source_db: str,  # noqa: F811
        engine: str) -> None:
    cfg = write_config(tmp_path, mongo_tools, f"{source_db}_shop").read_text().replace("engine: mongodump",
                                                                                          "engine: native")
    (tmp_path / "native.yml").write_text(cfg)
    config = str(tmp_path / "native.yml")
    env = mongo_tools.path_env(base_env(
        MONGODB_URI=uri_for(auth_server), WRONG_URI=uri_for(auth_server, WRONG),
        DEAD_URI=f"mongodb://backup:{PASSWORD}@127.0.0.1:1/?directConnection=true&serverSelectionTimeoutMS=2000"))
    made = backupctl(["run-now", "--config", config], env)
    assert made.returncode == 0, made.stderr
    for target, code, says in (("env:DEAD_URI", 69, "MongoDB at 127.0.0.1:1 is unreachable"),
                               ("env:WRONG_URI", 77, f"MongoDB at {auth_server.address} refused the credentials")):
        failed = backupctl(["restore", "--latest", "--config", config, "--engine", engine, "--yes",
                            "--to", target, "--ns-include", f"{source_db}_shop.users"], env, timeout=90)
        assert failed.returncode == code, failed.stderr
        assert says in failed.stderr.strip().splitlines()[-1]
        assert PASSWORD not in failed.stderr and WRONG not in failed.stderr


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP port that accepts connections and never answers: mongodump waits on it indefinitely."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    yield int(listener.getsockname()[1])
    listener.close()


def mongodump_pids(tools: MongoTools, cwd: Path) -> list[int]:
    """Return the pids of the real mongodumps running in `cwd`: the test's own folder, which its backupctl
    was started in (other test workers run mongodumps of their own; an orphan keeps its folder)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if ((entry / "cmdline").read_bytes().startswith(tools.mongodump.encode() + b"\0")
                        and (entry / "cwd").resolve() == cwd.resolve()):
                    pids.append(int(entry.name))
            except OSError:
                pass
    return pids


def test_a_hanging_real_mongodump_is_killed_at_the_plan_timeout(
        tmp_path: Path, mongo_tools: MongoTools, silent_server: int) -> None:
    cfg = write_config(tmp_path, mongo_tools, "any", extra="    timeout: 3s\n")
    env = base_env(MONGODB_URI=f"mongodb://backup:{PASSWORD}@127.0.0.1:{silent_server}/?directConnection=true"
                               f"&serverSelectionTimeoutMS=600000&connectTimeoutMS=600000")
    started = time.monotonic()
    result = backupctl(["run-now", "--config", str(cfg)], env, timeout=60, cwd=tmp_path)
    assert result.returncode == 124, result.stderr
    assert time.monotonic() - started < 30
    assert mongodump_pids(mongo_tools, tmp_path) == []
    assert PASSWORD not in result.stderr


@pytest.mark.parametrize("server", ["refused port", "silent server"])
def test_real_mongodump_that_cannot_reach_mongodb_fails_with_69_at_the_connect_timeout_not_the_plan_timeout(
        tmp_path: Path, mongo_tools: MongoTools, silent_server: int, server: str) -> None:
    # No plan timeout is set (the default is 8 h): mongodump itself would wait that long.
    cfg = write_config(tmp_path, mongo_tools, "any", extra="    connect_timeout: 2s\n")
    port = 1 if server == "refused port" else silent_server
    env = base_env(MONGODB_URI=f"mongodb://backup:{PASSWORD}@127.0.0.1:{port}/?directConnection=true"
                               f"&serverSelectionTimeoutMS=1500")
    started = time.monotonic()
    result = backupctl(["run-now", "--config", str(cfg)], env, timeout=90, cwd=tmp_path)
    elapsed = time.monotonic() - started
    assert result.returncode == 69, result.stderr
    assert elapsed < 30, f"took {elapsed:.0f} s"
    assert f"MongoDB at 127.0.0.1:{port} is unreachable" in result.stderr.splitlines()[-1]
    assert PASSWORD not in result.stderr
    assert mongodump_pids(mongo_tools, tmp_path) == []
    assert not list((tmp_path / "store").rglob("*.archive.gz"))
    stored = json.loads((tmp_path / "store" / "prod" / "main" / "_status.json").read_text())
    assert stored["last_attempt"]["exit_code"] == 69


def test_sigterm_stops_backupctl_and_its_real_mongodump(
        tmp_path: Path, mongo_tools: MongoTools, silent_server: int) -> None:
    cfg = write_config(tmp_path, mongo_tools, "any")
    env = base_env(MONGODB_URI=f"mongodb://127.0.0.1:{silent_server}/?directConnection=true"
                               f"&serverSelectionTimeoutMS=600000&connectTimeoutMS=600000")
    process = start_backupctl(["run-now", "--config", str(cfg)], env, cwd=tmp_path)
    try:
        servers.wait_until(lambda: bool(mongodump_pids(mongo_tools, tmp_path)), 30, "real mongodump to start")
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=40)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 143, stderr
    servers.wait_until(lambda: not mongodump_pids(mongo_tools, tmp_path), 10, "mongodump to be gone")
    stored = json.loads((tmp_path / "store" / "prod" / "main" / "_status.json").read_text())
    assert stored["last_attempt"]["exit_code"] == 143


def test_a_restore_drill_restores_a_real_mongodump_backup_with_mongorestore(
        tmp_path: Path, mongo_tools: MongoTools, auth_server: servers.Server, source_db: str,  # noqa: F811
        monkeypatch: pytest.MonkeyPatch, server_logs: Path) -> None:
    scratch = servers.start_secantus(server_logs)
    try:
        scratch_uri = f"mongodb://{scratch.address}/?directConnection=true"
        (tmp_path / "store").mkdir()
        cfg = config_module.from_mapping({
            "storage": {"type": "local", "path": str(tmp_path / "store")},
            "plans": {"main": {"mongodb_uri": uri_for(auth_server), "engine": "mongodump",
                               "mongodump_path": mongo_tools.mongodump, "include": [f"{source_db}_crm.*"],
                               "restore_check": {"uri": scratch_uri}}}}, {}, "t")
        plan = cfg.plans["main"]
        storage = LocalStorage(tmp_path / "store")
        assert run_backup(plan, storage).exit_code == 0
        monkeypatch.setenv("PATH", f"{mongo_tools.bin_dir}{os.pathsep}{os.environ['PATH']}")
        state = PlanStates(["main"])
        assert housekeeping.run_restore_check(plan, storage, state) is True
        verdict = records.load(storage, naming.status_name(plan.prefix, plan.name), "main").restore_check
        assert verdict["success"] is True and "with mongorestore" in verdict["message"]
        client: MongoClient[dict[str, Any]] = MongoClient(scratch_uri, serverSelectionTimeoutMS=5000)
        try:
            assert client[f"{source_db}_crm"].contacts.count_documents({}) == 30
        finally:
            client.close()
        # The scratch copy is replaced on every drill (--drop): a second drill passes too.
        assert housekeeping.run_restore_check(plan, storage, None) is True
        storage.close()
    finally:
        scratch.stop()

