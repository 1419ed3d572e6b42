"""`backupctl`: the command line. Every failure ends in one line on stderr and a documented exit code."""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from types import FrameType
from typing import Any, NoReturn

import yaml

from backup_exporter import __version__
from backup_exporter import config as config_module
from backup_exporter.config import Config, PlanConfig
from backup_exporter.core import naming
from backup_exporter.core.cancel import CancelToken
from backup_exporter.core.errors import BackupError, ExitCode, UsageError
from backup_exporter.core.redact import redact
from backup_exporter.operations.housekeeping import after_success_hook
from backup_exporter.operations.run import Progress, RunOutcome, run_backup
from backup_exporter.repository import records
from backup_exporter.serve.api_client import run_via_daemon
from backup_exporter.serve.pushgateway import publish, push_config_from_args
from backup_exporter.storage.base import Storage
from backup_exporter.storage.factory import open_storage
from backup_exporter.system import logs

log = logging.getLogger("backupctl")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message} (see '{self.prog} --help')")


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"


def human_age(seconds: float) -> str:
    seconds = int(max(0, seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours}h"
    if hours:
        return f"{hours}h{minutes}m"
    return f"{minutes}m{secs}s"


def utc(ts: float | None) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if ts else "never"


# --- run-now --------------------------------------------------------------------------------------------

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


def cmd_run_now(args: argparse.Namespace, cfg: Config) -> int:
    if args.daemon:

        return run_via_daemon(args.daemon, args.plan)
    plan = cfg.plan(args.plan)
    storage = open_storage(cfg.storage)
    cancel = CancelToken()
    _install_signal_handlers(cancel)
    progress = Progress()
    retention = after_success_hook(plan, storage, None)
    try:
        if sys.stderr.isatty() and not args.quiet:
            with _ProgressLine(progress):
                outcome = run_backup(plan, storage, cancel=cancel, progress=progress, trigger="run-now",
                                     after_success=retention)
        else:
            outcome = run_backup(plan, storage, cancel=cancel, progress=progress, trigger="run-now",
                                 after_success=retention)
        push_code = _push_if_configured(args, cfg, plan, storage, outcome)
    finally:
        storage.close()
    if outcome.exit_code != 0:
        print(f"backupctl: plan '{plan.name}': {outcome.message}", file=sys.stderr)
        return outcome.exit_code
    print(f"{outcome.name}\t{outcome.size}\t{outcome.sha256}")
    return push_code


def _push_if_configured(args: argparse.Namespace, cfg: Config, plan: PlanConfig, storage: Storage,
                        outcome: RunOutcome) -> int:
    push = getattr(args, "push_config", None)
    if push is None or (not push.url and not push.textfile):
        return 0

    return publish(push, plan, storage, outcome)


# --- check-config, status -------------------------------------------------------------------------------

def cmd_check_config(args: argparse.Namespace, cfg: Config) -> int:
    data = config_module.masked(cfg)
    now = datetime.now(UTC)
    data["next_runs"] = {name: [r.strftime("%Y-%m-%dT%H:%M:%SZ") for r in p.schedule.next_runs(now, 3)]
                         for name, p in cfg.plans.items()}
    print(f"# configuration from {cfg.source}: OK")
    print(yaml.safe_dump(data, sort_keys=False, default_flow_style=False).rstrip())
    return 0


def cmd_status(args: argparse.Namespace, cfg: Config) -> int:
    storage = open_storage(cfg.storage)
    now = time.time()
    rows: list[dict[str, Any]] = []
    try:
        for plan in _selected_plans(cfg, args.plan):
            record = records.load(storage, naming.status_name(plan.prefix, plan.name), plan.name)
            record = records.settle(storage, record, naming.lock_name(plan.prefix, plan.name))
            holder = storage.lock_holder(naming.lock_name(plan.prefix, plan.name))
            next_run = plan.schedule.next_runs(datetime.now(UTC), 1)
            success = record.last_success
            attempt = record.last_attempt
            rows.append({
                "plan": plan.name,
                "last_success": utc(success.finished) if success else None,
                "last_success_age_seconds": round(now - success.finished) if success else None,
                "last_exit_code": attempt.exit_code if attempt else None,
                "last_result": attempt.result if attempt else None,
                "last_message": attempt.message if attempt else None,
                "next_run": next_run[0].strftime("%Y-%m-%dT%H:%M:%SZ") if next_run else None,
                "locked_by": holder,
                "running_since": utc(record.running.started) if record.running else None,
            })
    finally:
        storage.close()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'PLAN':16} {'LAST SUCCESS':22} {'AGE':9} {'EXIT':5} {'NEXT RUN':22} LOCK")
    for r in rows:
        age = human_age(r["last_success_age_seconds"]) if r["last_success_age_seconds"] is not None else "-"
        code = "-" if r["last_exit_code"] is None else str(r["last_exit_code"])
        print(f"{r['plan']:16} {r['last_success'] or 'never':22} {age:9} {code:5} {r['next_run'] or '-':22} "
              f"{r['locked_by'] or 'free'}")
        if r["last_exit_code"] not in (None, 0):
            print(f"{'':16} last run: {r['last_result']} (exit {r['last_exit_code']}): {r['last_message']}")
    return 0


