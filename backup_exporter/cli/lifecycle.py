"""`backupctl list | verify | restore | prune`: finding, checking, restoring and pruning backups."""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from pymongo import MongoClient
from pymongo.errors import PyMongoError
from pyrage import x25519

from backup_exporter.archive.encryption import load_identities
from backup_exporter.cli.format import human_bytes
from backup_exporter.cli.options import CONTEXT_SETTINGS, with_config
from backup_exporter.cli.progress import ReadProgressLine
from backup_exporter.cli.status import selected_plans
from backup_exporter.config import Config, PlanConfig
from backup_exporter.core import naming
from backup_exporter.core.cancel import CancelToken
from backup_exporter.core.errors import ArchiveError, BackupError, ExitCode, UsageError
from backup_exporter.core.naming import plan_prefix
from backup_exporter.core.redact import mask_uri
from backup_exporter.operations import listing, verify
from backup_exporter.operations import restore as restoring
from backup_exporter.operations.housekeeping import prune_plan
from backup_exporter.repository import records
from backup_exporter.repository.reading import is_encrypted
from backup_exporter.storage.base import ObjectInfo, Storage
from backup_exporter.storage.factory import open_storage

log = logging.getLogger(__name__)

# `NAME | --latest [--plan P]`, shared by verify and restore.
_BACKUP_ARGUMENT = click.argument("backup", required=False, metavar="[NAME]")
_LATEST_OPTION = click.option("--latest", is_flag=True, help="the plan's newest backup")
_PLAN_OPTION = click.option("--plan", metavar="NAME", help="plan of --latest (needed when several are configured)")


def _resolve(storage: Storage, cfg: Config, backup: str | None, latest: bool,
             plan_name: str | None) -> tuple[PlanConfig | None, str]:
    """Return (plan, backup name) for `NAME` or `--latest [--plan P]`. Raises UsageError / BackupError."""
    if bool(backup) == bool(latest):
        raise UsageError("give either a backup name (see 'backupctl list') or --latest")
    if backup:
        plan = next((p for p in cfg.plans.values()
                     if backup.startswith(plan_prefix(p.prefix, p.name) + "/")), None)
        return plan, backup
    plan = cfg.plan(plan_name)
    listed = listing.list_backups(storage, plan.prefix, plan.name, plan.retention, datetime.now(UTC))
    if not listed:
        raise BackupError(f"plan '{plan.name}' has no backup in {storage.describe()}/"
                          f"{plan_prefix(plan.prefix, plan.name)}/", ExitCode.DATA)
    return plan, listed[0].name


def _identities(identity_file: str | None, plan: PlanConfig | None) -> list[x25519.Identity] | None:
    """Return the age identities from --identity-file, else the plan's identity_file, else the environment
    ($BACKUP_AGE_IDENTITY_FILE, $BACKUP_AGE_IDENTITY); None when there is none. Raises ConfigError."""
    given = Path(identity_file) if identity_file else None
    if given is None and plan is not None and plan.encryption is not None:
        given = plan.encryption.identity_file
    return load_identities(given, os.environ)


_IDENTITY_OPTION = click.option(
    "--identity-file", metavar="PATH", help="age identity (private key) file for an encrypted backup [default: "
    "the plan's identity_file, $BACKUP_AGE_IDENTITY_FILE, $BACKUP_AGE_IDENTITY]")


@click.command("list", context_settings=CONTEXT_SETTINGS, short_help="backups in storage, newest first",
               help="Backups in storage, newest first, with time, size, sha256, engine, and whether retention "
                    "keeps them.")
@click.option("--plan", metavar="NAME", help="only this plan [default: every plan]")
@click.option("--json", "as_json", is_flag=True, help="JSON instead of a table")
@with_config
def list_backups(cfg: Config, plan: str | None, as_json: bool) -> int:
    storage = open_storage(cfg.storage)
    rows: list[dict[str, Any]] = []
    try:
        now = datetime.now(UTC)
        for p in selected_plans(cfg, plan):
            for b in listing.list_backups(storage, p.prefix, p.name, p.retention, now):
                rows.append({"plan": p.name, "name": b.name, "time": b.time.strftime("%Y-%m-%dT%H:%M:%SZ"),
                             "size": b.size, "sha256": b.sha256, "engine": b.engine, "keep": b.keep,
                             "reasons": b.reasons, "encrypted": "age" if b.encrypted else None,
                             "recipients": b.recipients})
    finally:
        storage.close()
    if as_json:
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
        print(f"{r['time']:21} {human_bytes(r['size']):>10} {r['engine'] or '-':9} {'yes' if r['keep'] else 'no':5} "
              f"{(r['sha256'] or '-')[:12]:14} {enc:22} {r['name']}")
    return 0


