"""Dump engines that run as a child process writing `--archive --gzip` (or a plain `--archive`, which is
then gzip-compressed here with ISA-L) to stdout.

The child runs in its own process group with the connection URI in a `--config` file on a pipe; its
stdout is streamed into the sink as it is produced, its stderr logged line by line. Running the dump out of
process keeps a busy dump from slowing the daemon's /metrics endpoint and isolates its memory and crashes.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections.abc import Callable, Sequence

from backup_exporter.archive import DEFAULT_COMPRESSION_LEVEL, GzipStreamWriter, Writable
from backup_exporter.core import argv as commands
from backup_exporter.core.errors import BackupError, DumpFailed, Interrupted, SourceUnavailable
from backup_exporter.engines.base import DUMP_INFO_MARKER, DumpInfo, Sink
from backup_exporter.mongo.uri import render_hosts, uri_secrets
from backup_exporter.system.execute import Command, exit_code_of

log = logging.getLogger(__name__)

READ_SIZE = 1 << 20
FIRST_BYTE_PATIENCE = 2.0  # seconds a child may take to its first byte before the source is asked whether it answers
# The native child reports what it dumped on its last stderr line, after this marker.


class ProcessEngine:
    """Runs `argv` (which holds the "{config}" placeholder) and streams its stdout into the sink; with a
    `compression_level`, the stdout is an uncompressed archive that is gzip-compressed on its way (ISA-L, in
    a compressor thread, so reading the pipe and compressing overlap)."""

    name = "process"

    def __init__(self, uri: str, argv: Sequence[str], *, grace_seconds: float = 10.0, plan: str = "",
                 compression_level: int | None = None) -> None:
        self.uri = uri
        self.argv = tuple(argv)
        self.grace_seconds = grace_seconds
        self.plan = plan
        self.compression_level = compression_level
        # For a child that would keep retrying an unreachable source: returns the error when the source does
        # not answer at all, else None; asked while the child has written nothing. None (no watchdog) for a
        # child that gives up by itself (the native engine).
        self.reachability: Callable[[], BackupError | None] | None = None

    def tool_version(self) -> str:
        return self.name

    def failure_message(self, returncode: int, stderr_tail: list[str]) -> str:
        """Return the one-line message for a child that exited with `returncode` (non-zero)."""
        tail = " | ".join(stderr_tail) or "no error output"
        if returncode < 0:
            return f"{self.name} was killed by signal {-returncode}: {tail}"
        return f"{self.name} exited with code {returncode}: {tail}"

    def failure_error(self, returncode: int, stderr_tail: list[str]) -> BackupError:
        """Return the exception for a child that exited with `returncode`: DumpFailed with the child's
        own exit code (128+N when killed by signal N)."""
        return DumpFailed(self.failure_message(returncode, stderr_tail), exit_code_of(returncode))

    def dump(self, sink: Sink, cancel: threading.Event) -> DumpInfo:
        """Run the child and copy its stdout into sink. Raises DumpFailed with the child's own exit code
        (128+N when killed by signal N) and its last stderr lines, or Interrupted when cancelled."""
        version = self.tool_version()
        prefix = f"[{self.plan}] {self.name}: " if self.plan else f"{self.name}: "
        try:
            command = Command(self.argv, secret_files={"config": commands.tool_config(self.uri)}, log_prefix=prefix,
                              quiet_prefix=DUMP_INFO_MARKER, secrets=uri_secrets(self.uri))
        except OSError as exc:
            raise DumpFailed(f"cannot run {self.argv[0]}: {exc.strerror or exc}", 127) from None
        log.debug("started %s (pid %d)", " ".join(command.argv), command.pid)
        watcher = threading.Thread(target=self._stop_on_cancel, args=(command, cancel), daemon=True)
        watcher.start()
        first_byte = threading.Event()
        unreachable: list[BackupError] = []
        if self.reachability is not None:
            threading.Thread(target=self._stop_if_unreachable,
                             args=(command, self.reachability, first_byte, cancel, unreachable),
                             name=f"reachability-{self.plan}", daemon=True).start()
        gz = GzipStreamWriter(sink, self.compression_level) if self.compression_level is not None else None
        out: Writable = gz if gz is not None else sink
        received = 0
        try:
            try:
                while True:
                    chunk = command.stdout.read1(READ_SIZE)  # type: ignore[attr-defined]
                    if not chunk or cancel.is_set():
                        break
                    first_byte.set()
                    received += len(chunk)
                    out.write(chunk)
            except BaseException:
                command.stop(self.grace_seconds)
                raise
            finally:
                command.close()
            returncode = command.wait()
            if cancel.is_set():
                command.stop(self.grace_seconds)
                raise Interrupted()
            if unreachable:
                raise unreachable[0]
            if returncode != 0:
                lines = [line for line in command.stderr_tail(4) if not line.startswith(DUMP_INFO_MARKER)]
                raise self.failure_error(returncode, lines[-3:])
            if gz is not None:
                # A tool that wrote nothing must leave the sink empty ("wrote nothing"), not an empty gzip.
                gz.close() if received else gz.abort()
        except BaseException:
            if gz is not None:
                gz.abort()
            raise
        info = DumpInfo(engine=self.name, tool_version=version, source_host=render_hosts(self.uri))
        self.read_dump_info(command, info)
        return info

    def read_dump_info(self, command: Command, info: DumpInfo) -> None:
        """Fill `info` from the child's report line, when it wrote one."""
        for line in reversed(command.stderr_tail(3)):
            if line.startswith(DUMP_INFO_MARKER):
                try:
                    report = json.loads(line[len(DUMP_INFO_MARKER):])
                    info.tool_version = str(report.get("tool_version", info.tool_version))
                    info.server_version = str(report.get("server_version", info.server_version))
                    info.namespaces = {str(k): int(v) for k, v in dict(report.get("namespaces", {})).items()}
                except (ValueError, TypeError, AttributeError):
                    log.warning("%s: unreadable dump report ignored", self.name)
                return

    def _stop_if_unreachable(self, command: Command, reachability: Callable[[], BackupError | None],
                             first_byte: threading.Event, cancel: threading.Event,
                             verdict: list[BackupError]) -> None:
        """Stop a child that has written nothing when the source does not answer (appending the reason to
        `verdict`); a child that writes, ends or is cancelled first is left alone."""
        started = time.monotonic()
        # A healthy child writes its first bytes within a moment: only one that has not is worth a ping (and a
        # client of its own, whose threads would outlive a quick run).
        while not first_byte.is_set() and time.monotonic() - started < FIRST_BYTE_PATIENCE:
            if cancel.is_set() or command.process.poll() is not None:
                return
            first_byte.wait(0.1)
        if first_byte.is_set():
            return
        error = reachability()
        if error is None or first_byte.is_set() or cancel.is_set() or command.process.poll() is not None:
            return
        waited = time.monotonic() - started
        verdict.append(SourceUnavailable(f"{error.message}; {self.name} had written nothing after {waited:.0f} s "
                                         "and was stopped (it keeps retrying a server it cannot reach)"))
        log.debug("stopping %s: the source does not answer", self.name)
        # Nothing was written, so nothing is lost by a short grace; mongodump ignores SIGTERM in this state.
        command.stop(min(self.grace_seconds, 2.0))

    def _stop_on_cancel(self, command: Command, cancel: threading.Event) -> None:
        while command.process.poll() is None:
            if cancel.wait(0.2):
                command.stop(self.grace_seconds)
                return


class NativeProcessEngine(ProcessEngine):
    """The native (pymongo) engine run as `python -m backup_exporter.engines.native` in a child process."""

    name = "native"

    def __init__(self, uri: str, *, include: Sequence[str] = (), exclude: Sequence[str] = (),
                 connect_timeout_s: float = 10.0, grace_seconds: float = 10.0, plan: str = "",
                 compression_level: int = DEFAULT_COMPRESSION_LEVEL, parallel_collections: int = 4) -> None:
        # The child compresses (its own compressor thread): the archive arrives here already gzipped.
        super().__init__(uri, commands.native_dump_argv(sys.executable, include=include, exclude=exclude,
                                                        connect_timeout_s=connect_timeout_s,
                                                        compression_level=compression_level,
                                                        parallel_collections=parallel_collections),
                         grace_seconds=grace_seconds, plan=plan)

    def failure_message(self, returncode: int, stderr_tail: list[str]) -> str:
        # The child's last line is already the one-line reason (it exits with the matching code).
        if returncode > 0 and stderr_tail:
            return stderr_tail[-1]
        return super().failure_message(returncode, stderr_tail)
