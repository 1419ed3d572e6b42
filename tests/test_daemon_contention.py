"""Two daemons (two sidecars on two replicas) and `backupctl run-now` on one plan, over minutes: never two
dumps of the plan at the same time.

The real parts: SecantusDB behind the fault proxy's bandwidth limit (so each dump takes seconds and an
overlap would happen if the lock failed), Azurite shared by every process, the daemons and run-now as real
processes with JSON logs. The plan fires every minute, so both daemons compete at each slot, while run-now
runs back to back and the run API is called on both daemons. What is checked comes from the logs' start and
end times, the stored backups' metadata and the plan's record.

BACKUP_TEST_CONTENTION_SECONDS sets the normal test's length (default 130 s: at least two contended slots);
the soak variant (BACKUP_TEST_SOAK_CONTENTION_SECONDS, default 360 s) runs in `scripts/test --soak`.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import signal
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from bson import Binary
from pymongo import MongoClient

from backup_exporter.repository import backups, records
from backup_exporter.storage.azure import AzureStorage
from backup_exporter.storage.base import Storage
from tests import servers
from tests.cli_helpers import backupctl, base_env
from tests.daemon_helpers import DaemonProcess, post, start_daemon
from tests.faultproxy import fault_proxy

NORMAL_SECONDS = float(os.environ.get("BACKUP_TEST_CONTENTION_SECONDS", "130"))
SOAK_SECONDS = float(os.environ.get("BACKUP_TEST_SOAK_CONTENTION_SECONDS", "360"))
TOKEN = "contention-token"
DOCS, PAYLOAD = 160, 8192  # 1.25 MiB of incompressible documents ...
BANDWIDTH = 256 << 10  # ... read at 256 KiB/s: a dump takes about 5 s
TERMINAL = ("succeeded", "failure", "interrupted")


@dataclass(frozen=True)
class Run:
    source: str  # which process
    start: float
    end: float
    result: str  # the terminal event
    backup: str


def parse_log(source: str, text: str) -> tuple[list[Run], list[dict[str, Any]]]:
    """Return the runs of plan main in one process's JSON log (each 'started' paired with the event that
    ends it) and its other events of that plan. Fails when a run starts before the previous one ended."""
    runs: list[Run] = []
    others: list[dict[str, Any]] = []
    opened: dict[str, Any] | None = None
    for line in text.splitlines():
        if not line.startswith("{"):
            continue
        entry = json.loads(line)
        if entry.get("plan") != "main":
            continue
        stamp = datetime.fromisoformat(entry["time"]).timestamp()
        if entry.get("event") == "started":
            assert opened is None, f"{source}: a run started while its previous one had not ended: {line}"
            opened = {**entry, "stamp": stamp}
        elif entry.get("event") in TERMINAL and opened is not None:
            runs.append(Run(source, opened["stamp"], stamp, entry["event"], entry.get("backup", "")))
            opened = None
        else:
            others.append(entry)
    assert opened is None, f"{source}: a run never ended in the log"
    return runs, others


def assert_never_overlapping(intervals: list[tuple[float, float, str]], what: str) -> None:
    intervals = sorted(intervals)
    for start, end, who in intervals:
        assert start <= end, f"{what}: {who} ends before it starts ({start} > {end})"
    for (start, end, who), (next_start, _, next_who) in itertools.pairwise(intervals):
        assert next_start >= end, (f"{what}: {next_who} started at {next_start:.3f} while {who} "
                                   f"({start:.3f}-{end:.3f}) was still dumping")


def write_config(path: Path, container: str, db: str) -> Path:
    path.write_text(f"""storage:
  container: {container}
  connection_string: ${{AZURE_STORAGE_CONNECTION_STRING}}
server:
  api_token: ${{BACKUP_API_TOKEN}}
  status_refresh: 2s
  grace_period: 5s
log_format: json
plans:
  main:
    mongodb_uri: ${{MONGODB_URI}}
    schedule: "* * * * *"
    engine: native
    include: ["{db}.*"]
    timeout: 120s
