"""The plans' live state, the one metrics collector over it, and how a run's result reaches both.

Runs use the real fake-mongodump tool and real local storage. Where storage must refuse the credentials,
a LocalStorage subclass refuses only the status object (as Azure does with a SAS that expired between the
commit and the record), everything else is the real backend.
"""

from __future__ import annotations

import math
import threading
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from backup_exporter import config as config_module
from backup_exporter.core.errors import AuthenticationFailed
from backup_exporter.core.plan_state import PlanStates
from backup_exporter.core.status import Attempt, PlanStatus, Running
from backup_exporter.operations import housekeeping
from backup_exporter.operations.run import run_backup
from backup_exporter.serve.metrics import GAUGES, gauge_values, metrics_registry
from backup_exporter.storage.local import LocalStorage
from tests.cli_helpers import FAKE_MONGODUMP


class StatusRefused(LocalStorage):
    """Local storage whose status objects are refused as an expired credential would be."""

    def __init__(self, root: Path, *, reads: bool = False) -> None:
        super().__init__(root)
        self.reads = reads

    def put(self, name: str, data: bytes) -> None:
        raise AuthenticationFailed("storage refused the credentials (AuthenticationFailed: SAS expired)")

    def get(self, name: str) -> bytes | None:
        if self.reads:
            raise AuthenticationFailed("storage refused the credentials (AuthenticationFailed: SAS expired)")
        return super().get(name)


def _plan(tmp_path: Path, **extra: object) -> config_module.PlanConfig:
    cfg = config_module.from_mapping({
        "storage": {"type": "local", "path": str(tmp_path)},
        "plans": {"main": {"mongodb_uri": "mongodb://127.0.0.1:1/", "engine": "mongodump",
                           "mongodump_path": FAKE_MONGODUMP, **extra}}}, {}, "test")
    return cfg.plans["main"]


@pytest.mark.parametrize("reads", [False, True], ids=["status-write-refused", "status-read-and-write-refused"])
def test_a_committed_backup_whose_record_is_refused_is_one_success_and_retention_runs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, reads: bool) -> None:
    monkeypatch.setenv("FAKE_MONGODUMP_MODE", "ok")  # read by the real fake-mongodump child process
    plan = _plan(tmp_path, retention={"keep_last": 1})
    storage = StatusRefused(tmp_path, reads=reads)
    state = PlanStates(["main"])
    hook_ran = threading.Event()
    retention = housekeeping.after_success_hook(plan, storage, state)

    def after_success(outcome):  # type: ignore[no-untyped-def]
        hook_ran.set()
        retention(outcome)

    outcome = run_backup(plan, storage, state=state, after_success=after_success)
    assert (outcome.result, outcome.exit_code) == ("success", 0), outcome.message
    assert [p.name for p in tmp_path.glob("main/*.archive.gz")] == [outcome.name.rsplit("/", 1)[-1]]
    snapshot = state.get("main")
    assert (snapshot.runs("success"), snapshot.runs("failure"), snapshot.runs("skipped")) == (1, 0, 0)
    assert snapshot.last_success == outcome.finished and snapshot.last_size == outcome.size
    assert snapshot.last_exit_code == 0 and not snapshot.in_progress
    assert hook_ran.is_set() and snapshot.stored_backups == 1
    assert "is stored, but its result could not be recorded" in caplog.text
    assert "SAS expired" in caplog.text


