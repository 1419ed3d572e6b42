"""Wall-clock jumps, with an injectable clock: no slot runs twice, no negative duration, one catch-up, and
backup names that stay unique and in order. Runs use the real fake-mongodump child and local storage;
APScheduler's part is driven through its own job objects at chosen times."""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from apscheduler.job import Job
from apscheduler.schedulers.background import BackgroundScheduler

from backup_exporter import config as config_module
from backup_exporter.config import Config
from backup_exporter.core.plan_state import PlanStates
from backup_exporter.core.schedule import parse_cron
from backup_exporter.core.status import Attempt, PlanStatus
from backup_exporter.operations.run import RunOutcome, run_backup
from backup_exporter.repository import backups, records
from backup_exporter.serve.metrics import metrics_registry
from backup_exporter.serve.scheduler import PlanScheduler, missed_runs
from backup_exporter.storage.local import LocalStorage
from tests import servers
from tests.cli_helpers import FAKE_MONGODUMP
from tests.clocks import ManualClock

T0 = datetime(2026, 11, 27, 14, 0, 0, 500000, tzinfo=UTC)
HOUR = 3600.0


def make_config(store: Path, schedule: str = "* * * * *") -> Config:
    return config_module.from_mapping(
        {"storage": {"type": "local", "path": str(store)},
         "plans": {"main": {"mongodb_uri": "mongodb://127.0.0.1:1/", "schedule": schedule,
                            "engine": "mongodump", "mongodump_path": FAKE_MONGODUMP}}}, {}, "test")


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FAKE_MONGODUMP_MODE", "sleepy")
    monkeypatch.setenv("FAKE_MONGODUMP_SECONDS", "0.5")
    path = tmp_path / "store"
    path.mkdir()
    return path


def stored_status(store: Path) -> PlanStatus:
    return records.load(LocalStorage(store), "main/_status.json", "main")


# -- runs ------------------------------------------------------------------------------------------------------

def test_a_clock_set_back_an_hour_during_a_run_gives_its_true_duration_never_a_negative_one(store: Path) -> None:
    cfg = make_config(store)
    clock = ManualClock(T0)
    state = PlanStates(cfg.plans)
    outcomes: list[RunOutcome] = []
    runner = threading.Thread(target=lambda: outcomes.append(
        run_backup(cfg.plans["main"], LocalStorage(store), state=state, clock=clock)))
    runner.start()
    servers.wait_until(lambda: state.get("main").in_progress, 30, "the run to start")
    clock.advance(7.5)  # the run takes 7.5 s ...
    clock.jump(-HOUR)  # ... during which NTP steps the wall clock back an hour
    runner.join(60)
    outcome = outcomes[0]
    assert outcome.exit_code == 0, outcome.message
    # Stamps stay wall clock (the finish is now an hour before the start); the duration is the monotonic one.
    assert outcome.started == T0.timestamp()
    assert outcome.finished == T0.timestamp() + 7.5 - HOUR
    assert outcome.duration == 7.5
    recorded = stored_status(store).last_attempt
    assert recorded is not None and recorded.elapsed == 7.5 and recorded.duration == 7.5
    registry = metrics_registry(state)
    assert registry.get_sample_value("backup_last_duration_seconds", {"plan": "main"}) == 7.5
    assert outcome.name == "main/2026-11-27T14-00-00Z.archive.gz"  # named by its start


def test_a_clock_set_back_between_runs_keeps_names_unique_and_in_run_order(store: Path) -> None:
    cfg = make_config(store)
    clock = ManualClock(T0, ticking=True)
    storage = LocalStorage(store)
    names = []
    for jump in (0.0, -HOUR, -60.0, 0.0):
        clock.jump(jump)
        outcome = run_backup(cfg.plans["main"], storage, clock=clock)
        assert outcome.exit_code == 0, outcome.message
        assert outcome.duration > 0.25  # the sleepy dump takes half a second, whatever the wall clock did
        names.append(outcome.name)
    assert len(set(names)) == 4
    # A later backup never gets an earlier name: each one after the set-back is named a second after the
    # newest, so listing (which sorts by name) shows them in the order they were made.
    assert names == sorted(names)
    assert [b.name for b in backups.archives(storage, "main")] == names
    assert names[1] == "main/2026-11-27T14-00-01Z.archive.gz"