""")
    return path


class RunNowLoop(threading.Thread):
    """`backupctl run-now` back to back, as an operator's loop would, until stopped."""

    def __init__(self, config: Path, env: dict[str, str]) -> None:
        super().__init__(name="run-now-loop", daemon=True)
        self.config, self.env = config, env
        self.stop = threading.Event()
        self.results: list[tuple[int, str]] = []  # (exit code, stderr)

    def run(self) -> None:
        while not self.stop.is_set():
            result = backupctl(["run-now", "--config", str(self.config)], self.env, timeout=180)
            self.results.append((result.returncode, result.stderr))
            self.stop.wait(random.uniform(0, 1.5))


class ApiHammer(threading.Thread):
    """Asks both daemons for a run every few seconds; also collects the runs their status API shows."""

    def __init__(self, daemons: list[DaemonProcess]) -> None:
        super().__init__(name="api-hammer", daemon=True)
        self.daemons = daemons
        self.stop = threading.Event()
        self.answers: list[int] = []
        self.seen: dict[str, dict[str, Any]] = {}  # run id (per daemon) -> its last known state

    def run(self) -> None:
        while not self.stop.is_set():
            target = random.choice(self.daemons)
            self.answers.append(post(f"{target.url}/api/v1/plans/main/run", TOKEN)[0])
            for _ in range(3):
                self.observe()
                if self.stop.wait(1):
                    break

    def observe(self) -> None:
        for daemon in self.daemons:
            for run in daemon.status()["runs"]:
                self.seen[f"{daemon.port}:{run['id']}"] = run


def contend(seconds: float, tmp_path: Path, mongo_client: MongoClient, mongo_uri: str,  # type: ignore[type-arg]
            azure_connection_string: str, container: str) -> None:
    db = f"ct{uuid.uuid4().hex[:6]}"
    mongo_client[db]["chunks"].insert_many([{"_id": i, "data": Binary(os.urandom(PAYLOAD))} for i in range(DOCS)])
    config = write_config(tmp_path / "backup.yml", container, db)
    started: list[DaemonProcess] = []
    try:
        with fault_proxy(int(mongo_uri.split(":")[2].split("/")[0]), http=False) as proxy:
            proxy.bandwidth(BANDWIDTH)
            env = base_env(MONGODB_URI=f"mongodb://127.0.0.1:{proxy.port}/?directConnection=true",
                           AZURE_STORAGE_CONNECTION_STRING=azure_connection_string, BACKUP_API_TOKEN=TOKEN)
            for _ in range(2):
                started.append(start_daemon(config, env, tmp_path / "logs"))
            loop, hammer = RunNowLoop(config, env), ApiHammer(started)
            loop.start()
            hammer.start()
            begun = time.monotonic()
            while time.monotonic() - begun < seconds:
                time.sleep(2)
                assert all(d.process.poll() is None for d in started), "a daemon died"
            loop.stop.set()
            hammer.stop.set()
            loop.join(200)
            hammer.join(30)
            # Let what the daemons run finish before stopping them (a slot firing meanwhile is interrupted).
            servers.wait_until(lambda: not any(d.status()["plans"]["main"]["running"] for d in started), 60,
                               "the daemons' runs to end")
            hammer.observe()
            skipped_metric = {d.port: d.value("backup_runs_total", plan="main", result="skipped") for d in started}
            for daemon in started:
                assert daemon.stop(signal.SIGTERM) == 0, daemon.log()
        storage: Storage = AzureStorage(container, connection_string=azure_connection_string)
        try:
            check(started, loop, hammer, skipped_metric, storage, seconds)
        finally:
            storage.close()
    finally:
        for daemon in started:
            daemon.stop(signal.SIGKILL)
        mongo_client.drop_database(db)


