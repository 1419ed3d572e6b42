"""Runs each plan on its cron schedule (APScheduler 3.x), one run per plan at a time.

Overlap rules: a plan never runs twice at once in this process (a run that would overlap is skipped and
counted) nor across processes (the storage lock, taken by the runner). Missed runs are coalesced: a run
missed while the daemon was down or busy is caught up once.

Clock jumps (see ``core.clock`` for why the clock is injected and what APScheduler reads itself): the
scheduler owns a `Clock`. A scheduled run names the slot it serves (the latest fire time at or before the
clock's now) and the runner skips it when the plan's record shows an attempt that began at or after that
slot, so a slot is never run twice: not after the wall clock was set back (then this daemon's runs pause
until the clock reaches the slots it already ran), not by two replicas, not by a catch-up at start.
`check_clock`, called by the daemon's status refresh, logs a jump and wakes APScheduler, which computed its
sleep from the old wall time: a forward jump is then caught up once within the refresh interval.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from apscheduler.events import EVENT_JOB_MAX_INSTANCES, JobEvent
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler

from backup_exporter.config import Config, PlanConfig
from backup_exporter.core import naming, status
from backup_exporter.core.cancel import CancelToken
from backup_exporter.core.clock import SYSTEM, Clock, JumpWatch
from backup_exporter.core.errors import BackupError, ExitCode
from backup_exporter.core.plan_state import PlanStates
from backup_exporter.operations.estimating import EstimateTask
from backup_exporter.operations.run import Progress, RunOutcome, run_backup
from backup_exporter.repository import records
from backup_exporter.storage.base import Storage
from backup_exporter.system import holders
from backup_exporter.system.logs import event, plan_logger

log = logging.getLogger(__name__)

# A wall-clock change beyond the monotonic one smaller than this is NTP slewing, not a step worth a log line.
JUMP_SECONDS = 5.0

# Share of the grace period a cancelled dump tool gets before SIGKILL; the rest is for aborting the upload
# and recording the run as interrupted before the daemon exits.
ENGINE_GRACE_SHARE = 0.75
# How long a run starting waits for refresh_status to finish writing an earlier run's result late (a lock
# blob lease, a read and a write of the status record: milliseconds while storage answers).
LATE_WAIT_SECONDS = 60.0


class SchedulerClosed(RuntimeError):
    """Raised by start_manual once shutdown has begun: no new run may start."""


@dataclass
class RunState:
    """A run known to this process, for the status API."""

    id: str
    plan: str
    trigger: str
    progress: Progress
    cancel: CancelToken = field(default_factory=CancelToken)
    outcome: RunOutcome | None = None

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"id": self.id, "plan": self.plan, "trigger": self.trigger,
                                "state": "finished" if self.outcome else "running",
                                "started": self.progress.started, "dumped_bytes": self.progress.dumped,
                                "uploaded_bytes": self.progress.uploaded,
                                "source_bytes": self.progress.archive.data_bytes,
                                "estimated_source_bytes": (self.progress.estimate.size_bytes
                                                           if self.progress.estimate is not None else None)}
        if self.outcome is not None:
            o = self.outcome
            data.update(result=o.result, exit_code=o.exit_code, message=o.message, finished=o.finished,
                        name=o.name, size=o.size, sha256=o.sha256)
        return data


class PlanScheduler:
    """Owns the APScheduler instance, the runs in flight, and the plans' live state they update."""

    def __init__(self, cfg: Config, storage: Storage, state: PlanStates,
                 after_success: Callable[[PlanConfig], Callable[[RunOutcome], None] | None] | None = None,
                 clock: Clock = SYSTEM) -> None:
        self.cfg = cfg
        self.clock = clock
        self._jumps = JumpWatch(clock)
        self.storage = storage
        self.state = state
        self.after_success = after_success
        self._plan_locks = {name: threading.Lock() for name in cfg.plans}
        self._runs: dict[str, RunState] = {}
        self._runs_lock = threading.Lock()
        # Set (to the stopping signal) under _runs_lock by shutdown(); no run registers after that.
        self._closing: int | None = None
        # Set at shutdown, for jobs other than backups (restore drills) that must stop too.
        self.stopping = CancelToken()
        # Bumped under _runs_lock when a run of the plan registers; refresh_status compares it to know that
        # no run recorded between its storage read and its apply.
        self._generation = dict.fromkeys(cfg.plans, 0)
        self.scheduler = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(max_workers=cfg.server.max_parallel_runs)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
            timezone=UTC)
        self.scheduler.add_listener(self._on_max_instances, EVENT_JOB_MAX_INSTANCES)
        self.extra_jobs: list[tuple[Callable[..., Any], Any, str]] = []
        # Why the last refresh_status could not read a plan's record (for the daemon's 503 answer).
        self.refresh_error = ""
        # Per plan, this process's last run whose result could not be written into the status record (storage
        # was unreachable when it ended): refresh_status writes it once storage answers (guarded by _runs_lock).
        self._unrecorded: dict[str, RunOutcome] = {}
        # Plans whose in-process lock refresh_status holds, briefly, to write such a result (not a run).
        self._late: set[str] = set()

    # -- lifecycle --------------------------------------------------------------------------------------

    def start(self, catch_up: dict[str, datetime | None] | None = None) -> None:
        """Schedule every plan and start; a plan with a slot in catch_up runs once right away, for that slot."""
        for plan in self.cfg.plans.values():
            self.scheduler.add_job(self._scheduled_run, plan.schedule.trigger(), args=[plan.name],
                                   id=f"backup:{plan.name}", name=f"backup {plan.name}")
        for func, trigger, job_id in self.extra_jobs:
            self.scheduler.add_job(func, trigger, id=job_id, name=job_id)
        self.scheduler.start()
        for name, slot in (catch_up or {}).items():
            if slot is not None:
                event(plan_logger(__name__, name), logging.INFO, "catch_up",
                      "a scheduled run was missed while the daemon was down: running it once now")
                self.scheduler.add_job(self._scheduled_run, args=[name, slot], id=f"catch-up:{name}",
                                       name=f"catch-up {name}")
        self.update_next_runs()

    def shutdown(self, grace_seconds: float, signum: int = signal.SIGTERM) -> None:
        """Refuse new runs, cancel running backups with `signum` (they abort and record 'interrupted' with
        exit 128+signum), wait up to grace for them, then stop the scheduler."""
        self.scheduler.pause()
        with self._runs_lock:
            self._closing = signum
            running = [r for r in self._runs.values() if r.outcome is None]
        self.stopping.cancel(signum)
        for run in running:
            run.cancel.cancel(signum)
        deadline = time.monotonic() + grace_seconds
        while self.running() and time.monotonic() < deadline:
            time.sleep(0.05)
        self.scheduler.shutdown(wait=False)

    @property
    def closing(self) -> bool:
        return self._closing is not None

    @property
    def alive(self) -> bool:
        return bool(self.scheduler.running)

    def check_clock(self) -> float:
        """Return how far the wall clock jumped since the last check (0.0 under JUMP_SECONDS); on a jump, log
        it and wake APScheduler so it judges what is due by the new time."""
        jump = self._jumps.jump()
        if abs(jump) < JUMP_SECONDS:
            return 0.0
        logger = logging.LoggerAdapter(log, {})
        if jump > 0:
            event(logger, logging.WARNING, "clock_jump", "the wall clock jumped forward %.0f s: runs whose time "
                  "has passed are caught up once", jump)
        else:
            event(logger, logging.WARNING, "clock_jump", "the wall clock jumped back %.0f s: scheduled runs wait "
                  "until the clock reaches the runs already made (up to %.0f s without a scheduled backup)",
                  -jump, -jump)
        if self.scheduler.running:
            self.scheduler.wakeup()
        self.update_next_runs()
        return jump

    def update_next_runs(self) -> None:
        for plan in self.cfg.plans:
            job = self.scheduler.get_job(f"backup:{plan}")
            if job is not None and job.next_run_time is not None:
                self.state.set_next_run(plan, job.next_run_time.timestamp())

    # -- runs -------------------------------------------------------------------------------------------

    def running(self) -> list[RunState]:
        with self._runs_lock:
            return [r for r in self._runs.values() if r.outcome is None]

    def runs(self) -> list[RunState]:
        """Return the runs this process knows, newest first."""
        with self._runs_lock:
            return list(reversed(self._runs.values()))

    def is_running(self, plan: str) -> bool:
        # No _runs_lock here: callers hold it. A set's membership test is atomic.
        return self._plan_locks[plan].locked() and plan not in self._late

    def _acquire(self, plan: str) -> bool:
        """Take the plan's in-process lock for a run; return False when a run of the plan holds it. Waits
        (bounded) while refresh_status holds it to write an earlier run's result late: that is no run."""
        lock = self._plan_locks[plan]
        if lock.acquire(blocking=False):
            return True
        with self._runs_lock:  # the late writer takes and leaves the lock and _late together under it
            if plan not in self._late:
                return lock.acquire(blocking=False)
        return lock.acquire(timeout=LATE_WAIT_SECONDS)

    def start_manual(self, plan: str) -> RunState | None:
        """Start a run of `plan` in the background; return it, or None when the plan is already running.
        Raises SchedulerClosed once shutdown has begun."""
        lock = self._plan_locks[plan]
        if not self._acquire(plan):
            if self.closing:
                raise SchedulerClosed("the daemon is shutting down")
            return None
        run = self._new_run(plan, "api")
        if run is None:
            lock.release()
            raise SchedulerClosed("the daemon is shutting down")
        threading.Thread(target=self._execute, args=(run, lock), daemon=True, name=f"run-{plan}").start()
        return run

    def _scheduled_run(self, plan: str, slot: datetime | None = None) -> None:
        """Run `plan` for its schedule slot: `slot`, or the latest fire time at or before the clock's now."""
        if slot is None:
            slot = self.cfg.plans[plan].schedule.previous_run(self.clock.now())
        lock = self._plan_locks[plan]
        if not self._acquire(plan):
            self.state.run_skipped(plan)
            event(plan_logger(__name__, plan), logging.WARNING, "skipped",
                  "scheduled run skipped: the previous run of this plan is still going")
            self.update_next_runs()
            return
        run = self._new_run(plan, "schedule")
        if run is None:  # submitted to the pool just before shutdown paused the scheduler
            lock.release()
            return
        self._execute(run, lock, slot)

    def _new_run(self, plan: str, trigger: str) -> RunState | None:
        """Register a run of `plan` (whose plan lock the caller holds); return None once shutdown began."""
        run = RunState(id=uuid.uuid4().hex[:12], plan=plan, trigger=trigger, progress=Progress())
        with self._runs_lock:
            if self._closing is not None:
                return None
            self._generation[plan] += 1
            # Keep the last few finished runs for the status API.
            finished = [k for k, r in self._runs.items() if r.outcome is not None]
            for key in finished[:-20]:
                del self._runs[key]
            self._runs[run.id] = run
        return run

    def _execute(self, run: RunState, lock: threading.Lock, slot: datetime | None = None) -> None:
        plan = self.cfg.plans[run.plan]
        outcome: RunOutcome | None = None
        with self._runs_lock:
            earlier = self._unrecorded.get(run.plan)
        try:
            hook = self.after_success(plan) if self.after_success else None
            # The estimate the progress metrics compare with; in its own thread, so it never delays the run.
            EstimateTask(plan, run.progress).start()
            # An earlier run's result still unrecorded is written by this run as it starts, under its lock.
            outcome = run_backup(plan, self.storage, state=self.state, cancel=run.cancel,
                                 trigger=f"daemon {run.trigger}", progress=run.progress, after_success=hook,
                                 grace_seconds=self.cfg.server.grace_period_seconds * ENGINE_GRACE_SHARE,
                                 clock=self.clock, slot=slot,
                                 unrecorded=earlier.attempt() if earlier is not None else None)
        except Exception as exc:  # never let a bug kill the scheduler thread silently
            log.exception("internal error in run of plan %s", run.plan)
            now = self.clock.now().timestamp()
            outcome = RunOutcome(run.plan, status.FAILURE, ExitCode.SOFTWARE, f"internal error: {exc}", now, now,
                                 elapsed=0.0)
            self.state.run_finished(run.plan, status.FAILURE, ExitCode.SOFTWARE)
        finally:
            # A skipped run (None: KeyboardInterrupt/SystemExit ends the process) leaves an unrecorded one be;
            # any other wrote it as it started, or is itself the newer result to write.
            if outcome is not None and outcome.result != "skipped":
                with self._runs_lock:
                    if outcome.recorded:
                        self._unrecorded.pop(run.plan, None)
                    else:
                        self._unrecorded[run.plan] = outcome
            lock.release()
            self.update_next_runs()
        # Published only after the plan lock is free, so "finished" always means a new run may start.
        run.outcome = outcome

    def _on_max_instances(self, job_event: JobEvent) -> None:
        plan = job_event.job_id.split(":", 1)[-1]
        if plan in self.cfg.plans:
            self.state.run_skipped(plan)
            event(plan_logger(__name__, plan), logging.WARNING, "skipped",
                  "scheduled run skipped: the previous run of this plan is still going")

    # -- shared truth -----------------------------------------------------------------------------------

    def refresh_status(self) -> bool:
        """Reload every idle plan's stored status into the live state; return True when storage answered."""
        ok = True
        for plan in self.cfg.plans.values():
            with self._runs_lock:
                generation = self._generation[plan.name]
            if self.is_running(plan.name):
                continue
            if not self._record_late(plan):
                # The live state already shows that run; the stored record, older, must not replace it.
                continue
            try:
                record = records.load(self.storage, naming.status_name(plan.prefix, plan.name), plan.name)
                record = records.settle(self.storage, record, naming.lock_name(plan.prefix, plan.name))
            except BackupError as exc:
                ok = False
                self.refresh_error = f"plan {plan.name}: {exc.message}"
                log.warning("could not refresh the status of plan %s: %s", plan.name, exc.message)
                continue
            with self._runs_lock:
                # A run that started meanwhile already set fresher values (and its record may be newer than
                # what was read): applying the read would turn the gauges back until the next refresh.
                if self.is_running(plan.name) or self._generation[plan.name] != generation:
                    continue
                self.state.apply_status(record)
        return ok

    def _record_late(self, plan: PlanConfig) -> bool:
        """Write this process's unrecorded last run of `plan` into its status record, under the plan's lock;
        return True when nothing is left to write (written, or the record has moved on since)."""
        with self._runs_lock:
            outcome = self._unrecorded.get(plan.name)
        if outcome is None:
            return True
        lock = self._plan_locks[plan.name]
        with self._runs_lock:
            if not lock.acquire(blocking=False):
                return False  # a run started: it writes that result itself
            self._late.add(plan.name)
        try:
            return self._write_late(plan, outcome)
        finally:
            with self._runs_lock:
                self._late.discard(plan.name)
                lock.release()

    def _write_late(self, plan: PlanConfig, outcome: RunOutcome) -> bool:
        """Write `outcome` into the plan's record under its storage lock; return False when that cannot be
        done yet (storage refusing, or the lock still held: the failed run's unreleased lease)."""
        attempt = outcome.attempt()
        log_ = plan_logger(__name__, plan.name)
        late: list[bool] = []

        def change(current: status.PlanStatus) -> status.PlanStatus:
            updated = current.recorded_late(attempt)
            late.append(updated is not None)
            return updated or current

        try:
            # The lock a failed run could not release is its own lease, which expires by itself: until then
            # this waits (LockHeld), as any other run would.
            with self.storage.lock(naming.lock_name(plan.prefix, plan.name), holders.describe("daemon record")):
                records.update(self.storage, naming.status_name(plan.prefix, plan.name), plan.name, change)
        except BackupError as exc:
            log_.debug("the result of the run started at %s is not recorded yet: %s", outcome.started, exc.message)
            return False
        with self._runs_lock:
            if self._unrecorded.get(plan.name) is outcome:
                del self._unrecorded[plan.name]
        if late and late[0]:
            event(log_, logging.INFO, "recorded_late", "storage answers again: recorded the run started %s "
                  "(exit %d) that could not be recorded when it ended", datetime.fromtimestamp(
                      outcome.started, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), outcome.exit_code)
        return True


def missed_runs(cfg: Config, storage: Storage, now: datetime) -> dict[str, datetime | None]:
    """Return, per plan, the latest schedule slot that fell between its last recorded attempt and now (the
    one catch-up run serves it), or None.

    A plan that never ran is not caught up: its first run comes at its schedule. Nor is one whose last
    attempt is later than now's slot (the wall clock was set back since).
    """
    due: dict[str, datetime | None] = {}
    for plan in cfg.plans.values():
        due[plan.name] = None
        try:
            record = records.load(storage, naming.status_name(plan.prefix, plan.name), plan.name)
        except BackupError:
            continue
        if record.last_attempt is None:
            continue
        previous = plan.schedule.previous_run(now)
        if previous is not None and previous.timestamp() > record.last_attempt.started + 1:
            due[plan.name] = previous
    return due
