"""`backupctl check-config | status`: the configuration as loaded, and each plan's state in storage."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

import click
import yaml

from backup_exporter import config as config_module
from backup_exporter.cli.format import human_age, utc
from backup_exporter.cli.options import CONTEXT_SETTINGS, with_config
from backup_exporter.config import Config, PlanConfig
from backup_exporter.core import naming
from backup_exporter.repository import records
from backup_exporter.storage.factory import open_storage


def selected_plans(cfg: Config, name: str | None) -> list[PlanConfig]:
    """Return the named plan, or every plan when `name` is None. Raises ConfigError for an unknown name."""
    return [cfg.plan(name)] if name else list(cfg.plans.values())


@click.command("check-config", context_settings=CONTEXT_SETTINGS,
               short_help="validate the configuration and show next runs",
               help="Validate the configuration; print it with secrets masked and each plan's next three runs "
                    "(UTC). Exit 78 naming every wrong key.")
@with_config
def check_config(cfg: Config) -> int:
    data = config_module.masked(cfg)
    now = datetime.now(UTC)
    data["next_runs"] = {name: [r.strftime("%Y-%m-%dT%H:%M:%SZ") for r in p.schedule.next_runs(now, 3)]
                         for name, p in cfg.plans.items()}
    print(f"# configuration from {cfg.source}: OK")
    print(yaml.safe_dump(data, sort_keys=False, default_flow_style=False).rstrip())
    return 0


@click.command("status", context_settings=CONTEXT_SETTINGS,
               short_help="each plan's last success, exit code, next run, lock",
               help="Each plan's last success and its age, last exit code, next run, and who holds its lock.")
@click.option("--plan", metavar="NAME", help="only this plan [default: every plan]")
@click.option("--json", "as_json", is_flag=True, help="JSON instead of a table")
@with_config
def status(cfg: Config, plan: str | None, as_json: bool) -> int:
    storage = open_storage(cfg.storage)
    now = time.time()
    rows: list[dict[str, Any]] = []
    try:
        for p in selected_plans(cfg, plan):
            record = records.load(storage, naming.status_name(p.prefix, p.name), p.name)
            record = records.settle(storage, record, naming.lock_name(p.prefix, p.name))
            holder = storage.lock_holder(naming.lock_name(p.prefix, p.name))
            next_run = p.schedule.next_runs(datetime.now(UTC), 1)
            success = record.last_success
            attempt = record.last_attempt
            rows.append({
                "plan": p.name,
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
    if as_json:
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
