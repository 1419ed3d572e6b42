"""`backupctl run-now`: one backup now (or asked of a running daemon), then its metrics published."""

from __future__ import annotations

import signal
import sys
from types import FrameType
from typing import Any

import click

from backup_exporter.cli.options import CONTEXT_SETTINGS, with_config
from backup_exporter.cli.progress import RunProgressLine
from backup_exporter.cli.push_settings import PushFlags, push_config, push_options
from backup_exporter.config import Config
from backup_exporter.core.cancel import CancelToken
from backup_exporter.operations.estimating import EstimateTask
from backup_exporter.operations.housekeeping import after_success_hook
from backup_exporter.operations.run import Progress, run_backup
from backup_exporter.serve.api_client import run_via_daemon
from backup_exporter.serve.pushgateway import publish
from backup_exporter.storage.factory import open_storage


def _install_signal_handlers(cancel: CancelToken) -> None:
    def handler(signum: int, _frame: FrameType | None) -> None:
        cancel.cancel(signum)

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


@click.command("run-now", context_settings=CONTEXT_SETTINGS,
               short_help="run one backup now and exit with its exit code",
               help="Run one backup of a plan now and exit with its exit code (README, \"Exit codes\"). Prints "
                    "NAME<TAB>SIZE<TAB>SHA256 of the stored backup. On a terminal, stderr shows live progress "
                    "against an estimate from the server's collection stats: percentage, documents and source "
                    "bytes done, throughput, ETA.")
@click.option("--plan", metavar="NAME", help="plan name (needed when several are configured)")
@click.option("--daemon", "daemon_url", metavar="URL",
              help="ask a running daemon to run it and wait (token from env BACKUP_API_TOKEN)")
@click.option("--quiet", is_flag=True, help="no progress line on a terminal")
@push_options
@with_config
def run_now(cfg: Config, plan: str | None, daemon_url: str | None, quiet: bool, **push: Any) -> int:
    push_cfg = push_config(cfg.pushgateway, PushFlags(**push))  # malformed settings fail before any backup
    if daemon_url:
        return run_via_daemon(daemon_url, plan)
    plan_cfg = cfg.plan(plan)
    storage = open_storage(cfg.storage)
    cancel = CancelToken()
    _install_signal_handlers(cancel)
    progress = Progress()
    retention = after_success_hook(plan_cfg, storage, None)
    try:
        if sys.stderr.isatty() and not quiet:
            with RunProgressLine(progress, EstimateTask(plan_cfg, progress).start()) as line:
                outcome = run_backup(plan_cfg, storage, cancel=cancel, progress=progress, trigger="run-now",
                                     after_success=retention)
                if outcome.exit_code == 0:
                    line.finish()
        else:
            outcome = run_backup(plan_cfg, storage, cancel=cancel, progress=progress, trigger="run-now",
                                 after_success=retention)
        push_code = publish(push_cfg, plan_cfg, storage, outcome) if push_cfg.url or push_cfg.textfile else 0
    finally:
        storage.close()
    if outcome.exit_code != 0:
        print(f"backupctl: plan '{plan_cfg.name}': {outcome.message}", file=sys.stderr)
        return outcome.exit_code
    print(f"{outcome.name}\t{outcome.size}\t{outcome.sha256}")
    return push_code