def test_old_records_without_elapsed_never_show_a_negative_duration_and_unknown_keys_are_ignored() -> None:
    # Written before durations were kept (or by a newer version with more fields): still readable.
    raw = (b'{"last_attempt": {"started": 100.0, "finished": 40.0, "exit_code": 0, "result": "success",'
           b' "future_field": 1}, "last_success": null, "plan": "main", "running": null}')
    record = PlanStatus.from_json("main", raw)
    assert record.last_attempt is not None and record.last_attempt.duration == 0.0
    state = PlanStates(["main"])
    state.apply_status(record)
    assert metrics_registry(state).get_sample_value("backup_last_duration_seconds", {"plan": "main"}) == 0.0
    assert Attempt(100.0, 40.0, 0, "success", elapsed=12.0).duration == 12.0


# -- slots -------------------------------------------------------------------------------------------------------

def test_a_slot_already_run_before_the_clock_was_set_back_is_not_run_again(store: Path) -> None:
    cfg = make_config(store, "0 * * * *")
    storage = LocalStorage(store)
    clock = ManualClock(T0 + timedelta(seconds=2), ticking=True)
    slot = cfg.plans["main"].schedule.previous_run(clock.now())
    assert slot == T0.replace(microsecond=0)
    first = run_backup(cfg.plans["main"], storage, clock=clock, slot=slot)
    assert first.exit_code == 0, first.message
    # The wall clock is set back an hour, and the daemon restarted: no catch-up (the last attempt is later
    # than now's slot), and when the clock reaches 14:00 again, that slot's run finds it was already made.
    clock.jump(-HOUR)
    assert missed_runs(cfg, storage, clock.now()) == {"main": None}
    clock.jump(HOUR - 1)
    # What APScheduler calls when the slot's time comes (again); the scheduler names the slot by its clock.
    scheduler = PlanScheduler(cfg, storage, PlanStates(cfg.plans), clock=clock)
    scheduler._scheduled_run("main")
    again = scheduler.runs()[0].outcome
    assert again is not None and (again.result, again.exit_code) == ("skipped", 75)
    assert "already made" in again.message and "2026-11-27T14:00:00Z" in again.message
    assert scheduler.state.get("main").runs_skipped == 1
    assert [b.name for b in backups.archives(storage, "main")] == [first.name]
    assert stored_status(store).last_attempt == stored_status(store).last_success  # nothing recorded for it
    # The next slot runs as usual.
    clock.jump(HOUR)
    scheduler._scheduled_run("main")
    nxt = scheduler.runs()[0].outcome
    assert nxt is not None and nxt.exit_code == 0, nxt.message if nxt else None
    assert nxt.name > first.name
    assert scheduler.state.get("main").runs_success == 1


def test_two_replicas_catching_up_the_same_missed_slot_make_one_backup(store: Path) -> None:
    """Both sidecars restart after an outage and decide to catch up; the slower one finds the slot served,
    even when the first one's run is over by the time it gets there (the lock alone would let it run)."""
    cfg = make_config(store, "0 * * * *")
    storage = LocalStorage(store)
    clock = ManualClock(T0 + timedelta(minutes=20), ticking=True)
    long_ago = (T0 - timedelta(hours=5)).timestamp()
    storage.put("main/_status.json", PlanStatus(
        "main", last_attempt=Attempt(long_ago, long_ago + 5, 0, "success", size=10),
        last_success=Attempt(long_ago, long_ago + 5, 0, "success", size=10)).to_json())
    catch_up = missed_runs(cfg, storage, clock.now())
    assert catch_up == {"main": T0.replace(microsecond=0)}  # five slots missed, one catch-up
    replicas = [PlanScheduler(cfg, storage, PlanStates(cfg.plans), clock=clock) for _ in range(2)]
    try:
        replicas[0].start(catch_up)
        servers.wait_until(lambda: replicas[0].state.get("main").runs_success == 1, 30, "the first catch-up")
        replicas[1].start(catch_up)
        servers.wait_until(lambda: replicas[1].state.get("main").runs_skipped == 1, 30, "the second to skip")
    finally:
        for replica in replicas:
            replica.shutdown(5)
    assert replicas[1].state.get("main").runs_success == 0
    assert len(backups.archives(storage, "main")) == 1