def check(daemons: list[DaemonProcess], loop: RunNowLoop, hammer: ApiHammer, skipped_metric: dict[int, float | None],
          storage: Storage, seconds: float) -> None:
    logs = [(f"daemon :{d.port}", d.log()) for d in daemons]
    logs += [(f"run-now #{i} (exit {code})", stderr) for i, (code, stderr) in enumerate(loop.results)]
    parsed = {source: parse_log(source, text) for source, text in logs}
    runs = [run for found, _ in parsed.values() for run in found]
    # First what matters most: at no moment did two processes dump the plan.
    assert_never_overlapping([(r.start, r.end, f"{r.source} ({r.backup})") for r in runs], "the logs")
    stored = backups.archives(storage, "main")
    assert_never_overlapping([(datetime.fromisoformat(o.metadata["started"]).timestamp(),
                               datetime.fromisoformat(o.metadata["finished"]).timestamp(), o.name) for o in stored],
                             "the stored backups' metadata")
    # Every attempt succeeded, or was skipped (and counted) because another run held the plan.
    skips = 0
    for daemon, (source, _) in zip(daemons, logs, strict=False):
        found, others = parsed[source]
        daemon_skips = [e for e in others if e.get("event") == "skipped"]
        skips += len(daemon_skips)
        assert skipped_metric[daemon.port] == len(daemon_skips), daemon.log()
        problems = [e for e in others if e.get("level") in ("error", "critical") or e.get("event") == "abandoned"]
        assert not problems, problems
        # An interruption can only be the daemon's shutdown ending a run that a slot started at the very end.
        assert all(r.result == "succeeded" for r in found[:-1]), found
        # Both daemons competed at the slots: each fired at least once per minute that passed.
        scheduled = [r for key, r in hammer.seen.items()
                     if key.startswith(f"{daemon.port}:") and r["trigger"] == "schedule"]
        busy = [e for e in daemon_skips if "still going" in e["message"]]
        assert len(scheduled) + len(busy) >= int(seconds // 60), (source, scheduled, busy)
    codes = [code for code, _ in loop.results]
    assert set(codes) <= {0, 75}, loop.results
    for source, text in logs[len(daemons):]:
        found, others = parsed[source]
        ok = "(exit 0)" in source
        assert [r.result for r in found] == (["succeeded"] if ok else []), text
        assert [e["event"] for e in others if e.get("event") == "skipped"] == ([] if ok else ["skipped"]), text
    skips += codes.count(75)
    assert set(hammer.answers) <= {202, 409}, hammer.answers
    succeeded = sorted(r.backup for r in runs if r.result == "succeeded")
    assert sorted(o.name for o in stored) == succeeded
    record = records.load(storage, "main/_status.json", "main")
    assert record.running is None and record.last_success is not None
    assert record.last_success.name == max(succeeded)
    print(f"contention over {seconds:.0f} s: {len(succeeded)} backups, {skips} skipped runs, "
          f"run-now {codes.count(0)} stored / {codes.count(75)} skipped, API {hammer.answers.count(202)} started / "
          f"{hammer.answers.count(409)} refused (already running there)")
    # The contention was real: runs were refused because another process held the plan.
    assert len(succeeded) >= 3 and skips >= 3, (len(succeeded), skips)
    assert codes.count(0) >= 1 and codes.count(75) >= 1, codes


@pytest.mark.timeout(NORMAL_SECONDS + 240)
def test_two_daemons_and_run_now_on_one_plan_never_dump_it_twice_at_once(  # type: ignore[no-untyped-def]
        tmp_path: Path, mongo_client, mongo_uri: str, azure_connection_string: str, container: str) -> None:
    contend(NORMAL_SECONDS, tmp_path, mongo_client, mongo_uri, azure_connection_string, container)


@pytest.mark.soak
@pytest.mark.timeout(SOAK_SECONDS + 240)
def test_two_daemons_and_run_now_on_one_plan_for_minutes_never_dump_it_twice_at_once(  # type: ignore[no-untyped-def]
        tmp_path: Path, mongo_client, mongo_uri: str, azure_connection_string: str, container: str) -> None:
    contend(SOAK_SECONDS, tmp_path, mongo_client, mongo_uri, azure_connection_string, container)
