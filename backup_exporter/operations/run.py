"""One backup run of one plan: lock, dump → check/hash/count → upload, then commit or abort, then record.

Nothing is lost: a failed, interrupted or empty dump aborts the upload (no object becomes visible) and the
failure is recorded without touching the plan's last success.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from isal import isal_zlib

from backup_exporter import __version__
from backup_exporter.archive import DECOMPRESS_ERRORS
from backup_exporter.archive.counting import ArchiveCounter
from backup_exporter.archive.encryption import EncryptingWriter
from backup_exporter.config import PlanConfig
from backup_exporter.core import naming, status
from backup_exporter.core.argv import mongodump_filters
from backup_exporter.core.cancel import CancelToken
from backup_exporter.core.clock import SYSTEM, Clock
from backup_exporter.core.errors import (
    BackupError,
    DumpFailed,
    ExitCode,
    Interrupted,
    LockHeld,
    UsageError,
)
from backup_exporter.core.plan_state import PlanStates
from backup_exporter.engines.base import DumpInfo, Engine, Sink
from backup_exporter.engines.mongodump import MongodumpEngine
from backup_exporter.engines.process import NativeProcessEngine
from backup_exporter.mongo.estimate import WorkEstimate
from backup_exporter.repository import records
from backup_exporter.repository.metadata import backup_metadata
from backup_exporter.storage.base import Storage, Upload
from backup_exporter.system import holders
from backup_exporter.system.logs import event, plan_logger

ARCHIVE_MAGIC = struct.pack("<I", 0x8199E26D)
TERMINATOR = b"\xff\xff\xff\xff"


@dataclass
class Progress:
    """Live counters of a run, read by the terminal progress line and the status API."""

    started: float = field(default_factory=time.time)
    dumped: int = 0
    upload: Upload | None = None
    archive: ArchiveCounter = field(default_factory=ArchiveCounter)  # documents and source bytes so far
    estimate: WorkEstimate | None = None  # the expected work, when the caller estimated it

    @property
    def uploaded(self) -> int:
        return self.upload.bytes_uploaded if self.upload is not None else 0


@dataclass
class RunOutcome:
    plan: str
    result: str  # success | failure | interrupted | skipped
    exit_code: int
    message: str
    started: float
    finished: float
    name: str = ""
    size: int = 0
    sha256: str = ""
    engine: str = ""
    elapsed: float | None = None  # seconds by the monotonic clock (finished - started can be a wall-clock jump)
    recorded: bool = True  # False when its result could not be written into the plan's status record
    retention_ok: bool | None = None  # set by the after-success step: did retention run cleanly (None: no policy)

    @property
    def duration(self) -> float:
        """Return the run's duration in seconds, never negative."""
        return max(0.0, self.elapsed if self.elapsed is not None else self.finished - self.started)

    def attempt(self) -> status.Attempt:
        """Return this outcome as the attempt the status record keeps."""
        return status.Attempt(started=self.started, finished=self.finished, exit_code=self.exit_code,
                              result=self.result, message=self.message, name=self.name, size=self.size,
                              sha256=self.sha256, engine=self.engine, elapsed=self.elapsed)


class ArchiveSink:
    """Passes archive bytes to the upload while hashing, counting, and checking they form a complete
    gzip stream of a mongodump archive (magic number first, terminator last)."""

    def __init__(self, upload: Sink, progress: Progress, on_bytes: Callable[[int], None] | None = None) -> None:
        self.upload = upload
        self.progress = progress
        self.on_bytes = on_bytes
        self.sha256 = hashlib.sha256()
        self.size = 0
        self._inflate = isal_zlib.decompressobj(wbits=31)
        self._head = b""
        self._tail = b""
        self._gzip_error: str | None = None

    def write(self, data: bytes) -> None:
        if not data:
            return
        self.sha256.update(data)
        self.size += len(data)
        self.progress.dumped = self.size
        self._check(data)
        self.upload.write(data)
        if self.on_bytes is not None:
            self.on_bytes(len(data))

    def _check(self, data: bytes) -> None:
        if self._gzip_error is not None:
            return
        try:
            while data:
                if self._inflate.eof:
                    # A further gzip member: restart on what follows.
                    data = self._inflate.unused_data + data if self._inflate.unused_data else data
                    self._inflate = isal_zlib.decompressobj(wbits=31)
                out = self._inflate.decompress(data, 1 << 20)
                data = self._inflate.unconsumed_tail
                if out:
                    self.progress.archive.feed(out)
                    if len(self._head) < 4:
                        self._head += out[: 4 - len(self._head)]
                    self._tail = (self._tail + out)[-4:]
        except DECOMPRESS_ERRORS as exc:  # ISA-L's inflate: about twice as fast as zlib's
            self._gzip_error = f"the dump output is not valid gzip: {exc}"

    def verdict(self) -> str | None:
        """Return why the output is not a complete archive, or None when it looks complete."""
        if self.size == 0:
            return "the dump tool wrote nothing (0 bytes)"
        if self._gzip_error:
            return self._gzip_error
        if not self._inflate.eof:
            return "the gzip stream is truncated"
        if self._head != ARCHIVE_MAGIC:
            return "the output is not a mongodump archive (bad magic number)"
        if self._tail != TERMINATOR:
            return "the archive is truncated (no final terminator)"
        return None