def _read_total(info: ObjectInfo, decrypted: bool) -> int:
    """Return the bytes a read of backup `info` passes to its progress line: the stored size, or for an
    encrypted backup read `decrypted`, the archive's size inside when its metadata recorded it."""
    if decrypted and is_encrypted(info):
        size = (info.metadata.get("archive_size") or "").strip()
        if size.isdigit():
            return int(size)
    return info.size


@click.command("verify", context_settings=CONTEXT_SETTINGS,
               short_help="check a backup's checksum and archive structure",
               help="Stream backup NAME (as shown by 'list') or the plan's --latest, check its sha256 and size "
                    "against its metadata and walk the archive; print document counts per collection.")
@_BACKUP_ARGUMENT
@_LATEST_OPTION
@_PLAN_OPTION
@click.option("--quiet", is_flag=True, help="no progress line on a terminal")
@click.option("--deep", is_flag=True, help="an encrypted backup: decrypt it with the age identity and check the "
              "archive inside too (without: the stored bytes' sha256 and size only)")
@_IDENTITY_OPTION
@with_config
def verify_backup(cfg: Config, backup: str | None, latest: bool, plan: str | None, quiet: bool, deep: bool,
                  identity_file: str | None) -> int:
    storage = open_storage(cfg.storage)
    cancel = CancelToken()
    deep = deep or bool(identity_file)  # an identity given means: look inside
    try:
        plan_config, name = _resolve(storage, cfg, backup, latest, plan)
        identities = _identities(identity_file, plan_config) if deep else None
        depth = "deep" if deep or not is_encrypted(storage.stat(name)) else "stored"
        try:
            if sys.stderr.isatty() and not quiet:
                with ReadProgressLine(_read_total(storage.stat(name), decrypted=deep)) as line:
                    report = verify.verify_backup(storage, name, deep=deep, identities=identities,
                                                  cancel=cancel, on_read=line.add)
                    line.finish()
            else:
                report = verify.verify_backup(storage, name, deep=deep, identities=identities, cancel=cancel)
        except ArchiveError as exc:
            _record_verify(storage, plan_config, name, depth, False, exc.message)
            raise
        _record_verify(storage, plan_config, name, depth, True, "ok")
    finally:
        storage.close()
    if not report.contents_checked:
        print(f"{report.name}: OK (stored bytes only: {human_bytes(report.size)}, sha256 {report.sha256} match the "
              f"metadata; encrypted with age for {', '.join(report.recipients) or 'unrecorded keys'}; the archive "
              f"inside was not read: 'verify --deep' with the identity decrypts it and checks every CRC)")
        return 0
    print(f"{report.name}: OK ({human_bytes(report.size)}, sha256 {report.sha256}"
          f"{'' if report.sha256_checked else ' (no sha256 in metadata to compare)'}, engine {report.engine}, "
          f"{report.tool_version}, server {report.server_version}"
          f"{', decrypted: every CRC checked' if report.encrypted else ''})")
    for ns, count in report.namespaces.items():
        print(f"  {ns:50} {count:>10} documents")
    print(f"  {'total':50} {report.documents:>10} documents")
    return 0


def _record_verify(storage: Storage, plan: PlanConfig | None, name: str, depth: str, success: bool,
                   message: str) -> None:
    """Keep the verdict beside the plan's status, for backup_last_verify_*{depth}; a backup outside every
    plan's folder, or storage refusing the write, only costs the record (logged), never the verdict."""
    if plan is None:
        return
    verdict = {"time": time.time(), "success": success, "backup": name, "message": message[:300]}
    try:
        records.save_verify(storage, naming.status_name(plan.prefix, plan.name), depth, verdict)
    except BackupError as exc:
        log.warning("could not record the verify verdict of plan %s: %s", plan.name, exc.message)


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


@click.command("restore", context_settings=CONTEXT_SETTINGS, short_help="restore a backup into a MongoDB",
               help="Stream backup NAME (or the plan's --latest) into the MongoDB at --to, with mongorestore "
                    "or the native restorer. On a terminal, stderr shows the bytes read of the backup's size: "
                    "percentage, throughput, ETA.")
@_BACKUP_ARGUMENT
@_LATEST_OPTION
@_PLAN_OPTION
@click.option("--to", metavar="URI", help="target MongoDB: a URI without password, or env:VAR to read the URI "
              "(with its password) from an environment variable")
