"""Exit codes and the exceptions that carry them.

Every failure the user can cause or meet is one of these exceptions, whose message is a single line that
names what is wrong and where, and never holds a secret. The CLI turns them into that line on stderr and
the exit code below; anything else is a bug and exits with SOFTWARE.
"""

from __future__ import annotations

import signal
from datetime import datetime
from enum import IntEnum


class ExitCode(IntEnum):
    """Documented exit codes (see README, "Exit codes").

    Codes 1-63 are reserved for the dump tool's own exit code, passed through unchanged, and 128+N for a
    dump tool killed by signal N; our own codes follow sysexits(3) so they never collide with those, and
    124 is timeout(1)'s.
    """

    OK = 0
    USAGE = 64  # bad command-line argument
    DATA = 65  # a dump produced no or malformed output; verify found a mismatch
    UNAVAILABLE = 69  # MongoDB unreachable
    SOFTWARE = 70  # internal error (a bug): please report it
    STORAGE = 74  # storage unreachable, refused or failed
    LOCKED = 75  # another run holds the plan's lock; try again later
    PUSH = 76  # backup stored, but the Pushgateway push or textfile write failed
    NOPERM = 77  # authentication to MongoDB or storage failed; the age identity does not open the backup
    CONFIG = 78  # configuration error
    TIMEOUT = 124  # the run exceeded the plan's timeout (as timeout(1) reports it)
    INTERRUPTED_SIGINT = 128 + signal.SIGINT  # 130
    INTERRUPTED_SIGTERM = 128 + signal.SIGTERM  # 143


class BackupError(Exception):
    """A failure with a one-line, secret-free message and the exit code it maps to."""

    exit_code: int = ExitCode.SOFTWARE

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if exit_code is not None:
            self.exit_code = exit_code

    def __str__(self) -> str:
        return self.message


class UsageError(BackupError):
    exit_code = ExitCode.USAGE


class ConfigError(BackupError):
    """One or more configuration errors, each already prefixed with its path ("At 'plans.x.schedule': ...")."""

    exit_code = ExitCode.CONFIG

    def __init__(self, errors: list[str]) -> None:
        self.errors = list(errors)
        super().__init__("; ".join(self.errors) if self.errors else "invalid configuration")


class SourceUnavailable(BackupError):
    exit_code = ExitCode.UNAVAILABLE


class AuthenticationFailed(BackupError):
    exit_code = ExitCode.NOPERM


class DumpFailed(BackupError):
    """The dump tool failed; exit_code is its own exit code (or 128+signal), or DATA for bad output."""

    exit_code = ExitCode.DATA


class StorageError(BackupError):
    exit_code = ExitCode.STORAGE


class LockHeld(BackupError):
    """Another run holds the plan's lock: `holder` is who (as it recorded itself), `expires_by` when the
    lock frees itself at the latest should that holder be dead (Azure leases), when known."""

    exit_code = ExitCode.LOCKED

    def __init__(self, message: str, *, holder: str | None = None, expires_by: datetime | None = None) -> None:
        super().__init__(message)
        self.holder = holder
        self.expires_by = expires_by


class PushFailed(BackupError):
    exit_code = ExitCode.PUSH


class ArchiveError(BackupError):
    """An archive is malformed, truncated, or fails a checksum."""

    exit_code = ExitCode.DATA


class DecryptionFailed(ArchiveError):
    """An encrypted backup does not decrypt: its bytes were changed after they were written, or are not age."""


class WrongIdentity(BackupError):
    """None of the age identities given can decrypt a backup (it was encrypted for other recipients)."""

    exit_code = ExitCode.NOPERM


class Interrupted(BackupError):
    """The run was stopped by a signal; exit code is 128 + the signal number."""

    def __init__(self, signum: int = signal.SIGTERM) -> None:
        name = signal.Signals(signum).name
        super().__init__(f"interrupted by {name}", 128 + int(signum))
        self.signum = signum
