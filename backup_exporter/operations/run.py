"""One backup run of one plan: lock, dump → check/hash/count → upload, then commit or abort, then record.

Nothing is lost: a failed, interrupted or empty dump aborts the upload (no object becomes visible) and the
failure is recorded without touching the plan's last success.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from isal import isal_zlib

from backup_exporter import __version__
from backup_exporter.archive import DECOMPRESS_ERRORS
from backup_exporter.config import PlanConfig
from backup_exporter.core import naming, status
from backup_exporter.core.cancel import CancelToken
from backup_exporter.core.errors import BackupError, DumpFailed, ExitCode, Interrupted, LockHeld, StorageError
from backup_exporter.engines.base import DumpInfo, Engine
from backup_exporter.engines.mongodump import MongodumpEngine
from backup_exporter.engines.process import NativeProcessEngine
from backup_exporter.repository import records
from backup_exporter.serve.metrics import BackupMetrics
from backup_exporter.storage.base import Storage, Upload
from backup_exporter.system.logs import event, plan_logger

ARCHIVE_MAGIC = struct.pack("<I", 0x8199E26D)
TERMINATOR = b"\xff\xff\xff\xff"


@dataclass
class Progress:
    """Live counters of a run, read by the terminal progress line and the status API."""

    started: float = field(default_factory=time.time)
    dumped: int = 0
    upload: Upload | None = None

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


class ArchiveSink:
    """Passes archive bytes to the upload while hashing, counting, and checking they form a complete
    gzip stream of a mongodump archive (magic number first, terminator last)."""

    def __init__(self, upload: Upload, progress: Progress, on_bytes: Callable[[int], None] | None = None) -> None:
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
    """Return the engine the plan asks for and why; 'auto' means mongodump when it is on PATH, else native."""
    engine, why = plan.engine, f"engine: {plan.engine} in the plan"
    if engine == "auto":
        found = shutil.which(plan.mongodump_path)
        engine = "mongodump" if found else "native"
        why = f"auto: {plan.mongodump_path} found at {found}" if found else f"auto: {plan.mongodump_path} not on PATH"
    return _engine(plan, engine, grace_seconds), why


def _engine(plan: PlanConfig, engine: str, grace_seconds: float) -> Engine:
    if engine == "mongodump":
        return MongodumpEngine(plan.mongodb_uri, binary=plan.mongodump_path, include=plan.include,
                               exclude=plan.exclude, extra_args=plan.mongodump_args, grace_seconds=grace_seconds,
                               plan=plan.name, mongodump_compress=plan.mongodump_compress,
                               compression_level=plan.compression_level)
    return NativeProcessEngine(plan.mongodb_uri, include=plan.include, exclude=plan.exclude,
                               connect_timeout_s=plan.connect_timeout_seconds, grace_seconds=grace_seconds,
                               plan=plan.name, compression_level=plan.compression_level,
                               parallel_collections=plan.parallel_collections)


def holder_description(trigger: str) -> str:
    return f"{socket.gethostname()} pid {os.getpid()} ({trigger})"


def run_backup(plan: PlanConfig, storage: Storage, *, metrics: BackupMetrics | None = None,
               cancel: CancelToken | None = None, trigger: str = "manual", progress: Progress | None = None,
               engine: Engine | None = None, after_success: Callable[[RunOutcome], None] | None = None,
               clock: Callable[[], datetime] = lambda: datetime.now(UTC), grace_seconds: float = 10.0) -> RunOutcome:
    """Run one backup of `plan` and return its outcome; never raises for a failed run (only
    KeyboardInterrupt/SystemExit propagate, after the run was aborted and recorded).

    A run that finds the plan locked is 'skipped' (exit LOCKED) and records nothing. Every other outcome is
    recorded in the plan's status object in storage (if storage is reachable) and in `metrics`.
    `grace_seconds` is how long a cancelled dump tool gets between SIGTERM and SIGKILL.
    """
    log = plan_logger(__name__, plan.name)
    cancel = cancel or CancelToken()
    progress = progress or Progress()
    started_at = clock()
    started = started_at.timestamp()
    progress.started = started
    lock = naming.lock_name(plan.prefix, plan.name)
    try:
        storage.ping()  # a clear "container missing / directory not mounted" before anything else
        with storage.lock(lock, holder_description(trigger)):
            return _locked_run(plan, storage, metrics, cancel, progress, engine, after_success, started_at, clock,
                               log, grace_seconds)
    except LockHeld as exc:
        if metrics is not None:
            metrics.run_skipped(plan.name)
        event(log, logging.WARNING, "skipped", "run skipped: %s", exc.message, exit_code=int(ExitCode.LOCKED))
        return RunOutcome(plan.name, "skipped", ExitCode.LOCKED, exc.message, started, clock().timestamp())
    except BackupError as exc:
        # The lock itself could not be taken (storage down): nothing ran, nothing can be recorded there.
        if metrics is not None:
            metrics.run_started(plan.name, started)
            metrics.last_exit_code.labels(plan.name).set(exc.exit_code)
            metrics.run_finished(plan.name, status.FAILURE)
        event(log, logging.ERROR, status.FAILURE, "backup failed: %s", exc.message, exit_code=exc.exit_code)
        return RunOutcome(plan.name, status.FAILURE, exc.exit_code, exc.message, started, clock().timestamp())


def _locked_run(plan: PlanConfig, storage: Storage, metrics: BackupMetrics | None, cancel: CancelToken,
                progress: Progress, engine: Engine | None, after_success: Callable[[RunOutcome], None] | None,
                started_at: datetime, clock: Callable[[], datetime],
                log: logging.LoggerAdapter[logging.Logger], grace_seconds: float) -> RunOutcome:
    started = started_at.timestamp()
    status_key = naming.status_name(plan.prefix, plan.name)
    name = naming.backup_name(plan.prefix, plan.name, _name_time(storage, status_key, plan.name, started_at))
    if metrics is not None:
        metrics.run_started(plan.name, started)
    why = "given by the caller"
    if engine is None:
        engine, why = select_engine(plan, grace_seconds)
    event(log, logging.INFO, "started", "backup started: engine %s (%s), into %s", engine.name, why, name,
          engine=engine.name)
    upload: Upload | None = None
    sink: ArchiveSink | None = None
    info: DumpInfo | None = None
    timer: threading.Timer | None = None
    if plan.timeout_seconds is not None:
        timer = threading.Timer(plan.timeout_seconds, cancel.expire, args=(plan.timeout_seconds,))
        timer.daemon = True
        timer.start()
    try:
        if cancel.is_set():
            raise cancel.error()
        upload = storage.start_upload(name)
        progress.upload = upload
        on_bytes = (lambda n: metrics.add_uploaded(plan.name, n)) if metrics is not None else None
        sink = ArchiveSink(upload, progress, on_bytes)
        try:
            info = engine.dump(sink, cancel)
        except Interrupted:
            raise cancel.error() from None
        if cancel.is_set():
            raise cancel.error()
        problem = sink.verdict()
        if problem:
            raise DumpFailed(f"{engine.name}: {problem}", ExitCode.DATA)
        finished_at = clock()
        upload.commit({
            "sha256": sink.sha256.hexdigest(),
            "size": str(sink.size),
            "plan": plan.name,
            "engine": info.engine,
            "tool_version": info.tool_version,
            "server_version": info.server_version,
            "source_host": info.source_host,
            "started": started_at.isoformat(),
            "finished": finished_at.isoformat(),
            "exporter_version": __version__,
        })
    except BaseException as exc:
        if upload is not None:
            upload.abort()
        error = exc if isinstance(exc, BackupError) else None
        if error is None:
            log.exception("unexpected error during backup")
            error = BackupError(f"internal error: {type(exc).__name__}: {exc}", ExitCode.SOFTWARE)
        result = status.INTERRUPTED if isinstance(error, Interrupted) else status.FAILURE
        outcome = RunOutcome(plan.name, result, error.exit_code, error.message, started, clock().timestamp(),
                             engine=engine.name)
        _record(storage, status_key, plan.name, outcome, metrics, log)
        event(log, logging.ERROR, result, "backup %s (exit %d): %s",
              "interrupted" if result == status.INTERRUPTED else "failed", error.exit_code, error.message,
              exit_code=error.exit_code)
        if not isinstance(exc, Exception):
            raise  # KeyboardInterrupt/SystemExit keep propagating after cleanup
        return outcome
    finally:
        if timer is not None:
            timer.cancel()
    outcome = RunOutcome(plan.name, status.SUCCESS, 0, f"stored {name}", started, finished_at.timestamp(),
                         name=name, size=sink.size, sha256=sink.sha256.hexdigest(), engine=info.engine)
    _record(storage, status_key, plan.name, outcome, metrics, log)
    event(log, logging.INFO, "succeeded", "backup stored: %s (%d bytes in %.1f s)", name, sink.size,
          outcome.finished - outcome.started, exit_code=0, size=sink.size, backup=name,
          duration=round(outcome.finished - outcome.started, 3))
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


def _name_time(storage: Storage, status_key: str, plan: str, started_at: datetime) -> datetime:
    """Return the time to name this run's backup by: its start, or one second after the plan's newest
    backup when that is not earlier (a rerun within the same second, or a clock set back), so that names
    stay unique and in order; a commit never replaces an existing backup."""
    try:
        previous = records.load(storage, status_key, plan).last_success
    except StorageError:
        return started_at  # the commit itself refuses a name that is taken
    newest = naming.time_of(previous.name) if previous is not None and previous.name else None
    if newest is not None and started_at.replace(microsecond=0) <= newest:
        return newest + timedelta(seconds=1)
    return started_at


def _record(storage: Storage, key: str, plan: str, outcome: RunOutcome, metrics: BackupMetrics | None,
            log: logging.LoggerAdapter[logging.Logger]) -> None:
    attempt = status.Attempt(started=outcome.started, finished=outcome.finished, exit_code=outcome.exit_code,
                             result=outcome.result, message=outcome.message, name=outcome.name, size=outcome.size,
                             sha256=outcome.sha256, engine=outcome.engine)
    new_status: status.PlanStatus | None = None
    try:
        new_status = records.update(storage, key, plan, lambda current: current.recorded(attempt))
    except StorageError as exc:
        event(log, logging.ERROR, "status_failed", "could not record the run's result in storage: %s", exc.message)
        if outcome.result == status.SUCCESS:
            outcome.result, outcome.exit_code = status.FAILURE, int(ExitCode.STORAGE)
            outcome.message = f"backup {outcome.name} stored, but its result could not be recorded: {exc.message}"
    if metrics is not None:
        if new_status is None:
            # Unrecorded: show this attempt; the last-success gauges move only if the backup itself is stored.
            new_status = status.PlanStatus(plan).recorded(attempt)
        metrics.apply_status(new_status)
        metrics.last_exit_code.labels(plan).set(outcome.exit_code)
        metrics.run_finished(plan, outcome.result)