@click.option("--ns-include", multiple=True, metavar="PATTERN", help="restore only matching namespaces (repeatable)")
@click.option("--ns-from", multiple=True, metavar="PATTERN", help="rename: source pattern (repeatable, pairs "
              "with --ns-to)")
@click.option("--ns-to", multiple=True, metavar="PATTERN", help="rename: target pattern")
@click.option("--drop", is_flag=True, help="drop each collection before restoring it")
@click.option("--dry-run", is_flag=True, help="show what would be restored, write nothing")
@click.option("--yes", is_flag=True, help="do not ask for confirmation")
@click.option("--check", is_flag=True, help="restore drill: compare document counts afterwards")
@click.option("--engine", type=click.Choice(["auto", "mongorestore", "native"]), default="auto",
              help="auto: mongorestore when on PATH, else native")
@click.option("--quiet", is_flag=True, help="no progress line on a terminal")
@_IDENTITY_OPTION
@with_config
def restore_backup(cfg: Config, backup: str | None, latest: bool, plan: str | None, to: str | None,
                   ns_include: tuple[str, ...], ns_from: tuple[str, ...], ns_to: tuple[str, ...], drop: bool,
                   dry_run: bool, yes: bool, check: bool, engine: str, quiet: bool, identity_file: str | None) -> int:
    uri = target_uri(to)
    if len(ns_from) != len(ns_to):
        raise UsageError("--ns-from and --ns-to pair up: give each the same number of times")
    storage = open_storage(cfg.storage)
    cancel = CancelToken()
    try:
        plan_config, name = _resolve(storage, cfg, backup, latest, plan)
        identities = _identities(identity_file, plan_config)
        binary = shutil.which("mongorestore") if engine in ("auto", "mongorestore") else None
        if engine == "mongorestore" and not binary:
            raise UsageError("--engine mongorestore: mongorestore is not on PATH")
        if not dry_run and not yes:
            # The archive's prelude names every namespace: no need to read the whole backup to ask.
            targets = restoring.restore_targets(storage, name, ns_include=ns_include, ns_from=ns_from,
                                                ns_to=ns_to, identities=identities)
            busy = _non_empty_targets(uri, targets)
            if drop or busy:
                what = (f"drop and replace {len(targets)} collection(s)" if drop else
                        f"restore into {len(busy)} non-empty collection(s) ({', '.join(busy[:3])}...)")
                if not _confirm(f"This will {what} at {mask_uri(uri)}. Continue?"):
                    raise UsageError(f"refusing to {what} without confirmation: pass --yes")
        if sys.stderr.isatty() and not quiet:
            with ReadProgressLine(_read_total(storage.stat(name), decrypted=True)) as line:
                report = restoring.restore(storage, name, target_uri=uri, ns_include=ns_include,
                                           ns_from=ns_from, ns_to=ns_to, drop=drop, dry_run=dry_run,
                                           mongorestore=binary, check=check, identities=identities,
                                           cancel=cancel, on_read=line.add)
                line.finish()
        else:
            report = restoring.restore(storage, name, target_uri=uri, ns_include=ns_include, ns_from=ns_from,
                                       ns_to=ns_to, drop=drop, dry_run=dry_run, mongorestore=binary,
                                       check=check, identities=identities, cancel=cancel)
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


@click.command("prune", context_settings=CONTEXT_SETTINGS, short_help="apply the retention policy",
               help="Apply each plan's retention policy now, printing what it keeps and deletes and why.")
@click.option("--plan", metavar="NAME", help="only this plan [default: every plan]")
@click.option("--dry-run", is_flag=True, help="show what would be deleted, delete nothing")
@with_config
def prune(cfg: Config, plan: str | None, dry_run: bool) -> int:
    storage = open_storage(cfg.storage)
    try:
        for p in selected_plans(cfg, plan):
            if p.retention.is_empty:
                print(f"plan {p.name}: no retention policy: everything is kept")
                continue
            report = prune_plan(storage, p, None, dry_run=dry_run)
            verb = "would delete" if dry_run else "deleted"
            print(f"plan {p.name} ({p.retention.describe()}): keep {len(report.kept)} "
                  f"({human_bytes(report.kept_bytes)}), {verb} {len(report.deleted)} "
                  f"({human_bytes(report.deleted_bytes)})")
            for b in report.kept:
                print(f"  keep    {b.name}  ({', '.join(b.reasons)})")
            for b in report.deleted:
                print(f"  {'would delete' if dry_run else 'delete':7} {b.name}  ({', '.join(b.reasons)})")
    finally:
        storage.close()
    return 0
