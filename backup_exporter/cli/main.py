"""`backupctl`: the command group, its global options, and `main`, the entry point.

Every failure ends in one line on stderr and a documented exit code (cli/errors.py). Each command lives in
the module of its group (run, status, lifecycle, daemon); to add one, write it with `@click.command(...)`,
its `@click.option`s and `@with_config` (cli/options.py), and list it in COMMANDS below.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import click

from backup_exporter import __version__
from backup_exporter.cli.daemon import daemon
from backup_exporter.cli.errors import exit_code_of
from backup_exporter.cli.lifecycle import list_backups, prune, restore_backup, verify_backup
from backup_exporter.cli.options import CONTEXT_SETTINGS, GlobalOptions, global_options
from backup_exporter.cli.run import run_now
from backup_exporter.cli.status import check_config, status
from backup_exporter.core.errors import UsageError
from backup_exporter.system import logs

PROG = "backupctl"


@click.group(PROG, context_settings=CONTEXT_SETTINGS, invoke_without_command=True, no_args_is_help=False,
             subcommand_metavar="COMMAND [ARGS]...",
             epilog="Global options go before or after the command. Shell completion: "
                    "eval \"$(_BACKUPCTL_COMPLETE=bash_source backupctl)\" (zsh_source, fish_source). "
                    "Exit codes: README, \"Exit codes\".")
@click.version_option(__version__, "--version", prog_name=PROG, message="%(prog)s %(version)s")
@global_options
@click.pass_context
def backupctl(ctx: click.Context, config: str | None, log_format: str | None, verbose: bool) -> None:
    """MongoDB backups to Azure Blob Storage, watched by Prometheus."""
    ctx.obj = GlobalOptions(config, log_format, verbose)
    if ctx.invoked_subcommand is None:
        raise UsageError(f"{PROG}: a command is required (see '{PROG} --help')")


COMMANDS: tuple[click.Command, ...] = (daemon, run_now, check_config, status, list_backups, verify_backup,
                                       restore_backup, prune)
for _command in COMMANDS:
    backupctl.add_command(_command)


def main(argv: Sequence[str] | None = None) -> int:
    """Run backupctl on `argv` (default: sys.argv[1:]); return the exit code. Never raises, except the
    SystemExit of a shell-completion request."""
    logs.setup("text")
    return exit_code_of(lambda: backupctl.main(args=argv, prog_name=PROG, standalone_mode=False))


if __name__ == "__main__":
    sys.exit(main())
