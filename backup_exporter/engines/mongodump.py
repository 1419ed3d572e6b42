"""The mongodump subprocess engine: `mongodump --archive --gzip` to stdout, streamed onward as produced."""

from __future__ import annotations

import logging
import re
import subprocess
import threading
from collections.abc import Sequence

from backup_exporter import commands
from backup_exporter.engines.base import DumpInfo, Sink
from backup_exporter.errors import DumpFailed, Interrupted
from backup_exporter.execute import Command, exit_code_of

log = logging.getLogger(__name__)

READ_SIZE = 1 << 20


def hosts_of(uri: str) -> str:
    """Return 'host:port,...' of a MongoDB URI without credentials or options."""
    rest = uri.split("://", 1)[-1]
    rest = rest.split("/", 1)[0].split("?", 1)[0]
    return rest.rsplit("@", 1)[-1] or "unknown"


class MongodumpEngine:
    name = "mongodump"

    def __init__(self, uri: str, *, binary: str = "mongodump", include: Sequence[str] = (),
                 exclude: Sequence[str] = (), extra_args: Sequence[str] = (), grace_seconds: float = 10.0,
                 plan: str = "") -> None:
        self.uri = uri
        self.binary = binary
        self.argv = commands.mongodump_argv(binary, include=include, exclude=exclude, extra_args=extra_args)
        self.grace_seconds = grace_seconds
        self.plan = plan

    def tool_version(self) -> str:
        """Return 'mongodump <version>' as the binary reports it, or 'mongodump unknown'."""
        try:
            out = subprocess.run(commands.mongodump_version_argv(self.binary), capture_output=True, timeout=10,
                                 check=False, stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired):
            return "mongodump unknown"
        match = re.search(rb"version:?\s*([0-9][\w.\-]*)", out.stdout + out.stderr)
        return f"mongodump {match.group(1).decode()}" if match else "mongodump unknown"

    def dump(self, sink: Sink, cancel: threading.Event) -> DumpInfo:
        """Run mongodump and copy its stdout into sink. Raises DumpFailed with mongodump's own exit code
        (128+N when killed by signal N) and its last stderr lines, or Interrupted when cancelled."""
        version = self.tool_version()
        try:
            command = Command(self.argv, secret_files={"config": commands.tool_config(self.uri)},
                              log_prefix=f"[{self.plan}] mongodump: " if self.plan else "mongodump: ")
        except OSError as exc:
            raise DumpFailed(f"cannot run {self.binary}: {exc.strerror or exc}", 127) from None
        log.info("started %s (pid %d)", " ".join(command.argv), command.pid)
        watcher = threading.Thread(target=self._stop_on_cancel, args=(command, cancel), daemon=True)
        watcher.start()
        try:
            while True:
                chunk = command.stdout.read1(READ_SIZE)  # type: ignore[attr-defined]
                if not chunk:
                    break
                if cancel.is_set():
                    break
                sink.write(chunk)
        except BaseException:
            command.stop(self.grace_seconds)
            raise
        finally:
            command.close()
        returncode = command.wait()
        if cancel.is_set():
            command.stop(self.grace_seconds)
            raise Interrupted()
        if returncode != 0:
            code = exit_code_of(returncode)
            tail = " | ".join(command.stderr_tail(3)) or "no error output"
            how = f"was killed by signal {-returncode}" if returncode < 0 else f"exited with code {code}"
            raise DumpFailed(f"mongodump {how}: {tail}", code)
        return DumpInfo(engine=self.name, tool_version=version, source_host=hosts_of(self.uri))

    def _stop_on_cancel(self, command: Command, cancel: threading.Event) -> None:
        while command.process.poll() is None:
            if cancel.wait(0.2):
                command.stop(self.grace_seconds)
                return