def select_engine(plan: PlanConfig, grace_seconds: float = 10.0) -> tuple[Engine, str]:
    """Return the engine the plan asks for and why; 'auto' means mongodump when it is on PATH and can
    apply the plan's namespace filters (it has no --nsInclude), else native."""
    engine, why = plan.engine, f"engine: {plan.engine} in the plan"
    if engine == "auto":
        found = shutil.which(plan.mongodump_path)
        engine = "mongodump" if found else "native"
        why = f"auto: {plan.mongodump_path} found at {found}" if found else f"auto: {plan.mongodump_path} not on PATH"
        if found:
            try:
                mongodump_filters(plan.include, plan.exclude)
            except UsageError as exc:
                engine, why = "native", f"auto: {exc.message}"
    return _engine(plan, engine, grace_seconds), why


def _engine(plan: PlanConfig, engine: str, grace_seconds: float) -> Engine:
    if engine == "mongodump":
        return MongodumpEngine(plan.mongodb_uri, binary=plan.mongodump_path, include=plan.include,
                               exclude=plan.exclude, extra_args=plan.mongodump_args, grace_seconds=grace_seconds,
                               plan=plan.name, mongodump_compress=plan.mongodump_compress,
                               compression_level=plan.compression_level,
                               connect_timeout_s=plan.connect_timeout_seconds)
    return NativeProcessEngine(plan.mongodb_uri, include=plan.include, exclude=plan.exclude,
                               connect_timeout_s=plan.connect_timeout_seconds, grace_seconds=grace_seconds,
                               plan=plan.name, compression_level=plan.compression_level,
                               parallel_collections=plan.parallel_collections)


def run_backup(plan: PlanConfig, storage: Storage, *, state: PlanStates | None = None,
               cancel: CancelToken | None = None, trigger: str = "manual", progress: Progress | None = None,
               engine: Engine | None = None, after_success: Callable[[RunOutcome], None] | None = None,
               clock: Clock = SYSTEM, grace_seconds: float = 10.0, slot: datetime | None = None,
               unrecorded: status.Attempt | None = None) -> RunOutcome:
    """Run one backup of `plan` and return its outcome; never raises for a failed run (only
    KeyboardInterrupt/SystemExit propagate, after the run was aborted and recorded).

    A run that finds the plan locked is 'skipped' (exit LOCKED) and records nothing. So is a run for a
    schedule `slot` when the plan's record shows an attempt that started at or after that slot (another
    replica, a run-now, or this daemon before the wall clock was set back already served it). Every other
    outcome is recorded in the plan's status object in storage (if storage is reachable) and in `state`.
    Stamps and the backup's name come from `clock`'s wall clock, the duration from its monotonic clock.
    `grace_seconds` is how long a cancelled dump tool gets between SIGTERM and SIGKILL. `unrecorded` is
    an earlier run's result that could not be written when it ended: it is recorded as this run starts.
    """
    log = plan_logger(__name__, plan.name)
    cancel = cancel or CancelToken()
    progress = progress or Progress()
    began = clock.monotonic()
    started_at = clock.now()
    started = started_at.timestamp()
    progress.started = started
    lock = naming.lock_name(plan.prefix, plan.name)
    try:
        storage.ping()  # a clear "container missing / directory not mounted" before anything else
        holder = holders.describe(trigger)
        with storage.lock(lock, holder):
            return _locked_run(plan, storage, state, cancel, progress, engine, after_success,
                               _Times(clock, started_at, began), log, grace_seconds, holder, slot, unrecorded)
    except LockHeld as exc:
        if state is not None:
            state.run_skipped(plan.name)
        message = exc.message
        if (pid := holders.gone_pid(exc.holder)) is not None:
            message += f" (a stale lock: no process {pid} runs on this host now, so that run was killed)"
        event(log, logging.WARNING, "skipped", "run skipped: %s", message, exit_code=int(ExitCode.LOCKED))
        return RunOutcome(plan.name, "skipped", ExitCode.LOCKED, message, started, clock.now().timestamp(),
                          elapsed=clock.monotonic() - began)
    except BackupError as exc:
        # The lock itself could not be taken (storage down): nothing ran, nothing can be recorded there now
        # (a daemon records it once storage answers: outcome.recorded).
        if state is not None:
            state.run_started(plan.name, started)
            state.run_finished(plan.name, status.FAILURE, exc.exit_code)
        event(log, logging.ERROR, status.FAILURE, "backup failed: %s", exc.message, exit_code=exc.exit_code)
        return RunOutcome(plan.name, status.FAILURE, exc.exit_code, exc.message, started, clock.now().timestamp(),
                          elapsed=clock.monotonic() - began, recorded=False)


