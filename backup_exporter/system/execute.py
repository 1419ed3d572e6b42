"""The one place that starts subprocesses.

Commands are argv tuples built by pure functions elsewhere (``commands.py``); secrets never travel in argv
but through an inherited pipe (``secret_files``), so they are invisible to ``ps`` and to our logs. Children
run in their own process group so that a cancel or shutdown can stop the whole tree.

Every line a child writes on stderr passes the one redaction (core/redact.py, with the caller's known
secrets) before it is logged or kept: mongodump prints the full URI, password included, when it cannot
connect. Children get an environment without the project's secrets (child_environment).
"""

from __future__ import annotations

import collections
import logging
import os
import re
import signal
import subprocess
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import IO

from backup_exporter.core.redact import redact

log = logging.getLogger(__name__)

STDERR_TAIL_LINES = 20
# Variables a child never needs: the project's own settings (URIs, storage keys, push credentials) and
# anything named like a credential. Values that look like a secret are dropped whatever their name.
_SECRET_NAMES = re.compile(r"(?i)^(MONGODB_|AZURE_|BACKUP_|BACKUPCTL_)|PASSWORD|PASSWD|SECRET|TOKEN|"
                           r"CREDENTIAL|ACCOUNT_?KEY|ACCESS_?KEY|API_?KEY|CONNECTION_?STRING|_SAS\b|^SAS_")


def child_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Return `environ` (default: ours) without the variables that hold or may hold secrets."""
    source = os.environ if environ is None else environ
    return {name: value for name, value in source.items()
            if not _SECRET_NAMES.search(name) and redact(value) == value}

# Never passed on, not even in an environment given explicitly: the age identity text (read in-process only).
PRIVATE_ENV = frozenset({"BACKUP_AGE_IDENTITY"})


class Command:
    """A running child process with its stdout as a pipe and its stderr logged and kept (last lines)."""

    def __init__(self, argv: Sequence[str], *, stdin: int | IO[bytes] | None = subprocess.DEVNULL,
                 stdout: int | IO[bytes] | None = subprocess.PIPE,
                 secret_files: Mapping[str, bytes] | None = None, env: Mapping[str, str] | None = None,
                 log_prefix: str = "", quiet_prefix: str | None = None, secrets: Iterable[str] = ()) -> None:
        """Start argv; every "{name}" in argv is replaced with a /dev/fd path whose pipe yields
        secret_files[name]. Stderr lines starting with quiet_prefix are kept but not logged; every line
        is redacted (known shapes and `secrets`) first. `env` None means child_environment().
        Raises FileNotFoundError / PermissionError when the binary cannot start."""
        self.argv = tuple(argv)
        self._secrets = tuple(s for s in secrets if s)
        self._quiet_prefix = quiet_prefix
        self._stderr_tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
        self._log_prefix = log_prefix
        pass_fds: list[int] = []
        writers: list[tuple[int, bytes]] = []
        final_argv = list(self.argv)
        for name, content in (secret_files or {}).items():
            read_fd, write_fd = os.pipe()
            pass_fds.append(read_fd)
            writers.append((write_fd, content))
            final_argv = [a.replace("{" + name + "}", f"/dev/fd/{read_fd}") for a in final_argv]
        try:
            self.process = subprocess.Popen(
                final_argv, stdin=stdin, stdout=stdout, stderr=subprocess.PIPE, pass_fds=pass_fds,
                start_new_session=True, close_fds=True,
                env={k: v for k, v in env.items() if k not in PRIVATE_ENV} if env is not None else child_environment())
        except BaseException:
            # No child will read the secrets: close our ends too, or every failed start (a missing
            # binary, retried on each schedule by the daemon) would leak a descriptor per secret.
            for write_fd, _ in writers:
                os.close(write_fd)
            raise
        finally:
            for fd in pass_fds:
                os.close(fd)
        # Secrets are written from threads: a pipe holds 64 KiB, and the child reads it whenever it likes.
        for write_fd, content in writers:
            threading.Thread(target=_write_and_close, args=(write_fd, content), daemon=True).start()
        self._stderr_thread = threading.Thread(target=self._drain_stderr, daemon=True)
        self._stderr_thread.start()

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def stdout(self) -> IO[bytes]:
        assert self.process.stdout is not None
        return self.process.stdout

    def _drain_stderr(self) -> None:
        assert self.process.stderr is not None
        for raw in self.process.stderr:
            line = redact(raw.decode("utf-8", "replace").rstrip(), self._secrets)
            if line:
                self._stderr_tail.append(line)
                if not (self._quiet_prefix and line.startswith(self._quiet_prefix)):
                    log.info("%s%s", self._log_prefix, line)

    def stderr_tail(self, lines: int = 5) -> list[str]:
        """Return the last `lines` non-empty stderr lines seen so far."""
        self._stderr_thread.join(timeout=2)
        return list(self._stderr_tail)[-lines:]

    def wait(self, timeout: float | None = None) -> int:
        """Return the exit code; -N when killed by signal N. Raises subprocess.TimeoutExpired."""
        return self.process.wait(timeout=timeout)

    def stop(self, grace: float = 10.0) -> int:
        """SIGTERM the child's whole process group, SIGKILL it after `grace` seconds; return the exit code."""
        if self.process.poll() is None:
            _signal_group(self.process.pid, signal.SIGTERM)
            try:
                return self.process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                _signal_group(self.process.pid, signal.SIGKILL)
        code = self.process.wait()
        # Grandchildren may outlive the leader; the group is ours, so clear it.
        _signal_group(self.process.pid, signal.SIGKILL)
        return code

    def close(self) -> None:
        for stream in (self.process.stdout, self.process.stdin):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass


def _write_and_close(fd: int, content: bytes) -> None:
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(content)
    except OSError:
        pass  # the child exited without reading: nothing to do


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def exit_code_of(returncode: int) -> int:
    """Return a shell-style exit code: the code itself, or 128+N for a child killed by signal N."""
    return 128 - returncode if returncode < 0 else returncode


def run_briefly(argv: Sequence[str], timeout: float = 10.0) -> tuple[int, bytes] | None:
    """Run a short command (e.g. `mongodump --version`) with child_environment(); return (exit code,
    stdout + stderr), or None when it cannot start or exceeds `timeout`."""
    try:
        done = subprocess.run(list(argv), capture_output=True, timeout=timeout, check=False,
                              stdin=subprocess.DEVNULL, env=child_environment())
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.returncode, done.stdout + done.stderr
