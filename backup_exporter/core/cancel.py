"""Stopping a run: the token a signal handler, a shutdown or a plan's timeout sets, and the error it means."""

from __future__ import annotations

import signal
import threading

from backup_exporter.core.errors import BackupError, ExitCode, Interrupted


class CancelToken(threading.Event):
    """Set by a signal handler (or shutdown) to stop a run; remembers which signal, or that the plan's
    timeout expired."""

    signum: int = signal.SIGTERM
    timed_out_after: float | None = None

    def cancel(self, signum: int = signal.SIGTERM) -> None:
        self.signum = signum
        self.set()

    def expire(self, seconds: float) -> None:
        if not self.is_set():
            self.timed_out_after = seconds
            self.set()

    def error(self) -> BackupError:
        """Return why the run stopped: a timeout is a failure (exit 124), a signal an interruption."""
        if self.timed_out_after is not None:
            return BackupError(f"the run exceeded the plan's timeout of {self.timed_out_after:g} s and was "
                               "stopped; nothing was committed", ExitCode.TIMEOUT)
        return Interrupted(self.signum)


def interrupted(cancel: threading.Event) -> Interrupted:
    """Return the Interrupted error for a set cancel event (its `signum` attribute when present)."""
    # A runner may record which signal set the event; SIGTERM is what a stopping pod receives.
    return Interrupted(int(getattr(cancel, "signum", signal.SIGTERM)))
