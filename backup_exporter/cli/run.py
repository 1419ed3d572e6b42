"""`backupctl run-now`: one backup now (or asked of a running daemon), then its metrics published."""

from __future__ import annotations

import signal
import sys
import threading
import time
from types import FrameType
from typing import Any

import click

from backup_exporter.cli.format import human_age, human_bytes
from backup_exporter.cli.options import CONTEXT_SETTINGS, with_config
from backup_exporter.cli.push_settings import PushFlags, push_config, push_options
from backup_exporter.config import Config
from backup_exporter.core.cancel import CancelToken
from backup_exporter.operations.housekeeping import after_success_hook
from backup_exporter.operations.run import Progress, run_backup
from backup_exporter.serve.api_client import run_via_daemon
from backup_exporter.serve.pushgateway import publish
from backup_exporter.storage.factory import open_storage


class _ProgressLine:
    """Redraws one status line on a terminal while a run lasts."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> _ProgressLine:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join(timeout=2)
        sys.stderr.write("\r\033[K")
        sys.stderr.flush()

    def _loop(self) -> None:
        while not self.stop.wait(0.5):
            p = self.progress
            elapsed = max(0.001, time.time() - p.started)
            sys.stderr.write(f"\r\033[K  dumped {human_bytes(p.dumped)}  uploaded {human_bytes(p.uploaded)}  "
                             f"{human_bytes(p.dumped / elapsed)}/s  {human_age(elapsed)}")
            sys.stderr.flush()


def _install_signal_handlers(cancel: CancelToken) -> None:
    def handler(signum: int, _frame: FrameType | None) -> None:
        cancel.cancel(signum)

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


@click.command("run-now", context_settings=CONTEXT_SETTINGS,
               short_help="run one backup now and exit with its exit code",
               help="Run one backup of a plan now and exit with its exit code (README, \"Exit codes\"). Prints "
                    "NAME<TAB>SIZE<TAB>SHA256 of the stored backup; on a terminal shows live progress on stderr.")
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
            with _ProgressLine(progress):
                outcome = run_backup(plan_cfg, storage, cancel=cancel, progress=progress, trigger="run-now",
                                     after_success=retention)
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
