"""How backupctl ends: every failure becomes one line on stderr and a documented exit code (README, "Exit codes").

Click's own error output (the usage block, "Try --help", "Error: ...") is replaced by the project's one line,
and Click's exit code 2 by USAGE (64), because 1-63 are the dump tool's own codes.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

import click

from backup_exporter.core.errors import BackupError, ExitCode
from backup_exporter.core.redact import redact

log = logging.getLogger("backupctl")


def usage_line(exc: click.UsageError) -> str:
    """Return Click's usage error as one line naming the command, the problem and where help is."""
    where = exc.ctx.command_path if exc.ctx is not None else "backupctl"
    message = " ".join(exc.format_message().split()).removesuffix(".")
    return f"{where}: {message} (see '{where} --help')"


def error_line(exc: BackupError) -> str:
    """Return a BackupError's message as printed: prefixed with 'backupctl: ' unless it names itself."""
    message = redact(exc.message)
    return message if message.startswith("backupctl") else f"backupctl: {message}"


def exit_code_of(invoke: Callable[[], int | None]) -> int:
    """Run `invoke` (the parsed command line) and return its exit code; print one line for any failure.

    Never raises: usage errors are 64, BackupErrors their own code, an interrupt 130, a closed stdout 0, and
    anything else is a bug (70) whose traceback is logged only with -v.
    """
    try:
        code = invoke()
        return 0 if code is None else int(code)
    except click.UsageError as exc:
        print(redact(usage_line(exc)), file=sys.stderr)
        return int(ExitCode.USAGE)
    except click.ClickException as exc:  # Click's other errors (e.g. an unreadable file argument)
        print(f"backupctl: {redact(' '.join(exc.format_message().split()))}", file=sys.stderr)
        return int(ExitCode.USAGE)
    except BackupError as exc:
        print(error_line(exc), file=sys.stderr)
        return exc.exit_code
    except (KeyboardInterrupt, click.Abort):  # Click turns ^C (and EOF at a prompt) into Abort
        print("backupctl: interrupted", file=sys.stderr)
        return int(ExitCode.INTERRUPTED_SIGINT)
    except BrokenPipeError:
        return 0
    except Exception as exc:  # a bug: one line for the user, the traceback only with --verbose
        log.debug("internal error", exc_info=True)
        print(f"backupctl: internal error: {type(exc).__name__}: {redact(str(exc))} "
              "(please report it; run with -v for details)", file=sys.stderr)
        return int(ExitCode.SOFTWARE)