@dataclass(frozen=True)
class _Times:
    """A run's start by both clocks, and the clock that ends it."""

    clock: Clock
    started_at: datetime  # wall clock, UTC
    began: float  # monotonic

    def finished(self) -> tuple[datetime, float]:
        """Return the wall-clock time now and the seconds elapsed since the start (monotonic)."""
        return self.clock.now(), self.clock.monotonic() - self.began


def _locked_run(plan: PlanConfig, storage: Storage, state: PlanStates | None, cancel: CancelToken,
                progress: Progress, engine: Engine | None, after_success: Callable[[RunOutcome], None] | None,
                times: _Times, log: logging.LoggerAdapter[logging.Logger], grace_seconds: float, holder: str,
                slot: datetime | None, unrecorded: status.Attempt | None) -> RunOutcome:
    started_at = times.started_at
    started = started_at.timestamp()
    status_key = naming.status_name(plan.prefix, plan.name)
    try:
        stored: status.PlanStatus | None = records.load(storage, status_key, plan.name)
    except BackupError:
        # Any refusal (unreachable, credentials, unreadable record): the dump, the upload or the commit will
        # report the storage problem if it persists; the commit itself refuses a taken name.
        stored = None
    if slot is not None and stored is not None:
        served = _served(stored, slot)
        if served is not None:
            if state is not None:
                state.run_skipped(plan.name)
            message = (f"the run for {_utc(slot.timestamp())} was already made: an attempt started "
                       f"{_utc(served)} (at or after that time)")
            event(log, logging.WARNING, "skipped", "scheduled run skipped: %s", message,
                  exit_code=int(ExitCode.LOCKED))
            now, elapsed = times.finished()
            return RunOutcome(plan.name, "skipped", ExitCode.LOCKED, message, started, now.timestamp(),
                              elapsed=elapsed)
    name = naming.backup_name(plan.prefix, plan.name, _name_time(stored, started_at),
                              encrypted=plan.encryption is not None)
    if state is not None:
        state.run_started(plan.name, started)
    why = "given by the caller"
    if engine is None:
        engine, why = select_engine(plan, grace_seconds)
    event(log, logging.INFO, "started", "backup started: engine %s (%s), into %s", engine.name, why, name,
          engine=engine.name)
    _record_start(storage, status_key, plan.name, status.Running(started, holder, name, engine.name), log,
                  unrecorded)
    upload: Upload | None = None
    sink: ArchiveSink | None = None
    encrypting: EncryptingWriter | None = None
    info: DumpInfo | None = None
    timer: threading.Timer | None = None
    aborts: list[Callable[[], None]] = []  # what the timeout calls to unblock a run stuck on storage
    if plan.timeout_seconds is not None:
        timeout = plan.timeout_seconds

        def expire() -> None:
            cancel.expire(timeout)
            # A dump that waits on a storage that stopped answering sits in a write or the commit: only
            # aborting the upload ends that wait, so the run ends at its bound, not at the SDK's.
            for abort in aborts:
                abort()

        timer = threading.Timer(timeout, expire)
        timer.daemon = True
        timer.start()
    try:
        if cancel.is_set():
            raise cancel.error()
        upload = storage.start_upload(name)
        aborts.append(upload.abort)
        progress.upload = upload
        on_bytes = _state_updater(state, plan.name, progress) if state is not None else None
        if plan.encryption is not None:
            # Checked and counted below as the plain gzip archive; only its age encryption reaches storage.
            encrypting = EncryptingWriter(upload, plan.encryption.recipients)
            aborts.append(encrypting.abort)  # after the upload's: its thread may wait on the upload
        sink = ArchiveSink(encrypting or upload, progress, on_bytes)
        try:
            info = engine.dump(sink, cancel)
        except Interrupted:
            raise cancel.error() from None
        if cancel.is_set():
            raise cancel.error()
        problem = sink.verdict()
        if problem:
            raise DumpFailed(f"{engine.name}: {problem}", ExitCode.DATA)
        stored_sha256, stored_size = encrypting.finish() if encrypting else (sink.sha256.hexdigest(), sink.size)
        finished_at = times.clock.now()
        metadata = backup_metadata(
            sha256=stored_sha256, size=stored_size, plan=plan.name, engine=info.engine,  # of the stored bytes:
            tool_version=info.tool_version, server_version=info.server_version,  # verify needs no key
            source_host=info.source_host, started=started_at, finished=finished_at, exporter_version=__version__)
        if encrypting is not None:
            metadata |= encrypting.metadata() | {"archive_sha256": sink.sha256.hexdigest(),
                                                 "archive_size": str(sink.size)}
        upload.commit(metadata, access_tier=plan.access_tier)
        # The run ends when its backup is committed: the upload's tail belongs to its duration.
        committed_at, elapsed = times.finished()
    except BaseException as exc:
        if encrypting is not None:
            encrypting.abort()
        if upload is not None:
            upload.abort()
        error = exc if isinstance(exc, BackupError) else None
        if error is not None and cancel.timed_out_after is not None and not isinstance(error, Interrupted):
            error = cancel.error()  # what the timeout's abort caused is not the story: the timeout is
        if error is None:
            log.exception("unexpected error during backup")
            error = BackupError(f"internal error: {type(exc).__name__}: {exc}", ExitCode.SOFTWARE)
        result = status.INTERRUPTED if isinstance(error, Interrupted) else status.FAILURE
        failed_at, failed_after = times.finished()
        outcome = RunOutcome(plan.name, result, error.exit_code, error.message, started, failed_at.timestamp(),
                             engine=engine.name, elapsed=failed_after)
        if cancel.timed_out_after is not None:
            # Past its bound, the run may not wait for a storage that stopped answering to take its record.
            _within(RECORD_AFTER_TIMEOUT_SECONDS, lambda: _record(storage, status_key, plan.name, outcome, state, log),
                    log, "recording the timed-out run")
        else:
            _record(storage, status_key, plan.name, outcome, state, log)
        event(log, logging.ERROR, result, "backup %s (exit %d): %s",
              "interrupted" if result == status.INTERRUPTED else "failed", error.exit_code, error.message,
              exit_code=error.exit_code)
        if not isinstance(exc, Exception):
            raise  # KeyboardInterrupt/SystemExit keep propagating after cleanup
        return outcome
    finally:
        if timer is not None:
            timer.cancel()
    outcome = RunOutcome(plan.name, status.SUCCESS, 0, f"stored {name}", started, committed_at.timestamp(),
                         name=name, size=stored_size, sha256=stored_sha256, engine=info.engine, elapsed=elapsed)
    _record(storage, status_key, plan.name, outcome, state, log)
    event(log, logging.INFO, "succeeded", "backup stored: %s (%d bytes in %.1f s)", name, stored_size,
          outcome.duration, exit_code=0, size=stored_size, backup=name, duration=round(outcome.duration, 3))
    if after_success is not None:
        # The backup is stored and recorded: a failing retention or listing must not turn it into a failure.
        try:
            after_success(outcome)
        except BackupError as exc:
            event(log, logging.ERROR, "retention", "after-backup step (retention, storage totals) failed: %s",
                  exc.message)
        except Exception:
            log.exception("internal error in the after-backup step (retention, storage totals)")
    return outcome