def _selected_plans(cfg: Config, name: str | None) -> list[PlanConfig]:
    return [cfg.plan(name)] if name else list(cfg.plans.values())


# --- parser ---------------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="backupctl", description="MongoDB backups to Azure Blob Storage, watched by Prometheus.")
    parser.add_argument("--version", action="version", version=f"backupctl {__version__}")
    common = _Parser(add_help=False)
    common.add_argument("--config", metavar="FILE", help="YAML configuration (default: $BACKUPCTL_CONFIG, "
                        "else environment variables only)")
    common.add_argument("--log-format", choices=("text", "json"), help="log line format (default: text)")
    common.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("daemon", parents=[common], help="run plans on their schedules and serve /metrics")
    p.add_argument("--listen", metavar="HOST:PORT", help="HTTP listen address (default 0.0.0.0:9868)")

    p = sub.add_parser("run-now", parents=[common], help="run one backup now and exit with its exit code")
    p.add_argument("--plan", help="plan name (needed when several are configured)")
    p.add_argument("--daemon", metavar="URL", help="ask a running daemon to run it (needs BACKUP_API_TOKEN)")
    p.add_argument("--quiet", action="store_true", help="no progress line on a terminal")
    p.add_argument("--pushgateway", metavar="URL", help="push the plan's metrics to this Pushgateway")
    p.add_argument("--job", help="Pushgateway job label (default mongodb-backup)")
    p.add_argument("--grouping-key", action="append", default=[], metavar="K=V", help="extra grouping label")
    p.add_argument("--push-username", help="Pushgateway basic-auth user")
    p.add_argument("--push-password-file", metavar="FILE", help="file holding the basic-auth password")
    p.add_argument("--push-ca-file", metavar="FILE", help="CA bundle for the Pushgateway's TLS certificate")
    p.add_argument("--push-cert-file", metavar="FILE", help="client TLS certificate")
    p.add_argument("--push-key-file", metavar="FILE", help="client TLS key")
    p.add_argument("--push-timeout", type=float, metavar="SECONDS", help="push timeout (default 10)")
    p.add_argument("--textfile", metavar="PATH", help="also write the metrics for node_exporter's textfile "
                   "collector (atomically)")

    p = sub.add_parser("check-config", parents=[common], help="validate the configuration and show next runs")

    p = sub.add_parser("status", parents=[common], help="each plan's last success, exit code, next run, lock")
    p.add_argument("--plan")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("list", parents=[common], help="backups in storage, newest first")
    p.add_argument("--plan")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("verify", parents=[common], help="check a backup's checksum and archive structure")
    p.add_argument("backup", nargs="?", help="backup name as shown by 'list'")
    p.add_argument("--latest", action="store_true", help="the plan's newest backup")
    p.add_argument("--plan")
    p.add_argument("--deep", action="store_true", help="an encrypted backup: decrypt it with the age identity "
                   "and check the archive inside too (without: the stored bytes' sha256 and size only)")
    p.add_argument("--identity-file", metavar="PATH", help="age identity (private key) file for --deep "
                   "(implies it; default: the plan's identity_file, $BACKUP_AGE_IDENTITY_FILE, $BACKUP_AGE_IDENTITY)")

    p = sub.add_parser("restore", parents=[common], help="restore a backup into a MongoDB")
    p.add_argument("backup", nargs="?", help="backup name as shown by 'list'")
    p.add_argument("--latest", action="store_true", help="the plan's newest backup")
    p.add_argument("--plan")
    p.add_argument("--to", metavar="URI", help="target MongoDB: a URI without password, or env:VAR to read "
                   "the URI (with its password) from an environment variable")
    p.add_argument("--ns-include", action="append", default=[], metavar="PATTERN")
    p.add_argument("--ns-from", action="append", default=[], metavar="PATTERN")
    p.add_argument("--ns-to", action="append", default=[], metavar="PATTERN")
    p.add_argument("--drop", action="store_true", help="drop each collection before restoring it")
    p.add_argument("--dry-run", action="store_true")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.add_argument("--check", action="store_true", help="restore drill: compare document counts afterwards")
    p.add_argument("--engine", choices=("auto", "mongorestore", "native"), default="auto")
    p.add_argument("--identity-file", metavar="PATH", help="age identity (private key) file for an encrypted "
                   "backup (default: the plan's identity_file, $BACKUP_AGE_IDENTITY_FILE, $BACKUP_AGE_IDENTITY)")

    p = sub.add_parser("prune", parents=[common], help="apply the retention policy")
    p.add_argument("--plan")
    p.add_argument("--dry-run", action="store_true")
    return parser


