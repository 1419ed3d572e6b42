"""`backupctl list | verify | restore | prune`: finding, checking, restoring and pruning backups."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pymongo import MongoClient
from pymongo.errors import PyMongoError
from pyrage import x25519

from backup_exporter.archive.encryption import load_identities
from backup_exporter.config import Config, PlanConfig
from backup_exporter.core.cancel import CancelToken
from backup_exporter.core.errors import BackupError, ExitCode, UsageError
from backup_exporter.core.naming import plan_prefix
from backup_exporter.core.redact import mask_uri
from backup_exporter.operations import listing, verify
from backup_exporter.operations import restore as restoring
from backup_exporter.operations.housekeeping import prune_plan
from backup_exporter.storage.base import Storage
from backup_exporter.storage.factory import open_storage


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def _plans(cfg: Config, name: str | None) -> list[PlanConfig]:
    return [cfg.plan(name)] if name else list(cfg.plans.values())


def _resolve(storage: Storage, cfg: Config, args: argparse.Namespace) -> tuple[PlanConfig | None, str]:
    """Return (plan, backup name) for `NAME` or `--latest [--plan P]`. Raises UsageError / BackupError."""
    if bool(args.backup) == bool(args.latest):
        raise UsageError("give either a backup name (see 'backupctl list') or --latest")
    if args.backup:
        plan = next((p for p in cfg.plans.values()
                     if args.backup.startswith(plan_prefix(p.prefix, p.name) + "/")), None)
        return plan, args.backup
    plan = cfg.plan(args.plan)
    listed = listing.list_backups(storage, plan.prefix, plan.name, plan.retention, datetime.now(UTC))
    if not listed:
        raise BackupError(f"plan '{plan.name}' has no backup in {storage.describe()}/"
                          f"{plan_prefix(plan.prefix, plan.name)}/", ExitCode.DATA)
    return plan, listed[0].name


def cmd_list(args: argparse.Namespace, cfg: Config) -> int:
    storage = open_storage(cfg.storage)
    rows: list[dict[str, Any]] = []
    try:
        now = datetime.now(UTC)
        for plan in _plans(cfg, args.plan):
            for b in listing.list_backups(storage, plan.prefix, plan.name, plan.retention, now):
                rows.append({"plan": plan.name, "name": b.name, "time": b.time.strftime("%Y-%m-%dT%H:%M:%SZ"),
                             "size": b.size, "sha256": b.sha256, "engine": b.engine, "keep": b.keep,
                             "reasons": b.reasons, "encrypted": "age" if b.encrypted else None,
                             "recipients": b.recipients})
    finally:
        storage.close()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print(f"no backups in {cfg.storage.describe()}")
        return 0
    print(f"{'TIME (UTC)':21} {'SIZE':>10} {'ENGINE':9} {'KEPT':5} {'SHA256':14} {'ENCRYPTED FOR':22} NAME")
    for r in rows:
        # Encrypted backups show "age:" and the first 8 digits of each recipient's fingerprint.
        enc = ("age:" + ",".join(f[:8] for f in r["recipients"]) if r["recipients"] else "age") \
            if r["encrypted"] else "-"
        print(f"{r['time']:21} {_human(r['size']):>10} {r['engine'] or '-':9} {'yes' if r['keep'] else 'no':5} "
              f"{(r['sha256'] or '-')[:12]:14} {enc:22} {r['name']}")
    return 0


def _identities(args: argparse.Namespace, plan: PlanConfig | None) -> list[x25519.Identity] | None:
    """Return the age identities from --identity-file, else the plan's identity_file, else the environment
    ($BACKUP_AGE_IDENTITY_FILE, $BACKUP_AGE_IDENTITY); None when there is none. Raises ConfigError."""
    given = Path(args.identity_file) if getattr(args, "identity_file", None) else None
    if given is None and plan is not None and plan.encryption is not None:
        given = plan.encryption.identity_file
    return load_identities(given, os.environ)


def cmd_verify(args: argparse.Namespace, cfg: Config) -> int:
    storage = open_storage(cfg.storage)
    cancel = CancelToken()
    deep = bool(args.deep or args.identity_file)
    try:
        plan, name = _resolve(storage, cfg, args)
        identities = _identities(args, plan) if deep else None
        report = verify.verify_backup(storage, name, deep=deep, identities=identities, cancel=cancel)
    finally:
        storage.close()
    if not report.contents_checked:
        print(f"{report.name}: OK (stored bytes only: {_human(report.size)}, sha256 {report.sha256} match the "
              f"metadata; encrypted with age for {', '.join(report.recipients) or 'unrecorded keys'}; the archive "
              f"inside was not read: 'verify --deep' with the identity decrypts it and checks every CRC)")
        return 0
    print(f"{report.name}: OK ({_human(report.size)}, sha256 {report.sha256}"
          f"{'' if report.sha256_checked else ' (no sha256 in metadata to compare)'}, engine {report.engine}, "
          f"{report.tool_version}, server {report.server_version}"
          f"{', decrypted: every CRC checked' if report.encrypted else ''})")
    for ns, count in report.namespaces.items():
        print(f"  {ns:50} {count:>10} documents")
    print(f"  {'total':50} {report.documents:>10} documents")
    return 0


def target_uri(value: str | None) -> str:
    """Return the restore target from `--to URI` or `--to env:VAR`; refuse passwords in argv."""
    if not value:
        raise UsageError("restore needs --to URI (or --to env:VAR to read it from the environment)")
    if value.startswith("env:"):
        var = value[4:]
        uri = os.environ.get(var, "")
        if not uri:
            raise UsageError(f"--to {value}: environment variable {var} is not set")
    else:
        uri = value
        if mask_uri(uri) != uri:
            raise UsageError("--to: a URI with a password would be visible in the process list; put it in an "
                             "environment variable and pass --to env:VAR")
    if not uri.startswith(("mongodb://", "mongodb+srv://")):
        raise UsageError(f"--to: '{mask_uri(uri)[:40]}' is not a MongoDB URI")
    return uri


def _non_empty_targets(uri: str, namespaces: list[str]) -> list[str]:
    client: MongoClient[dict[str, Any]] = MongoClient(uri, serverSelectionTimeoutMS=10000)
    try:
        busy = []
        for ns in namespaces:
            db, _, coll = ns.partition(".")
            if client[db][coll].estimated_document_count() > 0:
                busy.append(ns)
        return busy
    except PyMongoError:
        return []  # the restore itself reports an unreachable target clearly
    finally:
        client.close()


def _confirm(question: str) -> bool:
    if not sys.stdin.isatty():
        return False
    answer = input(f"{question} [y/N] ")
    return answer.strip().lower() in ("y", "yes")


def cmd_restore(args: argparse.Namespace, cfg: Config) -> int:
    uri = target_uri(args.to)
    if len(args.ns_from) != len(args.ns_to):
        raise UsageError("--ns-from and --ns-to pair up: give each the same number of times")
    storage = open_storage(cfg.storage)
    cancel = CancelToken()
    try:
        plan_config, name = _resolve(storage, cfg, args)
        identities = _identities(args, plan_config)
        binary = shutil.which("mongorestore") if args.engine in ("auto", "mongorestore") else None
        if args.engine == "mongorestore" and not binary:
            raise UsageError("--engine mongorestore: mongorestore is not on PATH")
        if not args.dry_run and not args.yes:
            # The archive's prelude names every namespace: no need to read the whole backup to ask.
            targets = restoring.restore_targets(storage, name, ns_include=args.ns_include,
                                                ns_from=args.ns_from, ns_to=args.ns_to, identities=identities)
            busy = _non_empty_targets(uri, targets)
            if args.drop or busy:
                what = (f"drop and replace {len(targets)} collection(s)" if args.drop else
                        f"restore into {len(busy)} non-empty collection(s) ({', '.join(busy[:3])}...)")
                if not _confirm(f"This will {what} at {mask_uri(uri)}. Continue?"):
                    raise UsageError(f"refusing to {what} without confirmation: pass --yes")
        report = restoring.restore(storage, name, target_uri=uri, ns_include=args.ns_include, ns_from=args.ns_from,
                                   ns_to=args.ns_to, drop=args.drop, dry_run=args.dry_run, mongorestore=binary,
                                   check=args.check, identities=identities, cancel=cancel)
    finally:
        storage.close()
    print(report.summary())
    for ns in report.namespaces:
        target = f" -> {ns.target}" if ns.target != ns.source else ""
        print(f"  {ns.source}{target}: {ns.archive_documents} documents"
              + (f", {ns.failed_documents} refused" if ns.failed_documents else "")
              + (f", {ns.target_documents} in target" if ns.target_documents is not None else ""))
    if report.check_ok is False:
        return int(ExitCode.DATA)
    return 0


def cmd_prune(args: argparse.Namespace, cfg: Config) -> int:
    storage = open_storage(cfg.storage)
    try:
        for plan in _plans(cfg, args.plan):
            if plan.retention.is_empty:
                print(f"plan {plan.name}: no retention policy: everything is kept")
                continue
            report = prune_plan(storage, plan, None, dry_run=args.dry_run)
            verb = "would delete" if args.dry_run else "deleted"
            print(f"plan {plan.name} ({plan.retention.describe()}): keep {len(report.kept)} "
                  f"({_human(report.kept_bytes)}), {verb} {len(report.deleted)} ({_human(report.deleted_bytes)})")
            for b in report.kept:
                print(f"  keep    {b.name}  ({', '.join(b.reasons)})")
            for b in report.deleted:
                print(f"  {'would delete' if args.dry_run else 'delete':7} {b.name}  ({', '.join(b.reasons)})")
    finally:
        storage.close()
    return 0