def _state_updater(state: PlanStates, plan: str, progress: Progress) -> Callable[[int], None]:
    """Return what the sink calls after each piece it passed on: the uploaded bytes and the progress of
    the run (source bytes dumped, of the estimate when it is known) go into `state`."""
    def update(uploaded: int) -> None:
        state.add_uploaded(plan, uploaded)
        estimate = progress.estimate
        state.set_progress(plan, progress.archive.data_bytes, estimate.size_bytes if estimate is not None else None)

    return update


def _name_time(stored: status.PlanStatus | None, started_at: datetime) -> datetime:
    """Return the time to name this run's backup by: its start, or one second after the plan's newest
    backup (in the record `stored`, None when unreadable) when that is not earlier (a rerun within the same
    second, or a clock set back), so that names stay unique and in order; a commit never replaces an
    existing backup."""
    if stored is None:
        return started_at
    previous = stored.last_success
    newest = naming.time_of(previous.name) if previous is not None and previous.name else None
    if newest is not None and started_at.replace(microsecond=0) <= newest:
        return newest + timedelta(seconds=1)
    return started_at


def _served(stored: status.PlanStatus, slot: datetime) -> float | None:
    """Return the start of the recorded attempt (finished, or under way or abandoned) that began at or after
    the schedule slot `slot`, or None when there is none."""
    starts = [a.started for a in (stored.last_attempt,) if a is not None]
    if stored.running is not None:
        starts.append(stored.running.started)
    later = [s for s in starts if s >= slot.timestamp()]
    return max(later) if later else None