COMMANDS: dict[str, Callable[[argparse.Namespace, Config], int]] = {
    "run-now": cmd_run_now,
    "check-config": cmd_check_config,
    "status": cmd_status,
}


# Commands whose modules are imported only when used, so the common paths stay light.
LAZY_COMMANDS = {
    "daemon": "backup_exporter.serve.daemon:cmd_daemon",
    "list": "backup_exporter.cli.lifecycle:cmd_list",
    "verify": "backup_exporter.cli.lifecycle:cmd_verify",
    "restore": "backup_exporter.cli.lifecycle:cmd_restore",
    "prune": "backup_exporter.cli.lifecycle:cmd_prune",
}


def _command(name: str) -> Callable[[argparse.Namespace, Config], int]:
    if name in COMMANDS:
        return COMMANDS[name]
    module_name, _, func = LAZY_COMMANDS[name].partition(":")
    module = importlib.import_module(module_name)
    return getattr(module, func)  # type: ignore[no-any-return]


def main(argv: Sequence[str] | None = None) -> int:
    """Run backupctl; return the exit code."""
    logs.setup("text")
    try:
        args = build_parser().parse_args(argv)
        if not args.command:
            raise UsageError("backupctl: a command is required (see 'backupctl --help')")
        cfg = config_module.load(args.config)
        logs.setup(args.log_format or cfg.log_format, logging.DEBUG if args.verbose else logging.INFO)
        if args.command == "run-now":

            args.push_config = push_config_from_args(args, cfg.pushgateway)
        return _command(args.command)(args, cfg)
    except BackupError as exc:
        print(f"backupctl: {redact(exc.message)}" if not exc.message.startswith("backupctl")
              else redact(exc.message), file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("backupctl: interrupted", file=sys.stderr)
        return int(ExitCode.INTERRUPTED_SIGINT)
    except BrokenPipeError:
        return 0
    except Exception as exc:  # a bug: one line for the user, the traceback only with --verbose
        log.debug("internal error", exc_info=True)
        print(f"backupctl: internal error: {type(exc).__name__}: {redact(str(exc))} "
              "(please report it; run with -v for details)", file=sys.stderr)
        return int(ExitCode.SOFTWARE)


if __name__ == "__main__":
    sys.exit(main())
