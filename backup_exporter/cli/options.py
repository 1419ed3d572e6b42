"""The options every command takes, before or after the command's name, and the step that turns them into
logging and a loaded Config before a command runs.

`backupctl --config F status` and `backupctl status --config F` both work: the group and each command
declare the same global options; the command's value wins, else the group's (else the environment variable
Click reads for both). A command written with `@with_config` receives the loaded Config as its first
argument and its own options as keywords.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import click

from backup_exporter import config as config_module
from backup_exporter.system import logs

F = TypeVar("F", bound=Callable[..., Any])

# -h as well as --help; help wide enough for the env-var notes; defaults shown where an option has one.
CONTEXT_SETTINGS: dict[str, Any] = {"help_option_names": ["-h", "--help"], "max_content_width": 110,
                                    "show_default": True}


@dataclass(frozen=True)
class GlobalOptions:
    """--config, --log-format and -v as given on the command line (None / False: not given)."""

    config: str | None = None
    log_format: str | None = None
    verbose: bool = False

    def over(self, outer: GlobalOptions) -> GlobalOptions:
        """Return these options with anything not given here taken from `outer` (the group's)."""
        return GlobalOptions(config=self.config or outer.config, log_format=self.log_format or outer.log_format,
                             verbose=self.verbose or outer.verbose)


def env_note(variable: str, key: str | None = None) -> str:
    """Return the help suffix naming a setting the configuration reads (file key, environment-only variable).

    These variables are read by the configuration, not by Click: in environment-only mode (no --config) they
    fill the same setting the flag overrides.
    """
    where = f"config: {key}; " if key else ""
    return f" [{where}env-only mode: {variable}]"


def global_options(f: F) -> F:
    """Add --config, --log-format and -v/--verbose to a Click group or command."""
    f = click.option("-v", "--verbose", is_flag=True, default=False, show_default=False,
                     help="debug logging (and the traceback of an internal error)")(f)
    f = click.option("--log-format", type=click.Choice(["text", "json"]), default=None,
                     help="log line format [default: the configuration's log_format, else text]"
                     + env_note("BACKUP_LOG_FORMAT"))(f)
    f = click.option("--config", metavar="FILE", envvar="BACKUPCTL_CONFIG", show_envvar=True, default=None,
                     help="YAML configuration file (without one: environment variables only)")(f)
    return f


def with_config(f: Callable[..., int]) -> Callable[..., int]:
    """Decorate a command's function (innermost, below its @click.option lines): add the global options, set
    up logging, load the configuration, and call `f(cfg, **its_own_options)`.

    Raises ConfigError (78) from loading; click.UsageError from parsing is raised by Click before.
    """

    @functools.wraps(f)
    def run(config: str | None, log_format: str | None, verbose: bool, **options: Any) -> int:
        outer = click.get_current_context().find_object(GlobalOptions) or GlobalOptions()
        given = GlobalOptions(config, log_format, verbose).over(outer)
        level = logging.DEBUG if given.verbose else logging.INFO
        logs.setup(given.log_format or "text", level)
        cfg = config_module.load(given.config)
        logs.setup(given.log_format or cfg.log_format, level)
        return f(cfg, **options)

    return global_options(run)