def test_the_daemon_notices_a_wall_clock_jump_and_says_what_it_means(
        store: Path, caplog: pytest.LogCaptureFixture) -> None:
    cfg = make_config(store, "0 3 * * *")
    clock = ManualClock(T0, ticking=True)
    scheduler = PlanScheduler(cfg, LocalStorage(store), PlanStates(cfg.plans), clock=clock)
    scheduler.start()
    try:
        with caplog.at_level(logging.WARNING):
            assert scheduler.check_clock() == 0.0
            clock.jump(-HOUR)
            assert scheduler.check_clock() == pytest.approx(-HOUR, abs=1)
            clock.jump(3 * HOUR)
            assert scheduler.check_clock() == pytest.approx(3 * HOUR, abs=1)
            assert scheduler.check_clock() == 0.0  # reported once
    finally:
        scheduler.shutdown(5)
    text = caplog.text
    assert "jumped back 3600 s" in text and "jumped forward 10800 s" in text
    assert "caught up once" in text


# -- APScheduler's decision with our trigger, at chosen times ----------------------------------------------------

def job_at(schedule: str, next_run_time: datetime) -> Job:
    """Return an APScheduler job as the daemon adds it (coalesce, no misfire limit), due at next_run_time."""
    return Job(BackgroundScheduler(timezone=UTC), id="backup:main", func=print, args=(), kwargs={},
               trigger=parse_cron(schedule).trigger(), executor="default", name="backup main",
               misfire_grace_time=None, coalesce=True, max_instances=1, next_run_time=next_run_time)


def due(job: Job, now: datetime) -> tuple[list[datetime], datetime | None]:
    """Return the run times APScheduler 3.x submits at `now` and the job's next fire time after them: the
    steps of BaseScheduler._process_jobs for one job."""
    run_times = job._get_run_times(now)
    run_times = run_times[-1:] if run_times and job.coalesce else run_times
    return run_times, job.trigger.get_next_fire_time(run_times[-1], now) if run_times else job.next_run_time


def test_a_forward_jump_over_many_slots_is_caught_up_once_in_one_step() -> None:
    slot = datetime(2026, 11, 27, 14, 1, tzinfo=UTC)
    job = job_at("* * * * *", slot)
    now = slot + timedelta(days=30, seconds=10)  # a month of per-minute slots passed at once
    run_times, following = due(job, now)
    assert run_times == [datetime(2026, 12, 27, 14, 1, tzinfo=UTC)]  # the latest passed slot, once
    assert following == datetime(2026, 12, 27, 14, 2, tzinfo=UTC)
    # Our trigger jumps straight to the latest passed slot: two steps, not 43,200.
    assert len(job._get_run_times(now)) == 2


def test_a_backward_jump_runs_nothing_until_the_clock_reaches_the_next_slot_again() -> None:
    job = job_at("*/5 * * * *", datetime(2026, 11, 27, 14, 5, tzinfo=UTC))  # 14:00 ran, 14:05 is next
    assert due(job, datetime(2026, 11, 27, 13, 2, tzinfo=UTC)) == ([], job.next_run_time)
    assert due(job, datetime(2026, 11, 27, 14, 4, 59, tzinfo=UTC)) == ([], job.next_run_time)
    assert due(job, datetime(2026, 11, 27, 14, 5, 1, tzinfo=UTC))[0] == [datetime(2026, 11, 27, 14, 5, tzinfo=UTC)]


def test_the_trigger_still_steps_slot_by_slot_when_none_has_passed() -> None:
    trigger = parse_cron("*/15 * * * *").trigger()
    previous = datetime(2026, 11, 27, 14, 0, tzinfo=UTC)
    assert trigger.get_next_fire_time(previous, previous + timedelta(seconds=3)) == previous + timedelta(minutes=15)
    assert trigger.get_next_fire_time(None, previous + timedelta(seconds=3)) == previous + timedelta(minutes=15)
    assert trigger.get_next_fire_time(previous, previous + timedelta(minutes=47)) == previous + timedelta(minutes=45)
