"""The soak: hundreds of back-to-back runs through one daemon, on local storage and on Azurite, with the
daemon's open file descriptors, threads and RSS sampled after a warm-up. Nothing may grow by 10% or more,
every run must be recorded (metrics counters, retention, the stored status record, the log) and no child
process may outlive its run.

Long (minutes): marked `soak`, run by `scripts/test --soak` only; the normal `scripts/test` deselects it.
SOAK_RUNS overrides the number of runs per backend (for a quick try; the README's figures are for 300).
"""

from __future__ import annotations

import json
import os
import statistics
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]
import pytest
from azure.storage.blob import ContainerClient
from pymongo import MongoClient

from tests.cli_helpers import base_env
from tests.daemon_helpers import DaemonProcess, post, start_daemon

pytestmark = [pytest.mark.soak, pytest.mark.timeout(1800)]

RUNS = int(os.environ.get("SOAK_RUNS", "300"))
WARM_UP = min(20, RUNS // 3)  # runs before the first sample: lazy imports, pools, caches settle
WINDOW = max(1, min(10, (RUNS - WARM_UP) // 4))  # samples whose median is compared, at warm-up and at the end
MAX_GROWTH = 0.10
KEEP_LAST = 5
TOKEN = "soak-token"
DATABASE = "soak_db"
# In the daemon's environment, so inherited by every process it starts (it holds no secret): finds any of
# them still alive after a run, even one re-parented to init.
MARKER = f"soak-{uuid.uuid4().hex}"


@pytest.fixture(scope="module")
def soak_database(mongo_client: MongoClient[dict[str, Any]]) -> Iterator[str]:
    """A small database (two collections, ~1,000 documents) in the session's SecantusDB."""
    db = mongo_client[DATABASE]
    db.drop_collection("orders")
    db.drop_collection("users")
    db["orders"].insert_many([{"_id": i, "sku": f"sku-{i % 37}", "qty": i % 7, "note": "x" * 120}
                              for i in range(800)])
    db["users"].insert_many([{"_id": f"u{i}", "name": f"user {i}"} for i in range(200)])
    yield DATABASE
    mongo_client.drop_database(DATABASE)


@dataclass
class Sample:
    run: int
    fds: int
    threads: int
    rss: int


@dataclass
class Soak:
    samples: list[Sample] = field(default_factory=list)
    children_seen: int = 0  # runs during which a dump child carrying the marker was seen
    seconds: float = 0.0

    def median(self, what: str, samples: list[Sample]) -> float:
        return float(statistics.median(getattr(s, what) for s in samples))

    def figures(self) -> dict[str, tuple[float, float, float]]:
        """Return {measure: (median at warm-up, median at the end, growth as a fraction)}."""
        first, last = self.samples[:WINDOW], self.samples[-WINDOW:]
        out: dict[str, tuple[float, float, float]] = {}
        for what in ("fds", "threads", "rss"):
            start, end = self.median(what, first), self.median(what, last)
            out[what] = (start, end, (end - start) / start)
        return out


def _config(path: Path, storage: str) -> Path:
    path.write_text(f"""storage:
{storage}
server:
  api_token: ${{BACKUP_API_TOKEN}}
  status_refresh: 1s
plans:
  main:
    mongodb_uri: ${{MONGODB_URI}}
    engine: native
    include: ["{DATABASE}.*"]
    schedule: "0 0 1 1 *"
    timeout: 120s
    retention: {{keep_last: {KEEP_LAST}}}
""")
    return path


def _successes(daemon: DaemonProcess) -> int:
    return int(daemon.value("backup_runs_total", plan="main", result="success") or 0)


def _children(process: psutil.Process) -> list[str]:
    """Return the daemon's living and zombie descendants, as 'pid name status'."""
    found = []
    for child in process.children(recursive=True):
        try:
            found.append(f"{child.pid} {child.name()} {child.status()}")
        except psutil.NoSuchProcess:
            pass
    return found


def _marked(marker: str, daemon_pid: int) -> list[str]:
    """Return the processes other than the daemon whose environment holds `marker`: the daemon's
    descendants, also those that an exiting child left behind to be adopted by init."""
    needle = marker.encode()
    found = []
    for pid in psutil.pids():
        if pid == daemon_pid:
            continue
        try:
            if needle in Path(f"/proc/{pid}/environ").read_bytes():
                found.append(f"{pid} {Path(f'/proc/{pid}/cmdline').read_bytes()[:200]!r}")
        except OSError:
            pass
    return found


def _run_once(daemon: DaemonProcess, process: psutil.Process, number: int, soak: Soak) -> None:
    """Start run `number` through the run API and wait until it is recorded and its child is gone."""
    deadline = time.monotonic() + 120
    while True:
        code, body = post(f"{daemon.url}/api/v1/plans/main/run", TOKEN)
        if code == 202:
            break
        # 409: the previous run's after-success step (retention) still holds the plan for a moment.
        assert code == 409 and time.monotonic() < deadline, f"run {number}: {code} {body}"
        time.sleep(0.05)
    seen = False
    while _successes(daemon) < number:
        seen = seen or bool(_marked(MARKER, process.pid))
        assert time.monotonic() < deadline, f"run {number} not recorded in 120 s:\n{daemon.log()[-3000:]}"
        assert daemon.process.poll() is None, f"the daemon exited:\n{daemon.log()[-3000:]}"
        failed = daemon.value("backup_runs_total", plan="main", result="failure")
        assert not failed, f"run {number} failed:\n{daemon.log()[-3000:]}"
        time.sleep(0.05)
    # The run is recorded only after its dump child exited and was reaped; allow a moment for that.
    settle = time.monotonic() + 5
    while (left := _children(process)) and time.monotonic() < settle:
        time.sleep(0.05)
    assert not left, f"run {number} left child processes: {left}"
    assert not (orphans := _marked(MARKER, process.pid)), f"run {number} left processes behind: {orphans}"
    soak.children_seen += seen


def _sample(process: psutil.Process, number: int) -> Sample:
    """Return the daemon's quiet figures after run `number`: the least of four readings over 150 ms, so
    that a request thread still ending or the status refresher's storage ping in flight is not counted
    (a leak raises the least reading too)."""
    readings = []
    for _ in range(4):
        with process.oneshot():
            readings.append(Sample(number, process.num_fds(), process.num_threads(), process.memory_info().rss))
        time.sleep(0.05)
    return Sample(number, min(r.fds for r in readings), min(r.threads for r in readings),
                  min(r.rss for r in readings))


def _soak(daemon: DaemonProcess) -> Soak:
    process = psutil.Process(daemon.process.pid)
    soak = Soak()
    started = time.monotonic()
    for number in range(1, RUNS + 1):
        _run_once(daemon, process, number, soak)
        if number > WARM_UP:
            soak.samples.append(_sample(process, number))
    soak.seconds = time.monotonic() - started
    # The marker reaches the dump children, so the leftover check above could have failed.
    assert soak.children_seen > RUNS // 2, f"a dump child was seen in only {soak.children_seen} runs"
    return soak


def _report(capsys: pytest.CaptureFixture[str], backend: str, soak: Soak,
            daemon: DaemonProcess) -> dict[str, tuple[float, float, float]]:
    figures = soak.figures()
    size = int(daemon.value("backup_last_size_bytes", plan="main") or 0)
    lines = [f"soak on {backend}: {RUNS} runs of a {size}-byte backup in {soak.seconds:.0f} s "
             f"({soak.seconds / RUNS:.2f} s per run); "
             f"a dump child seen in {soak.children_seen} runs, none left; "
             f"medians of {WINDOW} samples after run {WARM_UP} and of the last {WINDOW}:"]
    for what, (start, end, growth) in figures.items():
        unit = (lambda v: f"{v / 2**20:.1f} MiB") if what == "rss" else (lambda v: f"{v:g}")
        values = [getattr(s, what) for s in soak.samples]
        lines.append(f"  {what:8} {unit(start)} -> {unit(end)} ({growth:+.1%}); "
                     f"min {unit(min(values))}, max {unit(max(values))}")
    step = max(1, len(soak.samples) // 10)
    trend = ", ".join(f"{s.run}: {s.rss / 2**20:.1f}" for s in soak.samples[::step])
    lines.append(f"  rss (MiB) after run {trend}")
    with capsys.disabled():  # on the terminal of a run in one process
        print("\n" + "\n".join(lines))
    print("\n".join(lines))  # captured too: `-rP` shows it when the soak runs in parallel workers
    return figures


def _check_everything_recorded(daemon: DaemonProcess, status_json: dict[str, Any]) -> None:
    assert _successes(daemon) == RUNS
    assert daemon.value("backup_runs_total", plan="main", result="failure") == 0
    assert daemon.value("backup_runs_total", plan="main", result="skipped") == 0
    assert daemon.value("backup_retention_deleted_total", plan="main") == RUNS - KEEP_LAST
    assert daemon.value("backup_stored_backups", plan="main") == KEEP_LAST
    assert daemon.value("backup_in_progress", plan="main") == 0
    assert status_json["last_attempt"]["result"] == "success"
    assert status_json["last_success"]["name"] == status_json["last_attempt"]["name"]
    assert status_json.get("running") is None
    log = daemon.log()
    assert log.count("backup stored: main/") == RUNS
    assert log.count("backup started: ") == RUNS


def _assert_flat(figures: dict[str, tuple[float, float, float]]) -> None:
    for what, (start, end, growth) in figures.items():
        assert growth < MAX_GROWTH, f"{what} grew {growth:.1%} after warm-up: {start:g} -> {end:g}"


def test_300_runs_through_the_daemon_on_local_storage_leak_nothing(
        tmp_path: Path, mongo_uri: str, soak_database: str, capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "store"
    store.mkdir()
    config = _config(tmp_path / "soak.yml", f"  type: local\n  path: {store}")
    env = base_env(MONGODB_URI=mongo_uri, BACKUP_API_TOKEN=TOKEN, SOAK_MARKER=MARKER)
    daemon = start_daemon(config, env, tmp_path / "logs")
    try:
        soak = _soak(daemon)
        figures = _report(capsys, "local storage", soak, daemon)
        status_json = json.loads((store / "main" / "_status.json").read_text())
        _check_everything_recorded(daemon, status_json)
        assert len(list((store / "main").glob("*.archive.gz"))) == KEEP_LAST
    finally:
        exit_code = daemon.stop()
    assert exit_code == 0, daemon.log()[-3000:]
    _assert_flat(figures)


def test_300_runs_through_the_daemon_on_azurite_leak_nothing(
        tmp_path: Path, mongo_uri: str, soak_database: str, azure_connection_string: str, container: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    config = _config(tmp_path / "soak.yml",
                     f"  container: {container}\n  connection_string: ${{AZURE_STORAGE_CONNECTION_STRING}}")
    env = base_env(MONGODB_URI=mongo_uri, BACKUP_API_TOKEN=TOKEN, SOAK_MARKER=MARKER,
                   AZURE_STORAGE_CONNECTION_STRING=azure_connection_string)
    daemon = start_daemon(config, env, tmp_path / "logs")
    try:
        soak = _soak(daemon)
        figures = _report(capsys, "Azurite", soak, daemon)
        admin = ContainerClient.from_connection_string(azure_connection_string, container)
        try:
            status_json = json.loads(admin.download_blob("main/_status.json").readall())
            archives = [b.name for b in admin.list_blobs(name_starts_with="main/") if b.name.endswith(".archive.gz")]
        finally:
            admin.close()
        _check_everything_recorded(daemon, status_json)
        assert len(archives) == KEEP_LAST
    finally:
        exit_code = daemon.stop()
    assert exit_code == 0, daemon.log()[-3000:]
    _assert_flat(figures)
