"""`backupctl daemon`: run every plan on its schedule and serve /metrics until SIGTERM."""

from __future__ import annotations

import click

from backup_exporter.cli.options import CONTEXT_SETTINGS, env_note, with_config
from backup_exporter.config import Config
from backup_exporter.serve.daemon import cmd_daemon


@click.command("daemon", context_settings=CONTEXT_SETTINGS,
               short_help="run plans on their schedules and serve /metrics",
               help="Run every plan on its schedule; serve /metrics, /healthz, /readyz and the run API until "
                    "SIGTERM or SIGINT.")
@click.option("--listen", metavar="HOST:PORT", help="HTTP listen address [default: 0.0.0.0:9868]"
              + env_note("BACKUP_LISTEN_ADDRESS", "server.listen"))
@with_config
def daemon(cfg: Config, listen: str | None) -> int:
    return cmd_daemon(cfg, listen)