def test_a_failed_run_whose_record_is_refused_keeps_the_last_success_it_knew(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plan = _plan(tmp_path)
    state = PlanStates(["main"])
    monkeypatch.setenv("FAKE_MONGODUMP_MODE", "ok")
    first = run_backup(plan, LocalStorage(tmp_path), state=state)
    assert first.exit_code == 0
    monkeypatch.setenv("FAKE_MONGODUMP_MODE", "fail")
    failed = run_backup(plan, StatusRefused(tmp_path), state=state)
    assert failed.result == "failure" and failed.exit_code == 1
    snapshot = state.get("main")
    assert snapshot.last_success == first.finished and snapshot.last_exit_code == 1
    assert (snapshot.runs("success"), snapshot.runs("failure")) == (1, 1)


def test_the_collector_shows_every_series_of_every_plan_from_the_state() -> None:
    state = PlanStates(["a", "b"])
    state.apply_status(PlanStatus("a").recorded(Attempt(100.0, 160.0, 0, "success", name="x", size=42)))
    state.run_skipped("b")
    state.add_uploaded("a", 5)
    state.set_next_run("b", 2000.0)
    registry = metrics_registry(state)
    assert registry.get_sample_value("backup_last_success_timestamp_seconds", {"plan": "a"}) == 160
    assert registry.get_sample_value("backup_last_duration_seconds", {"plan": "a"}) == 60
    assert registry.get_sample_value("backup_last_size_bytes", {"plan": "a"}) == 42
    assert registry.get_sample_value("backup_last_success_timestamp_seconds", {"plan": "b"}) == 0
    assert registry.get_sample_value("backup_next_run_timestamp_seconds", {"plan": "b"}) == 2000
    assert registry.get_sample_value("backup_runs_total", {"plan": "b", "result": "skipped"}) == 1
    assert registry.get_sample_value("backup_uploaded_bytes_total", {"plan": "a"}) == 5
    assert registry.get_sample_value("backup_exporter_build_info") is None  # it carries labels
    families = {f.name: f for f in text_string_to_metric_families(generate_latest(registry).decode())}
    assert set(GAUGES) <= set(families)
    assert families["backup_runs"].type == "counter"
    assert {s.labels["plan"] for s in families["backup_in_progress"].samples} == {"a", "b"}
    assert gauge_values(state.get("a"))["backup_last_size_bytes"] == 42


def test_the_pushgateway_collector_has_no_counters_and_leaves_out_what_it_is_told() -> None:
    state = PlanStates(["a"])
    text = generate_latest(metrics_registry(state, counters=False, exclude={"backup_in_progress"})).decode()
    assert "backup_runs_total" not in text and "backup_uploaded_bytes_total" not in text
    assert "backup_in_progress" not in text
    assert 'backup_last_success_timestamp_seconds{plan="a"} 0.0' in text


def test_the_progress_of_a_run_is_shown_while_it_runs_and_nan_otherwise() -> None:
    state = PlanStates(["a"])
    registry = metrics_registry(state)

    def values() -> tuple[float | None, float | None, float | None]:
        return tuple(registry.get_sample_value(f"backup_progress_{name}", {"plan": "a"})  # type: ignore[return-value]
                     for name in ("bytes", "estimated_bytes", "ratio"))

    done, estimated, ratio = values()
    assert done == 0 and estimated is not None and math.isnan(estimated) and ratio is not None and math.isnan(ratio)
    state.set_progress("a", 10, 100)  # no run under way: ignored
    assert values()[0] == 0
    state.run_started("a", 1000.0)
    state.set_progress("a", 30, None)  # estimate not known yet
    done, estimated, ratio = values()
    assert done == 30 and estimated is not None and math.isnan(estimated) and ratio is not None and math.isnan(ratio)
    state.set_progress("a", 40, 160)
    assert values() == (40, 160, 0.25)
    state.set_progress("a", 200, 160)  # beyond the estimate: said, not hidden
    assert values() == (200, 160, 1.25)
    state.run_finished("a", "success", 0)
    done, estimated, ratio = values()
    assert done == 0 and estimated is not None and math.isnan(estimated) and ratio is not None and math.isnan(ratio)
    pushed = generate_latest(metrics_registry(state, counters=False)).decode()
    assert "backup_progress" not in pushed  # a one-shot run pushes after its end: no progress to show


def test_concurrent_updates_are_never_lost() -> None:
    state = PlanStates(["a"])

    def work() -> None:
        for _ in range(2000):
            state.add_uploaded("a", 1)
            state.run_skipped("a")

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert state.get("a").uploaded_bytes == 8000 and state.get("a").runs("skipped") == 8000


def _attempt(started: float, exit_code: int, result: str = "failure") -> Attempt:
    return Attempt(started=started, finished=started + 5, exit_code=exit_code, result=result, message="m")


def test_a_result_recorded_late_replaces_what_its_run_left_behind_and_never_a_newer_run() -> None:
    ok = _attempt(100, 0, "success")
    late = _attempt(200, 74)
    started = PlanStatus("p", last_attempt=ok, last_success=ok).starting(Running(200, "h pid 1 (x)"))
    after = started.recorded_late(late)
    assert after is not None and after.running is None
    assert after.last_attempt == late and after.last_success == ok
    # Another process already settled it as "never finished": the real result replaces that guess.
    settled = started.abandoned()
    assert settled.last_attempt is not None and settled.last_attempt.exit_code == 137
    replaced = settled.recorded_late(late)
    assert replaced is not None and replaced.last_attempt == late and replaced.last_success == ok
    # Never recorded at all (storage down before the lock): it becomes the last attempt when newer.
    never = PlanStatus("p", last_attempt=ok, last_success=ok).recorded_late(late)
    assert never is not None and never.last_attempt == late
    # A newer run, finished or under way, wins.
    newer = _attempt(300, 0, "success")
    assert PlanStatus("p", last_attempt=newer, last_success=newer).recorded_late(late) is None
    assert started.starting(Running(300, "other")).recorded_late(late) is None