def _utc(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# How long a run past its timeout may still spend recording its failure (the record is then written late, or
# never, and the log says so).
RECORD_AFTER_TIMEOUT_SECONDS = 10.0


def _within(seconds: float, work: Callable[[], None], log: logging.LoggerAdapter[logging.Logger], what: str) -> None:
    """Run `work` in a daemon thread and wait at most `seconds` for it."""
    thread = threading.Thread(target=work, name="bounded", daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        event(log, logging.ERROR, "status_failed", "%s took longer than %g s: storage is not answering; the "
              "status record may show this run late or not at all", what, seconds)


def _record_start(storage: Storage, key: str, plan: str, running: status.Running,
                  log: logging.LoggerAdapter[logging.Logger], unrecorded: status.Attempt | None = None) -> None:
    """Write that this run is under way, so that a run killed before its end (SIGKILL, OOM, a lost node)
    still shows as a failure. An earlier attempt that never finished is recorded as failed first: this run
    holds the plan's lock, so that one cannot be running any more. Never raises: a run whose start cannot
    be recorded still runs, and its end is recorded as usual. `unrecorded`, an earlier run's result that
    could not be written when it ended, is written first (unless the record has moved on since)."""
    def change(current: status.PlanStatus) -> status.PlanStatus:
        if unrecorded is not None:
            current = current.recorded_late(unrecorded) or current
        if current.running is not None:
            event(log, logging.WARNING, "abandoned", "the previous run, started %s by %s, never finished; "
                  "recording it as failed (exit %d)", datetime.fromtimestamp(current.running.started, UTC)
                  .strftime("%Y-%m-%dT%H:%M:%SZ"), current.running.holder, status.ABANDONED_EXIT_CODE)
        return current.starting(running)

    try:
        records.update(storage, key, plan, change)
    except BackupError as exc:
        event(log, logging.WARNING, "status_failed", "could not record the run's start in storage: %s", exc.message)
    except Exception:
        log.exception("internal error while recording the run's start")


def _record(storage: Storage, key: str, plan: str, outcome: RunOutcome, state: PlanStates | None,
            log: logging.LoggerAdapter[logging.Logger]) -> None:
    """Write the run's result into the plan's status record and `state`; set `outcome.recorded` to whether
    the record was written. Never raises (but for KeyboardInterrupt/SystemExit): a committed backup stays
    a success when its record cannot be written."""
    attempt = outcome.attempt()
    outcome.recorded = False
    new_status: status.PlanStatus | None = None
    problem = ""
    try:
        new_status = records.update(storage, key, plan, lambda current: current.recorded(attempt))
        outcome.recorded = True
    except BackupError as exc:  # StorageError, AuthenticationFailed, a lost lease ...: all of storage's refusals
        problem = exc.message
    except Exception as exc:
        log.exception("internal error while recording the run's result")
        problem = f"internal error: {type(exc).__name__}: {exc}"
    if problem:
        if outcome.result == status.SUCCESS:
            event(log, logging.ERROR, "status_failed", "backup %s is stored, but its result could not be "
                  "recorded in storage (other processes and `backupctl status` do not see it yet): %s",
                  outcome.name, problem)
        else:
            event(log, logging.ERROR, "status_failed", "could not record the run's result in storage: %s", problem)
    if state is not None:
        if new_status is None:
            # Unrecorded: show this attempt; the last-success gauges move only if the backup itself is stored.
            new_status = (state.get(plan).record or status.PlanStatus(plan)).recorded(attempt)
        state.run_finished(plan, outcome.result, outcome.exit_code, new_status)
